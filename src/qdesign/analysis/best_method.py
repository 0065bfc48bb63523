"""The best retraining method per (width, bits) cell of a study and its margin
over the next one: what a user of the study would pick, picked as they would
pick it (on validation error) and reported on test error.

No torch: this runs where only the tables are (figures, the report).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS
from ..core.errors import TableError
from ..core.registry import METHODS
from .aggregate import FLOAT_METHOD, with_method

GROUP_KEYS = ["study", "model", "depth", "width", "bits"]
COLUMNS = [
    *GROUP_KEYS,
    "n_methods",
    "method",
    "n_seeds",
    "val_error",
    "test_error",
    "runner_up",
    "runner_up_val_error",
    "runner_up_test_error",
    "margin_val",
    "margin_test",
    "margin_test_se",
]


def _order(method: str) -> int:
    """Ties on validation error go to the earlier method of the registry (``fixed`` first)."""
    return METHODS.index(method) if method in METHODS else len(METHODS)


def _paired_se(a: pd.Series, b: pd.Series) -> float:
    """Standard error of the mean of ``b - a`` over their common seeds (NaN below two)."""
    d = (b - a).dropna()
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def best_methods(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (width, bits) cell of a study's ``summary`` table: the retraining
    method with the lowest seed-mean validation error (``method``), its seed-mean
    validation and test error, the method with the next-lowest validation error
    (``runner_up``), and the margins ``runner_up - best`` (positive: the best is
    better) on validation and test error, the test margin with its standard
    error over the seeds both methods ran (paired: same float network). Float
    rows are left out; a cell with one method has no runner-up (missing, NaN margins).
    Errors are fractions, as in the summary."""
    need = {"width", "bits", "seed", "val_error", "test_error"}
    missing = sorted(need - set(summary.columns))
    if missing:
        raise TableError(f"summary table lacks column(s) {', '.join(missing)}")
    df = with_method(summary)
    df = df[(df["bits"] < FLOAT_BITS) & (df["method"] != FLOAT_METHOD)]
    keys = [k for k in GROUP_KEYS if k in df.columns]
    rows = []
    for cell, g in df.groupby(keys, sort=True):
        cell = dict(zip(keys, cell if isinstance(cell, tuple) else (cell,)))
        means = g.groupby("method").agg(
            val_error=("val_error", "mean"), test_error=("test_error", "mean"), n_seeds=("seed", "nunique")
        )
        ranked = sorted(means.index, key=lambda m: (means.at[m, "val_error"], _order(m)))
        best = ranked[0]
        row = {
            **cell,
            "n_methods": len(ranked),
            "method": best,
            "n_seeds": int(means.at[best, "n_seeds"]),
            "val_error": float(means.at[best, "val_error"]),
            "test_error": float(means.at[best, "test_error"]),
            "runner_up": None,
            "runner_up_val_error": np.nan,
            "runner_up_test_error": np.nan,
            "margin_val": np.nan,
            "margin_test": np.nan,
            "margin_test_se": np.nan,
        }
        if len(ranked) > 1:
            nxt = ranked[1]
            by_seed = g.pivot_table(index="seed", columns="method", values="test_error", aggfunc="mean")
            row.update(
                runner_up=nxt,
                runner_up_val_error=float(means.at[nxt, "val_error"]),
                runner_up_test_error=float(means.at[nxt, "test_error"]),
                margin_val=float(means.at[nxt, "val_error"] - means.at[best, "val_error"]),
                margin_test=float(means.at[nxt, "test_error"] - means.at[best, "test_error"]),
                margin_test_se=_paired_se(by_seed[best], by_seed[nxt]),
            )
        rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in COLUMNS if c in keys or c not in GROUP_KEYS])
    return out.reset_index(drop=True)
