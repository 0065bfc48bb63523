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
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import TableError
from ..core.precision import is_float_bits
from .recommend import recommendation_table
from .tables import MEMORY_COLUMNS

__all__ = ["MAX_BUDGETS", "answer_budgets", "closing_summary", "frontier_memory", "study_answer"]

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


def _short(method, width, bits) -> str:
    return f"width {int(width)}, " + ("float" if is_float_bits(bits) else f"{int(bits)} bits")


def closing_summary(studies) -> str:
    """What a finished run prints last, a few lines per study: how many networks
    its tables hold, the best trained design per budget (chosen on validation,
    test error ± SE) and where its answer page is. Studies whose tables are
    not there (a run that stopped early, another target) are skipped."""
    from ..core import layout  # noqa: PLC0415
    from .tables import read_table  # noqa: PLC0415

    lines = []
    for study in studies:
        paths = {t: Path(layout.table_file(study, t)) for t in ("summary", "frontier")}
        if not all(p.is_file() for p in paths.values()):
            continue
        summary, frontier = (read_table(p) for p in paths.values())
        answer = study_answer(summary, frontier, None)  # the trained answer: the law's is on the page
        first = summary.iloc[0]
        widths = sorted(int(w) for w in summary["width"].unique())
        lines.append(
            f"qdesign: {study}: {len(summary)} trained networks ({str(first.get('model', '')).upper()} on "
            f"{first.get('dataset', '')}, widths {widths[0]}-{widths[-1]}); best design per "
            f"{'weight' if frontier_memory(frontier) == 'weights' else 'total'}-memory budget, chosen on validation, "
            "test error ± SE over seeds:"
        )
        picks = [
            f"{r.budget_bits / KIB:g} KiB: {_short(r.trained_method, r.trained_width, r.trained_bits)}, "
            f"{100 * r.trained_test_error:.2f} ± {100 * r.trained_test_se:.2f}%"
            for r in answer.itertuples()
            if "trained_width" in answer.columns and pd.notna(r.trained_width)
        ]
        for i in range(0, len(picks), 3):
            lines.append("    " + "; ".join(picks[i : i + 3]))
        lines.append(f"    the answer and the law: {layout.report_page(study, 'answer')}")
    if lines:
        lines.append("qdesign: every figure and page in one file: snakemake --report report.html")
    return "\n".join(lines)
