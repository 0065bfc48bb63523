"""Shipping a finished study's tables as reference results (no checkpoints).

``reference/<profile>/`` holds, per study, the summary, ECR, frontier and
scaling tables (and the mixed-precision tables of a study with ``mixed``),
plus the exact config that produced them, its SHA-256, and a provenance
record. `snakemake reference` redraws every figure from them.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from pathlib import Path

from ..core.provenance import git_commit
from ..core.registry import (  # one definition of the table names
    MIXED_TABLES,
    RECOMMEND_TABLES,
    SEARCH_CELLS_TABLE,
    SEARCH_TABLE,
    TABLES,
)
from ..nn.numerics import numeric_platform


def search_cells(cfg: dict, study: str, results_dir: Path):
    """The metrics rows of every cell a finished search of ``study`` trained
    (each round's batch and the float networks under them), read from
    ``results_dir``; a round file or a cell that is missing is one line."""
    import pandas as pd  # noqa: PLC0415

    from ..analysis.search import cells_of, check_rounds, grid_from_study, initial_cells  # noqa: PLC0415
    from ..core.constants import FLOAT_BITS  # noqa: PLC0415
    from ..core.errors import TableError  # noqa: PLC0415
    from ..core.layout import RESULTS, search_round_file  # noqa: PLC0415
    from ..core.precision import Precision  # noqa: PLC0415
    from ..core.specs import Cell  # noqa: PLC0415

    def here(path: str) -> Path:  # a layout path under this results folder
        return results_dir / Path(path).relative_to(RESULTS)

    rounds, r = [], 0
    while here(search_round_file(study, r)).is_file():
        rounds.append(json.loads(here(search_round_file(study, r)).read_text()))
        r += 1
    if not rounds:
        raise TableError(f"{study}: no search rounds under {results_dir} (run the search first)")
    check_rounds(rounds)
    if rounds[-1].get("stop") is None:
        raise TableError(f"{study}: the search has not stopped (round {len(rounds) - 1} asks for more cells)")
    grid, settings = grid_from_study(cfg, study)
    # rounds planned under other search settings than the config's: the first round's cells and the
    # budgets answered are what the settings fix (an edit of the stopping rule alone is not seen here)
    first = [list(c) for c in initial_cells(grid, settings)]
    budgets = sorted(float(b) for b in settings.budgets)
    answered = sorted(float(a["budget_bits"]) for a in rounds[-1]["answers"])
    if rounds[0]["batch"] != first or (answered and answered != budgets):
        raise TableError(
            f"{study}: the search rounds under {results_dir} were planned under other search settings "
            "than the config's (first round's cells or budgets differ): rerun the search before exporting"
        )
    cells: dict[Cell, None] = {}
    for width, bits, seed in cells_of(rounds):
        cells.setdefault(Cell(study, width, seed, Precision.float_()), None)
        if bits < FLOAT_BITS:  # a float network's own entry in a batch has bits 32
            cells.setdefault(Cell(study, width, seed, Precision.uniform(bits), grid.method), None)
    missing = [c.dir for c in cells if not (here(c.dir) / "metrics.parquet").is_file()]
    if missing:
        raise TableError(f"{study}: searched cell(s) not finished: {', '.join(missing[:3])}")
    rows = []
    for c in cells:
        row = pd.read_parquet(here(c.dir) / "metrics.parquet")
        if set(row["config_hash"]) != {c.spec(cfg).key}:
            raise TableError(
                f"{study}: {c.dir} was trained under other settings than the config's "
                "(its spec key differs): rerun the search before exporting"
            )
        rows.append(row)
    return pd.concat(rows, ignore_index=True)


def check_grid_summary(cfg: dict, study: str, summary) -> None:
    """``summary`` (a grid study's ``summary.parquet``) holds exactly the cells
    of ``study`` in ``cfg``, each trained under the config's settings (its
    ``config_hash`` is the key of the cell's spec): a table aggregated before
    the config was edited, and not rebuilt since, is refused in one line."""
    from ..core.errors import TableError  # noqa: PLC0415
    from ..core.specs import study_cells  # noqa: PLC0415

    if "config_hash" not in summary.columns:
        raise TableError(f"{study}: summary.parquet has no config_hash column (an old table): rerun the study")
    expected = {c.spec(cfg).key for c in study_cells(cfg, study)}
    got = set(summary["config_hash"])
    if got != expected:
        raise TableError(
            f"{study}: summary.parquet does not match the config ({len(got - expected)} of its cell(s) "
            f"trained under other settings, {len(expected - got)} of the config's cell(s) not in it): "
            "rerun the study before exporting"
        )


def export_reference(
    config_path: str | Path,
    results_dir: str | Path,
    out_dir: str | Path,
    wall_seconds: float | None = None,
    note: str | None = None,
) -> list[Path]:
    """Copy the tables of every study of ``config_path`` from ``results_dir``
    into ``out_dir`` with the config, its hash and provenance."""
    import pandas as pd  # noqa: PLC0415

    from .. import __version__  # noqa: PLC0415
    from ..core.config import load_config  # noqa: PLC0415

    config_path, results_dir, out_dir = Path(config_path), Path(results_dir), Path(out_dir)
    cfg = load_config(config_path)
    searched = [s for s in cfg["studies"] if cfg["studies"][s].get("search")]
    tables = {
        s: (SEARCH_TABLE,)
        if s in searched
        else TABLES
        + (MIXED_TABLES if cfg["studies"][s].get("mixed") else ())
        + (RECOMMEND_TABLES if cfg["studies"][s]["recommend"]["budgets"] else ())
        for s in cfg["studies"]
    }
    missing = [
        results_dir / s / f"{t}.parquet"
        for s in cfg["studies"]
        for t in tables[s]
        if not (results_dir / s / f"{t}.parquet").is_file()
    ]
    if missing:
        from ..core.errors import TableError  # noqa: PLC0415

        raise TableError(f"study tables missing (run the study first): {', '.join(map(str, missing[:3]))}")
    # every table checked against the config before anything is written
    # a search's rows are the cells its rounds trained, a grid's its summary
    summaries = {
        s: search_cells(cfg, s, results_dir) if s in searched else pd.read_parquet(results_dir / s / "summary.parquet")
        for s in cfg["studies"]
    }
    for study in cfg["studies"]:
        if study not in searched:
            check_grid_summary(cfg, study, summaries[study])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    studies = {}
    for study in cfg["studies"]:
        (out_dir / study).mkdir(exist_ok=True)
        for table in tables[study]:
            dest = out_dir / study / f"{table}.parquet"
            shutil.copyfile(results_dir / study / f"{table}.parquet", dest)
            written.append(dest)
        summary = summaries[study]
        if study in searched:  # the cells its rounds trained, not a grid's summary
            dest = out_dir / study / f"{SEARCH_CELLS_TABLE}.parquet"
            summary.to_parquet(dest, index=False)
            written.append(dest)
        studies[study] = {
            "cells": int(len(summary)),
            "job_seconds_total": round(float(summary["job_seconds"].sum()), 1),
            "torch_version": sorted(summary["torch_version"].unique().tolist()),
            "qdesign_version": sorted(summary["qdesign_version"].unique().tolist()),
            "devices": sorted(summary["device"].unique().tolist()),
        }
        if "mixed" in tables[study]:
            mixed = pd.read_parquet(out_dir / study / "mixed.parquet")
            studies[study]["mixed_cells"] = int(len(mixed))
            studies[study]["mixed_job_seconds_total"] = round(float(mixed["job_seconds"].sum()), 1)
    raw = config_path.read_bytes()
    shutil.copyfile(config_path, out_dir / "config.yaml")
    (out_dir / "config.sha256").write_text(f"{hashlib.sha256(raw).hexdigest()}  config.yaml\n")
    provenance = {
        "config": str(config_path),
        "config_sha256": hashlib.sha256(raw).hexdigest(),
        "qdesign_version": __version__,
        "git_commit": git_commit(config_path.resolve().parent),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        # what the last bits depend on (qdesign.nn.numerics): a rerun reproduces the
        # tables bit for bit where this agrees (the machine that exported them)
        "numeric_platform": numeric_platform(),
        "wall_seconds": wall_seconds,
        "note": note,
        "studies": studies,
    }
    (out_dir / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return written + [out_dir / "config.yaml", out_dir / "config.sha256", out_dir / "provenance.json"]
