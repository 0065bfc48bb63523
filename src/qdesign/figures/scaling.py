"""Figures of the scaling law: the fit over the measured cells, and ECR read off
beside the model's.

Each ``plot_*`` draws on a caller's Axes; colours and markers per bits come
from :func:`qdesign.figures.style.bits_styles`, so "4 bits" looks the same in
every figure. The law is rebuilt from the scaling table, never refitted here;
a table that says the law was not fitted (too few widths) is drawn as that
note (:func:`not_fitted_note`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from ..analysis.aggregate import readoff_informative
from ..analysis.scaling import law_from_table
from ..analysis.tables import primary_method
from ..core.constants import FLOAT_BITS
from ..core.precision import is_float_bits
from .style import bits_order, legend, log_ticks, log_x, require, styles_for, width_label

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


def _law(scaling_df: pd.DataFrame, method: str | None):
    law, model = law_from_table(scaling_df, method)
    return law, model


def plot_scaling_fit(summary: pd.DataFrame, scaling_df: pd.DataFrame, ax, styles: Mapping | None = None):
    """What the law was fitted on and what it says: seed-mean *validation* error
    per cell (markers; bars: one standard error over seeds) and the fitted law
    per bits value (lines; dashed outside the trained sizes), error (%) vs the
    number of weights, for the study's primary retraining method."""
    require(summary, ("bits", "n_weights", "val_error"), "summary")
    method = primary_method(summary)
    law, _ = _law(scaling_df, method)
    s = summary.assign(bits=np.minimum(summary["bits"], FLOAT_BITS))
    stats = (
        s.groupby(["bits", "n_weights"])
        .agg(m=("val_error", "mean"), sd=("val_error", "std"), n=("val_error", "count"))
        .reset_index()
    )
    stats["se"] = (stats["sd"] / np.sqrt(stats["n"])).fillna(0.0)
    order = bits_order(stats["bits"])
    styles = styles_for(styles, order)
    lo, hi = law.n_range
    inside = np.geomspace(lo, hi, 120)
    below, above = np.geomspace(lo / 1.5, lo, 12), np.geomspace(hi, hi * 1.5, 12)
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
        ax.plot(inside, 100 * law.predict(inside, b), color=st["color"], lw=1.0, zorder=1)
        for part in (below, above):
            ax.plot(part, 100 * law.predict(part, b), color=st["color"], lw=0.8, ls="--", zorder=1)
    log_x(ax, [lo / 1.5, hi * 1.5])
    ax.set_yscale("log")
    log_ticks(ax.yaxis, 100 * stats["m"])
    ax.set_xlabel("Number of weights (log scale)")
    ax.set_ylabel("Validation error (%, log scale)")
    beta = f", β={law.beta:.2f}" if np.isfinite(law.beta) else ""
    ax.set_title(
        f"law ({law.form}, {law.method}) fitted on validation error: E={100 * law.E:.2f}%, α={law.alpha:.2f}{beta}",
        fontsize=8.5,
    )
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", ls="none", marker="o", ms=4),
        Line2D([], [], color="0.3", lw=1.0),
        Line2D([], [], color="0.3", lw=0.8, ls="--"),
    ]
    labels += ["seed mean ± 1 SE", "fitted law", "law outside the\ntrained sizes"]
    legend(ax, handles=handles, labels=labels, title="bits")
    return ax


