"""Per-study tables from the per-cell metrics: summary, ECR and frontier.

* ``summary``: every cell's metrics row (one per trained network and seed).
* ``ecr``: one row per (width, bits), averaged over seeds, with the effective
  compression ratio (see :func:`qdesign.analysis.ecr.effective_compression_ratio`).
* ``frontier``: long format, ``kind`` = "pareto" (the seed-averaged cells no
  other cell beats on both memory and error) or "budget" (for each memory
  budget, the best cell that fits).

No torch: this runs where only the tables are (figure regeneration).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS
from ..core.errors import TableError
from ..core.io import produced_by_pipeline
from ..core.registry import DEFAULT_METHOD
from .ecr import best_under_budget, budget_grid, effective_compression_ratio, pareto_front

CELL_KEYS = ["study", "model", "depth", "method", "width", "n_weights", "bits"]
FLOAT_METHOD = "float"  # the ``method`` of float rows in the tables (they are not retrained)
MEMORY_COLUMNS = {"weights": "memory_bits_weights", "total": "memory_bits_total"}


def read_parquets(paths: Iterable[str | Path], what: str = "cell metrics") -> pd.DataFrame:
    """Concatenate Parquet files; an unreadable one (or none) is a one-line TableError."""
    frames = []
    for p in paths:
        try:
            frames.append(pd.read_parquet(p))
        except Exception as exc:
            advice = "delete it and rerun" if produced_by_pipeline(p) else "check that this is the right file"
            raise TableError(f"cannot read {what} {p} ({type(exc).__name__}); {advice}") from None
    if not frames:
        raise TableError(f"no {what} to aggregate")
    return pd.concat(frames, ignore_index=True)


def read_cells(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-cell metrics files, sorted by width, bits and seed."""
    df = read_parquets(paths)
    if df["study"].nunique() != 1:
        raise TableError(f"cells of several studies given: {sorted(df['study'].unique())}")
    dupes = df.duplicated([c for c in ("width", "bits", "method", "seed") if c in df.columns])
    if dupes.any():
        raise TableError(f"duplicate cells: {df.loc[dupes, ['width', 'bits', 'seed']].to_dict('records')[:3]}")
    df = with_method(df)
    return df.sort_values(["width", "bits", "method", "seed"], kind="stable").reset_index(drop=True)


