"""Export the Pareto-frontier cells of a study, each verified, with a manifest.

For every Pareto cell (width, bits, method) of ``frontier.parquet`` the
lowest-numbered seed's network is exported as packed weights and as ONNX, and
each file is run on the test set: it must reproduce the cell's recorded test
error and PyTorch's predictions, and the packed file must have the size the
memory model predicts. ``manifest.parquet`` lists every file with its sizes and
errors; it is written last, so its presence means every check passed.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import TableError
from ..core.layout import RESULTS, cell_dir
from . import SUFFIXES, export_cell


def frontier_cells(study_dir: str | Path):
    """(cell folder, row) of the Pareto cells of a study, one seed each."""
    import pandas as pd  # noqa: PLC0415

    study_dir = Path(study_dir)
    try:
        frontier = pd.read_parquet(study_dir / "frontier.parquet")
        summary = pd.read_parquet(study_dir / "summary.parquet")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise TableError(f"cannot read the tables of {study_dir} ({type(exc).__name__}); run the study first") from None
    pareto = frontier[frontier["kind"] == "pareto"]
    results_root = study_dir.parent
    out = []
    for r in pareto.itertuples():
        method = getattr(r, "method", None)
        rows = summary[(summary["width"] == r.width) & (summary["bits"] == r.bits)]
        if method is not None and "method" in summary.columns:
            rows = rows[rows["method"].fillna("float") == method]
        if rows.empty:
            raise TableError(f"{study_dir}: frontier cell width {r.width} bits {r.bits} has no row in summary.parquet")
        row = rows.sort_values("seed").iloc[0]
        m = row.get("method") if "method" in row.index and isinstance(row.get("method"), str) else "fixed"
        rel = cell_dir(row["study"], int(row["width"]), int(row["bits"]), int(row["seed"]), m)
        out.append((results_root / Path(rel).relative_to(RESULTS), row))
    return out


def export_frontier(study_dir: str | Path, data_path: str | Path, out_dir: str | Path) -> list[str]:
    """Export and verify every Pareto cell; returns one log line per file."""
    import pandas as pd  # noqa: PLC0415

    from ..core.io import parquet_write_atomic  # noqa: PLC0415
    from .verify import check_export  # noqa: PLC0415

    out_dir = Path(out_dir)
    lines, records = [], []
    for cdir, row in frontier_cells(study_dir):
        for fmt, suffix in SUFFIXES.items():
            name = f"w{int(row['width'])}-b{int(row['bits'])}-s{int(row['seed'])}{suffix}"
            path = export_cell(cdir, fmt, out_dir / name)
            check = check_export(cdir, path, data_path, fmt)
            records.append(
                {
                    "file": name,
                    "format": fmt,
                    "cell": str(cdir),
                    "width": int(row["width"]),
                    "bits": int(row["bits"]),
                    "seed": int(row["seed"]),
                    "bytes": check.file_bytes,
                    "expected_bytes": check.expected_bytes,
                    "memory_bits_total": check.memory_bits_total,
                    "recorded_error": check.recorded_error,
                    "export_error": check.export_error,
                    "n_differ": check.n_differ,
                    "n_test": check.n_test,
                }
            )
            lines.append(
                f"{name}: {check.file_bytes} bytes, test error {check.export_error:.4f} "
                f"(recorded {check.recorded_error:.4f}), {check.n_differ} predictions differ"
            )
    parquet_write_atomic(pd.DataFrame(records), out_dir / "manifest.parquet")
    return lines
