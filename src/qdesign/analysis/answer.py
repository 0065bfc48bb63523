"""A study's answer: the best design at a few memory budgets, chosen on
validation data and reported with test data (the report's first page and the
summary printed at the end of a run).

The budgets follow one rule, :func:`answer_budgets`: powers of two in KiB
between the smallest and the largest trained design's memory, thinned to at
most :data:`MAX_BUDGETS` by taking every second, fourth, ... power, so that
a reader sees round sizes (1, 4, 16, 64 KiB) spread over the whole range. Per
budget, :func:`qdesign.analysis.recommend.recommendation_table` names the best
trained cell and the law's design. Torch-free.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.errors import TableError
from .recommend import recommendation_table
from .tables import MEMORY_COLUMNS

__all__ = ["MAX_BUDGETS", "answer_budgets", "frontier_memory", "study_answer"]

MAX_BUDGETS = 6
"""At most this many budgets on the answer page and in the end-of-run summary."""

KIB = 8 * 1024  # bits per KiB


def frontier_memory(frontier: pd.DataFrame) -> str:
    """Which memory the study's frontier (and so its answer) counts: "weights" or "total"."""
    if "memory" in frontier.columns and frontier["memory"].notna().any():
        memory = str(frontier["memory"].dropna().iloc[0])
        if memory in MEMORY_COLUMNS:
            return memory
    return "weights"


def answer_budgets(summary: pd.DataFrame, memory: str = "weights", max_budgets: int = MAX_BUDGETS) -> np.ndarray:
    """Budgets in bits: powers of two KiB from the smallest trained design's
    memory up to the largest's, every 2**k-th power with the least k that
    leaves at most ``max_budgets``. A range that holds no power of two (a
    study of one size) gives its largest memory as the one budget."""
    column = MEMORY_COLUMNS[memory]
    if column not in summary.columns or summary.empty:
        raise TableError(f"the study's summary has no {column}: cannot choose budgets")
    kib = summary[column].to_numpy(float) / KIB
    lo, hi = float(np.nanmin(kib)), float(np.nanmax(kib))
    first, last = math.ceil(math.log2(lo) - 1e-9), math.floor(math.log2(hi) + 1e-9)
    if last < first:
        return np.array([hi * KIB])
    step = 1
    while (last - first) // step + 1 > max_budgets:
        step *= 2
    # anchored at the top, so the largest round budget (where most designs fit) is always shown
    exponents = np.arange(last, first - 1, -step)[::-1]
    return np.exp2(exponents.astype(float)) * KIB


def study_answer(summary: pd.DataFrame, frontier: pd.DataFrame, scaling: pd.DataFrame | None) -> pd.DataFrame:
    """One row per budget of :func:`answer_budgets` (see
    :func:`~qdesign.analysis.recommend.recommendation_table` for the columns),
    counted in the memory the study's frontier uses."""
    memory = frontier_memory(frontier)
    return recommendation_table(summary, scaling, answer_budgets(summary, memory), memory)