def plot_ecr_bands(ecr_df: pd.DataFrame, scaling_df: pd.DataFrame, fig, styles: Mapping | None = None) -> None:
    """ECR against width, one panel per bits value: read off the measured float
    curve from test errors as the paper defines it (markers, bars: 90% seed
    bootstrap; an open triangle where it is only a bound; a grey x where the
    float curve is too flat for the read-off to say anything), beside the
    law's ECR at each width (line, band: its bootstrap interval)."""
    require(ecr_df, ("width", "bits", "ecr", "ecr_bound"), "ecr")
    method = primary_method(ecr_df)
    law, _ = _law(scaling_df, method)
    q = ecr_df[~is_float_bits(ecr_df["bits"])]
    order = bits_order(q["bits"])
    styles = styles_for(styles, order)
    widths = np.sort(q["width"].unique()).astype(float)
    t = scaling_df[(scaling_df["kind"] == "ecr_model") & (scaling_df["method"] == law.method)]
    n_cols = min(3, len(order)) or 1
    n_rows = max(1, math.ceil(len(order) / n_cols))
    fig.set_size_inches(2.4 * n_cols + 1.6, 2.0 * n_rows + 0.9)
    axes = fig.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False).ravel()
    has_band = {"ecr_lo", "ecr_hi"} <= set(q.columns)
    informative = readoff_informative(q)
    for ax, b in zip(axes, order):
        st = styles[b]
        r = q[q["bits"] == b].sort_values("width")
        inf = informative.loc[r.index].to_numpy(bool)
        bound = r["ecr_bound"].astype(object).where(r["ecr_bound"].notna(), "").to_numpy()
        m = t[t["bits"] == b].sort_values("width")
        if len(m):
            ax.fill_between(m["width"], m["lo"], m["hi"], color=st["color"], alpha=0.18, lw=0)
            ax.plot(m["width"], m["value"], color=st["color"], lw=1.2)
        exact = inf & (bound == "")
        if has_band:
            err = np.vstack([r["ecr"] - r["ecr_lo"], r["ecr_hi"] - r["ecr"]]).clip(min=0)[:, exact]
            ax.errorbar(r["width"][exact], r["ecr"][exact], yerr=err, fmt="none", ecolor=st["color"], lw=0.8)
        ax.plot(r["width"][exact], r["ecr"][exact], ls="none", marker=st["marker"], color=st["color"], ms=4.5)
        for kind, mk in (("upper", "v"), ("lower", "^")):  # a bound is never informative, but it is a bound
            sel = bound == kind
            ax.plot(r["width"][sel], r["ecr"][sel], ls="none", marker=mk, mfc="white", mec=st["color"], ms=6)
        wide = ~inf & (bound == "")
        ax.plot(r["width"][wide], r["ecr"][wide], ls="none", marker="x", color="0.55", ms=5)
        ax.axhline(1.0, color="black", lw=0.8, ls=":")
        ax.set_title(st["label"], fontsize=8.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(int(w)) for w in widths], fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
    for ax in axes[len(order) :]:
        ax.set_visible(False)
    axes[0].set_yscale("log")
    values = np.r_[q["ecr"].to_numpy(float), t["value"].to_numpy(float), 1.0]
    log_ticks(axes[0].yaxis, values[np.isfinite(values) & (values > 0)])
    fig.supxlabel(width_label(ecr_df), fontsize=9)
    fig.supylabel("ECR (×, log scale)", fontsize=9)
    level = scaling_df["level"].dropna()
    pct = f"{100 * float(level.iloc[0]):.0f}%" if len(level) else "90%"
    handles = [
        Line2D([], [], color="0.3", ls="none", marker="o", ms=4.5),
        Line2D([], [], color="0.3", ls="none", marker="v", mfc="white", ms=6),
        Line2D([], [], color="0.55", ls="none", marker="x", ms=5),
        Line2D([], [], color="0.3", lw=1.2),
        Patch(color="0.3", alpha=0.18, lw=0),
    ]
    labels = [
        f"read off test errors\n(bars: {pct} seed bootstrap)",
        "bound (beyond the\nfloat curve; ▽ upper, △ lower)",
        "read-off uninformative\n(float curve too flat)",
        f"law ({law.form}, {law.method})",
        f"law: {pct} bootstrap",
    ]
    fig.legend(handles=handles, labels=labels, loc="outside right upper", frameon=False, fontsize=7)
