"""Mixed-precision tables of a study: layer sensitivity, the mixed cells, and for
each memory budget the best uniform design against the best mixed one.

* ``sensitivity``: every float network's layer sensitivity rows
  (:mod:`qdesign.nn.sensitivity`), concatenated.
* ``mixed``: one row per mixed cell and seed (its ``pattern``, ``layer_bits``,
  budget, allocation and predicted cost next to the usual metrics).
* ``mixed_vs_uniform``: per retraining method and per budget (the weight
  memory of each seed-averaged uniform cell, the points where the uniform
  frontier has cells), the best uniform cell that fits (float networks
  included), the best mixed cell that fits, their difference and the seed
  spread, and which wins: ``mixed`` or ``uniform`` when the difference exceeds
  the larger of the two seed standard deviations, else ``tie``.

Mixed cells never enter summary, ecr or frontier: the uniform study's tables
stay exactly what they were. No torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import TableError
from .aggregate import read_parquets, seed_means
from .tables import FLOAT_METHOD, MEMORY_COLUMNS, flagged, with_method

MIXED_KEYS = ["study", "method", "width", "n_weights", "precision"]


def read_mixed_cells(paths: Iterable[str | Path]) -> pd.DataFrame:
    df = read_parquets(paths, "mixed cell metrics")
    if "precision" not in df.columns or df["precision"].isna().any():
        raise TableError("a cell given as mixed has no precision column (a uniform cell's metrics?)")
    if df["study"].nunique() != 1:
        raise TableError(f"mixed cells of several studies given: {sorted(df['study'].unique())}")
    dupes = df.duplicated(["width", "precision", "method", "seed"])
    if dupes.any():
        raise TableError(
            f"duplicate mixed cells: {df.loc[dupes, ['width', 'precision', 'seed']].to_dict('records')[:3]}"
        )
    return df.sort_values(["method", "width", "precision", "seed"], kind="stable").reset_index(drop=True)


def mixed_means(mixed: pd.DataFrame, memory: str = "weights") -> pd.DataFrame:
    """Mean and std over seeds per mixed design (method, width, precision);
    ``patterns`` lists the seeds' patterns (a budget may allocate differently per seed)."""
    g = mixed.groupby(MIXED_KEYS, sort=True)
    out = g.agg(
        error=("test_error", "mean"),
        error_std=("test_error", "std"),
        n_seeds=("seed", "count"),
        val_error=("val_error", "mean"),
        direct_error=("direct_test_error", "mean"),
        memory_bits=(MEMORY_COLUMNS[memory], "mean"),
        budget_mean_bits=("budget_mean_bits", "first"),
        allocation=("allocation", "first"),
        patterns=("pattern", lambda s: ",".join(sorted(set(s)))),
    ).reset_index()
    return out


def uniform_means(summary: pd.DataFrame, memory: str = "weights") -> pd.DataFrame:
    means = seed_means(with_method(summary), memory)
    return means.assign(precision=means["bits"].astype(int).astype(str))


def comparison_table(summary: pd.DataFrame, mixed: pd.DataFrame, memory: str = "weights") -> pd.DataFrame:
    """Best uniform vs best mixed design under each uniform cell's memory (see
    module doc); flagged cells (at chance level, diverged) are no candidates."""
    uni = uniform_means(summary[~flagged(summary)], memory)
    mix = mixed_means(mixed[~flagged(mixed)], memory)
    rows = []
    for method in sorted(mix["method"].unique()):
        u = uni[uni["method"].isin([method, FLOAT_METHOD])]
        m = mix[mix["method"] == method]
        budgets = np.unique(u.loc[u["method"] == method, "memory_bits"].to_numpy())
        for budget in budgets:
            # chosen on validation error, reported with test error
            bu = u[u["memory_bits"] <= budget].sort_values(["val_error", "memory_bits"], kind="stable")
            bm = m[m["memory_bits"] <= budget].sort_values(["val_error", "memory_bits"], kind="stable")
            best_u = bu.iloc[0]
            row = {
                "method": method,
                "budget_bits": float(budget),
                "uniform_width": int(best_u["width"]),
                "uniform_bits": int(best_u["bits"]),
                "uniform_memory_bits": float(best_u["memory_bits"]),
                "uniform_error": float(best_u["error"]),
                "uniform_std": float(best_u["error_std"]),
            }
            if bm.empty:
                row.update(
                    mixed_width=np.nan,
                    mixed_precision=None,
                    mixed_patterns=None,
                    mixed_memory_bits=np.nan,
                    mixed_error=np.nan,
                    mixed_std=np.nan,
                    difference=np.nan,
                    spread=np.nan,
                    winner="no mixed design fits",
                )
            else:
                best_m = bm.iloc[0]
                diff = float(best_m["error"]) - float(best_u["error"])
                spread = float(np.nanmax([best_u["error_std"], best_m["error_std"], 0.0]))
                winner = "mixed" if diff < -spread else "uniform" if diff > spread else "tie"
                row.update(
                    mixed_width=int(best_m["width"]),
                    mixed_precision=best_m["precision"],
                    mixed_patterns=best_m["patterns"],
                    mixed_memory_bits=float(best_m["memory_bits"]),
                    mixed_error=float(best_m["error"]),
                    mixed_std=float(best_m["error_std"]),
                    difference=diff,
                    spread=spread,
                    winner=winner,
                )
            rows.append(row)
    out = pd.DataFrame(rows)
    out["memory"] = memory
    return out


def aggregate_mixed(
    summary_path: str | Path,
    cell_paths: Iterable[str | Path],
    sensitivity_paths: Iterable[str | Path],
    memory: str = "weights",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(sensitivity, mixed, mixed_vs_uniform) tables of one study."""
    summary = read_parquets([summary_path], "summary")
    sens = read_parquets(sensitivity_paths, "sensitivity table")
    sens = sens.sort_values(["width", "seed", "layer", "bits"], kind="stable").reset_index(drop=True)
    mixed = read_mixed_cells(cell_paths)
    if set(mixed["study"]) != set(summary["study"]):
        raise TableError(f"mixed cells of {sorted(set(mixed['study']))} given with the summary of another study")
    return sens, mixed, comparison_table(summary, mixed, memory)