def with_method(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with a filled ``method`` column: float rows FLOAT_METHOD,
    quantized rows of tables written before methods were an axis DEFAULT_METHOD."""
    df = summary.copy()
    if "method" not in df.columns:
        df["method"] = None
    is_float = df["bits"] >= FLOAT_BITS
    df["method"] = df["method"].where(df["method"].notna(), np.where(is_float, FLOAT_METHOD, DEFAULT_METHOD))
    return df


def seed_means(summary: pd.DataFrame, memory: str = "weights") -> pd.DataFrame:
    """Mean (and std) over seeds of the error columns, per (width, bits) cell."""
    mem_col = MEMORY_COLUMNS[memory]
    summary = with_method(summary)
    g = summary.groupby(CELL_KEYS, sort=False)
    out = g.agg(
        error=("test_error", "mean"),
        error_std=("test_error", "std"),
        n_seeds=("seed", "count"),
        val_error=("val_error", "mean"),
        direct_error=("direct_test_error", "mean"),
        direct_error_std=("direct_test_error", "std"),
        memory_bits=(mem_col, "mean"),
        memory_bits_weights=("memory_bits_weights", "mean"),
        memory_bits_total=("memory_bits_total", "mean"),
    ).reset_index()
    if "chance_level" in summary.columns:  # tables written before the flag existed lack it
        flags = summary["chance_level"].astype("boolean").fillna(False).astype(bool)
        out["chance_level"] = flags.groupby([summary[k] for k in CELL_KEYS], sort=False).any().to_numpy()
    return out


def ecr_table(
    summary: pd.DataFrame, reference_bits: int = 32, memory: str = "weights", n_boot: int = 200
) -> pd.DataFrame:
    """ECR per seed-averaged (width, bits, method) cell, with its memory, direct
    error and a bootstrap interval over seeds (``ecr_lo``, ``ecr_hi``; NaN with
    one seed), computed per method against the same float curve."""
    from .scaling import readoff_ecr_intervals  # noqa: PLC0415 - scipy loads on demand

    summary = with_method(summary)
    cells = summary[CELL_KEYS + ["seed"]].assign(error=summary["test_error"])
    ecr = effective_compression_ratio(cells, reference_bits=reference_bits, average_seeds=True)
    extra = seed_means(summary, memory).drop(columns=["error", "error_std", "n_seeds"])
    ecr = ecr.merge(extra, on=CELL_KEYS, how="left", validate="one_to_one")
    bands = []
    if n_boot and summary["seed"].nunique() > 1:
        is_float = summary["method"] == FLOAT_METHOD
        for method in sorted(summary.loc[~is_float, "method"].unique()):
            rows = summary[is_float | (summary["method"] == method)]
            b = readoff_ecr_intervals(rows, n_boot=n_boot, reference_bits=reference_bits)
            b = b[b["bits"] < FLOAT_BITS].assign(method=method)
            bands.append(b)
    if bands:
        ecr = ecr.merge(pd.concat(bands), on=["width", "bits", "method"], how="left", validate="one_to_one")
    else:
        ecr["ecr_lo"] = ecr["ecr_hi"] = np.nan
    return ecr


def frontier_table(summary: pd.DataFrame, memory: str = "weights", n_budgets: int = 25) -> pd.DataFrame:
    """Pareto set and best cell per memory budget, over seed-averaged cells."""
    means = seed_means(summary, memory)
    cols = ["width", "bits", "method", "n_weights", "memory_bits", "error", "error_std"]
    pareto = pareto_front(means, memory_col="memory_bits", error_col="error")[cols].assign(kind="pareto")
    pareto.insert(1, "budget_bits", np.nan)
    budgets = budget_grid(means["memory_bits"], n=n_budgets)
    best = best_under_budget(means[cols], budgets, memory_col="memory_bits", error_col="error")
    best = best.assign(kind="budget")
    out = pd.concat([pareto, best], ignore_index=True)
    out["memory"] = memory  # which memory the frontier was built on: "weights" or "total"
    return out[["kind", "budget_bits", *cols, "memory"]]


FLAG_COLUMNS = {"chance_level": "at chance level", "diverged": "diverged"}
"""Columns of a cell's row that say it is no result (qdesign.nn.cells): such cells
stay in the summary, flagged, and are kept out of the ECR and the frontier."""


def flagged(table: pd.DataFrame) -> pd.Series:
    """Per row: whether any flag of :data:`FLAG_COLUMNS` is set (a missing column
    or value: not flagged, as in tables written before the flag existed)."""
    out = pd.Series(False, index=table.index)
    for col in FLAG_COLUMNS:
        if col in table.columns:
            out |= table[col].astype("boolean").fillna(False).astype(bool)
    return out


def flagged_note(table: pd.DataFrame, limit: int = 6) -> str | None:
    """One line naming the flagged cells of a summary (None when there are none)."""
    rows = with_method(table)[flagged(table)] if len(table) else table
    if not len(rows):
        return None
    kinds = [
        f"{int(rows[c].astype('boolean').fillna(False).sum())} {what}" for c, what in FLAG_COLUMNS.items() if c in rows
    ]
    names = [
        f"w{int(r.width)} {'float' if r.bits >= FLOAT_BITS else f'{int(r.bits)}-bit {r.method}'} s{int(r.seed)}"
        for r in rows.itertuples()
    ]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    study = f"{rows['study'].iloc[0]}: " if "study" in rows else ""
    return (
        f"{study}{len(rows)} of {len(table)} cells flagged ({', '.join(k for k in kinds if not k.startswith('0 '))}) "
        f"and kept out of the ECR and the frontier: {', '.join(names[:limit])}{more}"
    )


def aggregate(
    paths: Iterable[str | Path], reference_bits: int = 32, memory: str = "weights", n_budgets: int = 25
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary, ecr, frontier) tables of one study from its cell metrics files.
    The summary holds every cell; the ECR and the frontier only the cells that
    are not flagged (:func:`flagged`: at chance level or diverged), never
    silently: :func:`flagged_note` names them."""
    summary = read_cells(paths)
    usable = summary[~flagged(summary)]
    if not (usable["bits"] >= FLOAT_BITS).any():
        raise TableError(f"every float cell is flagged, no float curve to build the ECR on: {flagged_note(summary)}")
    return (summary, ecr_table(usable, reference_bits, memory), frontier_table(usable, memory, n_budgets))
