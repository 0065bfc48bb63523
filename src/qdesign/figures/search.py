"""The adaptive search's progress: per budget, the design the search would
answer with after each round, against the training seconds spent so far
(search.parquet; :mod:`qdesign.analysis.search`). Torch-free."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.memory import format_bits
from .style import legend, log_x, maybe_log_y, note, require

__all__ = ["plot_search_progress"]


def _design(row) -> str:
    return f"w{int(row.width)} {'float' if int(row.bits) >= 32 else f'{int(row.bits)}b'}"


def plot_search_progress(search: pd.DataFrame, ax) -> None:
    """Seed-mean validation error (%) of each budget's answer, with one
    standard error over its measured seeds, at the cumulative training seconds
    of the round that chose it; the design is named where it changes."""
    require(search, ["round", "seconds", "budget_bits", "width", "bits", "val_error", "val_se", "stop"], "search")
    rows = search.dropna(subset=["width", "val_error"])
    if rows.empty:
        note(ax, "the search stopped before any budget had an answer")
        return
    colours = ax._get_lines.get_next_color
    for i, (budget, g) in enumerate(rows.groupby("budget_bits", sort=True)):
        g = g.sort_values("round")
        c = colours()
        y = 100 * g["val_error"].to_numpy(float)
        yerr = 100 * np.nan_to_num(g["val_se"].to_numpy(float))
        ax.errorbar(
            g["seconds"],
            y,
            yerr=yerr,
            color=c,
            marker="o",
            ms=3.5,
            lw=1.2,
            capsize=2,
            label=format_bits(budget).split("(")[-1].rstrip(")"),
        )
        last = None
        for r, yy in zip(g.itertuples(), y):
            name = _design(r)
            if name != last:
                ax.annotate(
                    name,
                    (r.seconds, yy),
                    textcoords="offset points",
                    xytext=(3, 4 + 8 * (i % 2)),
                    fontsize=6.5,
                    color=c,
                )
                last = name
    stop = search["stop"].dropna()
    end = float(search["seconds"].max())
    if not stop.empty:
        ax.axvline(end, color="0.5", ls="--", lw=0.8, label=f"stop: {stop.iloc[-1]}"[:60])
    log_x(ax, rows["seconds"])
    if not maybe_log_y(ax, 100 * rows["val_error"]):
        ax.set_ylim(bottom=0)
    ax.set_xlabel("Training seconds spent (cumulative train_seconds of the trained cells)")
    ax.set_ylabel("Validation error of the answer (%)")
    legend(ax, title="budget")
