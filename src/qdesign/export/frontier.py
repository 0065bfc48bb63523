"""Export the Pareto-frontier cells of a study, each verified, with a manifest.

For every Pareto cell (width, bits, method) of ``frontier.parquet`` one
seed's network is exported as packed weights and as ONNX, named
``{method}-w{width}-b{bits}-s{seed}`` (float cells: ``float-w{width}-s{seed}``),
and each file is run on the raw test pixels before it is moved into place: it
must reproduce the cell's recorded test error, PyTorch's predictions and the
recorded memory. Which seed: :func:`choose_seed` (``export_seed`` in the
config, ``--seed`` on the command line). ``manifest.parquet`` lists every file
with its method, seed, the reason for that seed, sizes and errors; it is
written last, so its presence means every check passed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..core.constants import FLOAT_BITS
from ..core.errors import ExportError, TableError
from ..core.layout import RESULTS, cell_dir
from ..core.registry import DEFAULT_METHOD
from . import SUFFIXES

BEST_VAL = "best_val"
SEED_RULES = (BEST_VAL,)
"""The named seed rules; an integer seed is the other choice."""
MANIFEST = "manifest.parquet"


def parse_seed_rule(text) -> str | int:
    """``best_val`` or a seed number (>= 0), from the config or the command line."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    if isinstance(text, str):
        if text in SEED_RULES:
            return text
        if text.isdigit():
            return int(text)
    raise ExportError(f"export seed {text!r}: give {' or '.join(SEED_RULES)} or a seed number (an integer >= 0)")


def choose_seed(rows, rule: str | int, what: str):
    """The summary row to export among the seeds ``rows`` of one cell, and why.

    ``best_val`` (the default): the seed with the lowest validation error (ties:
    the lowest seed): the choice is made on validation data, never on the test
    error the manifest reports. An integer: that seed.
    """
    seeds = sorted(int(s) for s in rows["seed"])
    if rule == BEST_VAL:
        finite = rows[rows["val_error"].map(lambda v: v is not None and math.isfinite(float(v)))]
        if finite.empty:
            raise TableError(f"{what}: no seed has a validation error; choose one with --seed N (export_seed: N)")
        row = finite.sort_values(["val_error", "seed"], kind="stable").iloc[0]
        if len(rows) == 1:
            return row, f"the only seed (validation error {row['val_error']:.4f})"
        errs = ", ".join(f"s{int(r.seed)} {r.val_error:.4f}" for r in rows.sort_values("seed").itertuples())
        return row, f"lowest validation error of {len(rows)} seeds ({errs})"
    picked = rows[rows["seed"] == int(rule)]
    if picked.empty:
        raise TableError(f"{what} has no seed {rule} (seeds: {', '.join(map(str, seeds))}); choose another seed")
    return picked.iloc[0], f"seed {rule} chosen by the export_seed setting"


def frontier_cells(study_dir: str | Path, seed_rule: str | int = BEST_VAL):
    """(cell folder, summary row, method, reason, frontier row) of the Pareto
    cells of a study, one seed each (:func:`choose_seed`)."""
    import pandas as pd  # noqa: PLC0415

    from ..analysis.tables import FLOAT_METHOD, with_method  # noqa: PLC0415

    study_dir = Path(study_dir)
    try:
        frontier = pd.read_parquet(study_dir / "frontier.parquet")
        summary = with_method(pd.read_parquet(study_dir / "summary.parquet"))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise TableError(f"cannot read the tables of {study_dir} ({type(exc).__name__}); run the study first") from None
    missing = [c for c in ("kind", "width", "bits") if c not in frontier.columns]
    missing += [c for c in ("study", "width", "bits", "seed", "val_error") if c not in summary.columns]
    if missing:
        raise TableError(f"{study_dir}: the tables lack columns {', '.join(missing)}; rerun the study's aggregate job")
    pareto = frontier[frontier["kind"] == "pareto"]
    results_root = study_dir.parent
    out = []
    for r in pareto.itertuples():
        method = getattr(r, "method", None)
        if not isinstance(method, str):  # a frontier table written before methods were an axis
            method = FLOAT_METHOD if int(r.bits) >= FLOAT_BITS else DEFAULT_METHOD
        rows = summary[(summary["width"] == r.width) & (summary["bits"] == r.bits) & (summary["method"] == method)]
        what = f"{study_dir}: frontier cell {method} width {r.width} bits {r.bits}"
        if rows.empty:
            raise TableError(f"{what} has no row in summary.parquet; rerun the study's aggregate job")
        row, reason = choose_seed(rows, seed_rule, what)
        rel = cell_dir(row["study"], int(row["width"]), int(row["bits"]), int(row["seed"]), method)
        out.append((results_root / Path(rel).relative_to(RESULTS), row, method, reason, r))
    return out


