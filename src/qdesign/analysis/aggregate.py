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

from ..core.errors import TableError
from ..core.io import produced_by_pipeline
from ..core.precision import is_float_bits
from .ecr import best_under_budget, budget_grid, effective_compression_ratio, pareto_front
from .tables import FLOAT_METHOD, MEMORY_COLUMNS, flagged, flagged_note, with_method

CELL_KEYS = ["study", "model", "depth", "method", "width", "n_weights", "bits"]


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


INFORMATIVE_RATIO = 2.0
"""A read-off ECR says something only where it is no bound and its seed
bootstrap interval spans at most this factor (hi / lo); where the float curve
is flat, a small change of error moves it by more, and it is reported as
uninformative instead of as a number."""


def readoff_informative(ecr: pd.DataFrame) -> pd.Series:
    """Whether each row's read-off ECR is informative (see :data:`INFORMATIVE_RATIO`);
    without bootstrap columns, whether it is no bound."""
    no_bound = ecr["ecr_bound"].isna() if "ecr_bound" in ecr.columns else pd.Series(True, index=ecr.index)
    if {"ecr_lo", "ecr_hi"} <= set(ecr.columns):
        ratio = ecr["ecr_hi"] / ecr["ecr_lo"]
        narrow = ratio.le(INFORMATIVE_RATIO) | ratio.isna()
        return no_bound & narrow
    return no_bound


def ecr_table(
    summary: pd.DataFrame, reference_bits: int = 32, memory: str = "weights", n_boot: int = 200
) -> pd.DataFrame:
    """ECR per seed-averaged (width, bits, method) cell, with its memory, direct
    error and a bootstrap interval over seeds (``ecr_lo``, ``ecr_hi``; NaN with
    one seed), computed per method against the same float curve."""
    from .bootstrap import readoff_ecr_intervals  # noqa: PLC0415 - scikit-learn loads on demand

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
            b = b[~is_float_bits(b["bits"])].assign(method=method)
            bands.append(b)
    if bands:
        ecr = ecr.merge(pd.concat(bands), on=["width", "bits", "method"], how="left", validate="one_to_one")
    else:
        ecr["ecr_lo"] = ecr["ecr_hi"] = np.nan
    ecr["readoff_informative"] = readoff_informative(ecr).to_numpy(bool)
    return ecr


def frontier_table(summary: pd.DataFrame, memory: str = "weights", n_budgets: int = 25) -> pd.DataFrame:
    """Pareto set and best cell per memory budget over seed-averaged cells,
    both chosen on *validation* error (``val_error``) and reported with their
    test error (``error``, ``error_std``): a choice never reads test error."""
    means = seed_means(summary, memory)
    cols = ["width", "bits", "method", "n_weights", "memory_bits", "val_error", "error", "error_std"]
    pareto = pareto_front(means, memory_col="memory_bits", error_col="val_error")[cols].assign(kind="pareto")
    pareto.insert(1, "budget_bits", np.nan)
    budgets = budget_grid(means["memory_bits"], n=n_budgets)
    best = best_under_budget(means[cols], budgets, memory_col="memory_bits", error_col="val_error")
    best = best.assign(kind="budget")
    out = pd.concat([pareto, best], ignore_index=True)
    out["memory"] = memory  # which memory the frontier was built on: "weights" or "total"
    return out[["kind", "budget_bits", *cols, "memory"]]


def aggregate(
    paths: Iterable[str | Path], reference_bits: int = 32, memory: str = "weights", n_budgets: int = 25
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(summary, ecr, frontier) tables of one study from its cell metrics files.
    The summary holds every cell; the ECR and the frontier only the cells that
    are not flagged (:func:`flagged`: at chance level or diverged), never
    silently: :func:`flagged_note` names them."""
    summary = read_cells(paths)
    usable = summary[~flagged(summary)]
    if not is_float_bits(usable["bits"]).any():
        raise TableError(f"every float cell is flagged, no float curve to build the ECR on: {flagged_note(summary)}")
    return (summary, ecr_table(usable, reference_bits, memory), frontier_table(usable, memory, n_budgets))
