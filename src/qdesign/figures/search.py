"""The adaptive search's progress: per budget, the design the search would
answer with after each round, against the training seconds spent so far
(search.parquet; :mod:`qdesign.analysis.search`). Torch-free."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.memory import format_bits
from .style import legend, log_x, maybe_log_y, note, require

__all__ = ["plot_search_progress", "search_html"]


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


def search_html(search: pd.DataFrame, study: str) -> str:
    """The search's page for the report: each budget's answer when it stopped
    (chosen on validation error, with the law's interval for its test error),
    and what every round had measured and asked for."""
    import html  # noqa: PLC0415

    from .report import html_page, html_table  # noqa: PLC0415 - the report's page and table style

    require(search, ["round", "cells", "seconds", "budget_bits", "width", "bits", "batch", "stop"], "search")
    last = search[search["round"] == search["round"].max()]
    answered = last.dropna(subset=["width"])
    answers = pd.DataFrame(
        {
            "budget (KiB)": answered["budget_bits"] / 8192,
            "design": [_design(r) for r in answered.itertuples()],
            "memory (KiB)": answered["memory_bits"] / 8192,
            "seeds measured": answered["n_seeds"].astype(int),
            "validation error (%)": 100 * answered["val_error"],
            "± SE (points)": 100 * answered["val_se"],
            "law: test error (%)": 100 * answered["predicted"],
            "interval low (%)": 100 * answered["lo"],
            "interval high (%)": 100 * answered["hi"],
            "expected regret (points)": 100 * answered["regret"],
            "threshold (points)": 100 * answered["threshold"],
        }
    )
    rounds = (
        search.groupby("round", sort=True)
        .agg(cells=("cells", "first"), seconds=("seconds", "first"), asked=("batch", "first"), stop=("stop", "first"))
        .reset_index()
        .rename(columns={"cells": "cells measured", "seconds": "training seconds", "asked": "cells asked for"})
    )
    stop = last["stop"].dropna()
    body = [
        f"<p class='lead'>Study <b>{html.escape(study)}</b>: {int(last['cells'].iloc[0])} cells trained in "
        f"{int(last['round'].iloc[0])} rounds ({float(last['seconds'].iloc[0]):,.0f} training seconds); stopped: "
        f"{html.escape(str(stop.iloc[0]) if len(stop) else 'not yet')}.</p>",
        html_table(
            answers,
            "Best design per budget when the search stopped",
            "Chosen on the seed-mean validation error of the measured designs that fit; the law's prediction "
            "and interval are for the mean test error of a new run of that design. Expected regret: validation "
            "error lost against the best design that fits, from the search's beliefs. See docs/search.md.",
        ),
        html_table(rounds, "Rounds", "Cells and training seconds measured when each round was planned."),
    ]
    return html_page(f"{study}: adaptive search", "".join(body))