def export_name(method: str, width: int, bits: int, seed: int, suffix: str) -> str:
    """File name of one exported cell: the method is part of it, so two methods'
    networks of the same width and bits never share a name."""
    if int(bits) >= FLOAT_BITS:
        return f"float-w{int(width)}-s{int(seed)}{suffix}"
    return f"{method}-w{int(width)}-b{int(bits)}-s{int(seed)}{suffix}"


def export_frontier(
    study_dir: str | Path,
    data_path: str | Path,
    out_dir: str | Path,
    seed_rule: str | int = BEST_VAL,
    force: bool = False,
) -> list[str]:
    """Export and verify every Pareto cell; returns one log line per file.

    Every target is checked before the first export (:func:`qdesign.export.target.check_target`:
    an existing file only with ``force``, never an input or a non-regular
    file). If an export fails, the files this run wrote are removed again and
    no manifest is written.
    """
    import pandas as pd  # noqa: PLC0415

    from . import export_verified  # noqa: PLC0415
    from .target import check_target, write_target  # noqa: PLC0415

    out_dir, study_dir = Path(out_dir), Path(study_dir)
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise ExportError(f"--out-dir {out_dir} exists and is not a folder")
    seed_rule = parse_seed_rule(seed_rule)
    cells = frontier_cells(study_dir, seed_rule)
    plan = []
    for cdir, row, method, reason, frow in cells:
        for fmt, suffix in SUFFIXES.items():
            name = export_name(method, row["width"], row["bits"], row["seed"], suffix)
            plan.append((name, fmt, cdir, row, method, reason, frow))
    names = [p[0] for p in plan]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TableError(f"{study_dir}/frontier.parquet lists a cell twice ({dupes[0]}); rerun its aggregate job")
    inputs = [study_dir / "frontier.parquet", study_dir / "summary.parquet", Path(data_path)]
    inputs += [c / f for c, *_ in cells for f in ("model.pt", "metrics.parquet")]
    for name in [*names, MANIFEST]:
        check_target(out_dir / name, inputs, force)  # every target, before any work
    lines, records, written = [], [], []
    try:
        for name, fmt, cdir, row, method, reason, frow in plan:
            check = export_verified(cdir, fmt, out_dir / name, data_path, force=force)
            written.append(out_dir / name)
            records.append(
                {
                    "file": name,
                    "format": fmt,
                    "method": method,
                    "cell": str(cdir),
                    "width": int(row["width"]),
                    "bits": int(row["bits"]),
                    "seed": int(row["seed"]),
                    "seed_rule": str(seed_rule),
                    "seed_reason": reason,
                    "val_error": float(row["val_error"]),
                    "frontier_error": float(frow.error) if hasattr(frow, "error") else float("nan"),
                    "bytes": check.file_bytes,
                    "expected_bytes": check.expected_bytes,
                    "memory_bits_total": check.memory_bits_total,
                    "memory_bits_file": check.memory_bits_file,
                    "recorded_error": check.recorded_error,
                    "export_error": check.export_error,
                    "n_differ": check.n_differ,
                    "n_test": check.n_test,
                    "input_mean": check.mean,
                    "input_std": check.std,
                }
            )
            lines.append(
                f"{name}: {check.file_bytes} bytes, test error {check.export_error:.4f} "
                f"(recorded {check.recorded_error:.4f}), {check.n_differ} predictions differ; seed {int(row['seed'])}: "
                f"{reason}"
            )
        manifest = pd.DataFrame(records)
        write_target(out_dir / MANIFEST, lambda tmp: manifest.to_parquet(tmp, index=False), inputs, force)
    except BaseException:
        for path in written:  # this run's own files: an incomplete export leaves none of them
            path.unlink(missing_ok=True)
        raise
    return lines
