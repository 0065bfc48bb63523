"""Figures of the scaling law: the fit over the measured cells, and ECR read off
beside the model's.

Each ``plot_*`` draws on a caller's Axes; colours and markers per bits come
from :func:`qdesign.figures.style.bits_styles`, so "4 bits" looks the same in
every figure. The law is rebuilt from the scaling table, never refitted here;
a table that says the law was not fitted (too few widths) is drawn as that
note (:func:`not_fitted_note`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..analysis.scaling import law_from_table
from ..core.constants import FLOAT_BITS
from ..core.precision import is_float_bits
from .style import bits_order, fmt_si, legend, plain_log_axis, require, styles_for, width_label

__all__ = ["is_fitted", "not_fitted_note", "plot_ecr_bands", "plot_scaling_fit"]


def is_fitted(scaling_df: pd.DataFrame) -> bool:
    """Whether a scaling table holds a fitted law (its ``param`` rows)."""
    return "kind" in scaling_df.columns and bool((scaling_df["kind"] == "param").any())


def not_fitted_note(scaling_df: pd.DataFrame, ax) -> None:
    """Draw, instead of a law, the reason the table gives for not fitting one."""
    note = scaling_df["note"].iloc[0] if "note" in scaling_df.columns and len(scaling_df) else "no fit"
    ax.text(
        0.5, 0.5, f"scaling law not fitted:\n{note}", transform=ax.transAxes, ha="center", va="center", color="0.35"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def plot_scaling_fit(
    summary: pd.DataFrame, scaling_df: pd.DataFrame, ax, styles: Mapping | None = None, band: bool = True
):
    """Measured seed means (error bar: standard error) and the fitted law per bits, error (%) vs weights.

    Shows where the joint law follows the data and where it does not; the
    shaded band is the bootstrap interval of the fitted curve.
    """
    require(summary, ("bits", "n_weights", "test_error"), "summary")
    law = law_from_table(scaling_df)
    s = summary.assign(bits=np.minimum(summary["bits"], FLOAT_BITS))
    stats = (
        s.groupby(["bits", "n_weights"])
        .agg(m=("test_error", "mean"), sd=("test_error", "std"), n=("test_error", "count"))
        .reset_index()
    )
    stats["se"] = (stats["sd"] / np.sqrt(stats["n"])).fillna(0.0)
    order = bits_order(stats["bits"])
    styles = styles_for(styles, order)
    lo, hi = law.n_range
    grid = np.geomspace(lo / 1.5, hi * 1.5, 120)
    for b in order:
        st = styles[b]
        pts = stats[stats["bits"] == b].sort_values("n_weights")
        ax.errorbar(
            pts["n_weights"],
            100 * pts["m"],
            yerr=100 * pts["se"],
            fmt=st["marker"],
            color=st["color"],
            ms=4,
            lw=0.8,
            capsize=1.5,
            label=st["label"],
            zorder=3 if is_float_bits(b) else 2,
        )
        ax.plot(grid, 100 * law.predict(grid, b), color=st["color"], lw=1.0, zorder=1)
        if band and law.boot:
            blo, bhi = law.predict_interval(grid, b)
            ax.fill_between(grid, 100 * blo, 100 * bhi, color=st["color"], alpha=0.12, lw=0, zorder=0)
    ax.axvspan(lo, hi, color="0.5", alpha=0.05, lw=0, zorder=-1)
    ax.set_xscale("log")
    if hi / lo < 100:  # short span: matplotlib would label colliding minor ticks
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(fmt_si))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("Number of weights")
    ax.set_ylabel("Test error (%)")
    g_txt = ", ".join(f"g({b})={law.g(b):.2f}" for b in order if not is_float_bits(b))
    ax.set_title(f"err = E + A (N g(b))^-α: E={100 * law.E:.2f}%, α={law.alpha:.2f}", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", lw=1.0))
    labels.append("fitted law")
    legend(ax, handles=handles, labels=labels, title="bits")
    ax.text(0.01, 0.01, g_txt, transform=ax.transAxes, fontsize=6.5, va="bottom", ha="left", color="0.3")
    return ax


def plot_ecr_bands(ecr_df: pd.DataFrame, scaling_df: pd.DataFrame, ax, styles: Mapping | None = None, bits=None):
    """ECR vs width per bits: read-off (markers, solid, its bootstrap band) beside the model (dashed, band).

    The read-off ECR inverts the measured float curve at each width; the model
    ECR g(b) * 32 / b is one number per bits value, drawn across the trained
    widths.  Where the read-off band is wide the float curve is flat and the
    read-off says little.
    """
    require(ecr_df, ("width", "bits", "ecr"), "ecr_df")
    law = law_from_table(scaling_df)
    q = ecr_df[~is_float_bits(ecr_df["bits"])]
    order = bits_order(q["bits"] if bits is None else bits)
    styles = styles_for(styles, order)
    widths = np.sort(q["width"].unique()).astype(float)
    has_band = {"ecr_lo", "ecr_hi"} <= set(q.columns)
    model = scaling_df[scaling_df["kind"] == "ecr_model"].set_index("bits")
    for b in order:
        st = styles[b]
        r = q[q["bits"] == b].sort_values("width")
        ax.plot(r["width"], r["ecr"], marker=st["marker"], color=st["color"], ms=4, lw=1.0, label=st["label"])
        if has_band:
            ax.fill_between(r["width"], r["ecr_lo"], r["ecr_hi"], color=st["color"], alpha=0.12, lw=0)
        if float(b) in model.index:
            m = model.loc[float(b)]
            v, mlo, mhi = float(m["value"]), float(m["lo"]), float(m["hi"])
        else:
            v, mlo, mhi = float(law.model_ecr(b)), np.nan, np.nan
        ax.plot(widths, np.full(widths.size, v), color=st["color"], ls="--", lw=1.0)
        if np.isfinite(mlo):
            ax.fill_between(widths, mlo, mhi, color=st["color"], alpha=0.10, lw=0)
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(int(w)) for w in widths])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_xlabel(width_label(ecr_df))
    ax.set_ylabel("ECR (float-equivalent memory / memory)")
    level = scaling_df["level"].dropna()
    pct = f"{100 * float(level.iloc[0]):.0f}% " if len(level) else ""
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", lw=1.0, marker="o", ms=3), Line2D([], [], color="0.3", ls="--", lw=1.0)]
    labels += ["read-off (band: " + pct + "bootstrap)", "model g(b)·32/b (band)"]
    legend(ax, handles=handles, labels=labels, title="bits")
    return ax
