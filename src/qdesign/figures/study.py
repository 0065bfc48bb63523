"""The study's figures: error against size and memory, the ECR, what retraining
recovers, and the retraining methods side by side, drawn from the aggregated
tables (summary, ecr, frontier).

Each ``plot_*`` function draws on a caller's Axes so that it can be tested and
composed; :mod:`qdesign.figures.catalog` lays them out and writes them. Style,
colours per bits and axis helpers: :mod:`qdesign.figures.style`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..analysis.aggregate import INFORMATIVE_RATIO, readoff_informative
from ..analysis.tables import with_method
from ..core.precision import is_float_bits
from .style import (
    KIB,
    bits_order,
    fmt_g,
    legend,
    log_ticks,
    log_x,
    maybe_log_y,
    memory_axis,
    require,
    se,
    seed_stats,
    styles_for,
    width_axis,
    width_label,
)

__all__ = [
    "plot_ecr_vs_width",
    "plot_error_vs_memory",
    "plot_error_vs_weights",
    "plot_method_comparison",
    "plot_retrain_gap",
    "retrain_gaps",
]

_REQUIRED = {
    "error_vs_weights": ("width", "bits", "seed", "n_weights", "test_error"),
    "error_vs_memory": ("width", "bits", "seed", "memory_bits_weights", "test_error"),
    "frontier": ("kind", "width", "bits", "memory_bits", "error"),
    "ecr": ("width", "bits", "ecr", "ecr_bound"),
    "retrain_gap": ("width", "bits", "seed", "test_error", "direct_test_error"),
}

# Extra keys used to pair a quantized cell with its float cell, when present, so
# that a table holding several studies cannot cross-match them.
_PAIR_KEYS = ("study", "dataset", "model", "depth")


# --------------------------------------------------------------------------
# The study's figures
# --------------------------------------------------------------------------


def plot_error_vs_weights(summary: pd.DataFrame, ax, styles: Mapping | None = None):
    """Test error (%) vs number of weights, one line per bits value plus float.

    Answers "how much does each bit width cost at a given network size": the
    horizontal gap between a quantized line and the float line is the extra
    size quantization needs.  Lines are seed means; the band is the min-max
    range over seeds (a bar when there is a single width).
    """
    require(summary, _REQUIRED["error_vs_weights"], "summary")
    stats = seed_stats(summary, "n_weights")
    order = bits_order(stats["bits"])
    styles = styles_for(styles, order)
    spread = bool((stats["n"] > 1).any())
    for b in order:
        s = stats[stats["bits"] == b].sort_values("x")
        st = styles[b]
        x, y = s["x"].to_numpy(float), 100 * s["mean"].to_numpy(float)
        z = 3 if is_float_bits(b) else 2
        ax.plot(x, y, color=st["color"], marker=st["marker"], ms=4, lw=1.4, label=st["label"], zorder=z)
        if spread:
            lo, hi = 100 * s["lo"].to_numpy(float), 100 * s["hi"].to_numpy(float)
            if len(x) > 1:
                ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0, zorder=1)
            else:
                ax.vlines(x, lo, hi, color=st["color"], lw=1.0, zorder=1)
    log_x(ax, stats["x"])
    maybe_log_y(ax, 100 * stats["mean"])
    ax.set_xlabel("Number of weights (log scale)")
    ax.set_ylabel("Test error (%)")
    handles, _ = ax.get_legend_handles_labels()
    if spread:
        lo, hi = int(stats["n"].min()), int(stats["n"].max())
        n = f"{hi}" if lo == hi else f"{lo}–{hi}"
        handles.append(Patch(color="0.5", alpha=0.3, lw=0, label=f"min–max over\n{n} seeds"))
    else:
        handles.append(Line2D([], [], ls="none", label="single seed\n(no spread)"))
    legend(ax, handles)
    return ax


def _memory_column(cells: pd.DataFrame, pareto: pd.DataFrame) -> str:
    """Which summary memory column the frontier was built on: its ``memory``
    column; tables written before it existed are matched by their numbers."""
    if "memory" in pareto.columns and pareto["memory"].notna().any():
        return {"weights": "memory_bits_weights", "total": "memory_bits_total"}[pareto["memory"].dropna().iloc[0]]
    if "memory_bits_total" not in cells.columns or pareto.empty:
        return "memory_bits_weights"
    m = pareto.merge(cells, on=["width", "bits"], how="inner", suffixes=("", "_cell"))
    if m.empty:
        return "memory_bits_weights"
    ref = m["memory_bits"].to_numpy(float)
    err_w = np.nanmean(np.abs(m["memory_bits_weights"].to_numpy(float) - ref))
    err_t = np.nanmean(np.abs(m["memory_bits_total"].to_numpy(float) - ref))
    return "memory_bits_total" if err_t < err_w else "memory_bits_weights"


def plot_error_vs_memory(
    summary: pd.DataFrame, frontier: pd.DataFrame, ax, styles: Mapping | None = None, n_annotate: int = 6
):
    """Test error (%) vs memory (KiB), every seed-averaged cell, with the Pareto frontier.

    This is the paper's question in one picture: for any memory budget, the
    frontier step line gives the best design within it and the labels say
    which (width, bits) it is. The frontier is chosen on validation error and
    drawn at its test error, with one standard error over seeds as bars.
    """
    require(summary, _REQUIRED["error_vs_memory"], "summary")
    require(frontier, _REQUIRED["frontier"], "frontier")
    pareto = frontier[frontier["kind"] == "pareto"].dropna(subset=["memory_bits", "error"])
    pareto = pareto.sort_values("memory_bits")

    cols = ["bits", "width", "memory_bits_weights", "test_error"]
    if "memory_bits_total" in summary.columns:
        cols.append("memory_bits_total")
    cells = summary[cols].groupby(["bits", "width"], sort=True).mean().reset_index()
    cells = cells.dropna(subset=["test_error"])
    mem_col = _memory_column(cells, pareto)

    order = bits_order(cells["bits"])
    styles = styles_for(styles, order)
    for b in order:
        s = cells[cells["bits"] == b]
        st = styles[b]
        ax.scatter(
            s[mem_col] / KIB,
            100 * s["test_error"],
            color=st["color"],
            marker=st["marker"],
            s=22,
            alpha=0.85,
            lw=0,
            label=st["label"],
            zorder=2,
        )

    handles, _ = ax.get_legend_handles_labels()
    if {"chance_level", "diverged"} & set(summary.columns):  # cells that are no result: a red x over the marker
        from ..analysis.tables import flagged  # noqa: PLC0415

        flags = flagged(summary)
        diverged = "diverged" in summary.columns and bool(flagged(summary[["diverged"]]).any())
        bad = summary[flags].groupby(["bits", "width"]).size().index
        sel = cells.set_index(["bits", "width"]).index.isin(bad)
        if sel.any():
            ax.scatter(
                cells.loc[sel, mem_col] / KIB,
                100 * cells.loc[sel, "test_error"],
                marker="x",
                color="red",
                s=50,
                lw=1.5,
                zorder=5,
            )
            label = "diverged or chance level (not on the frontier)" if diverged else "chance level"
            handles.append(Line2D([], [], ls="none", marker="x", color="red", ms=7, mew=1.5, label=label))
    if not pareto.empty:
        x = pareto["memory_bits"].to_numpy(float) / KIB
        y = 100 * pareto["error"].to_numpy(float)
        err = 100 * _frontier_se(summary, pareto)
        # Best error with memory <= m is constant until the next frontier point.
        ax.step(x, y, where="post", color="crimson", lw=1.6, zorder=3, gid="frontier")
        bars = ax.errorbar(x, y, yerr=err, fmt="none", ecolor="crimson", elinewidth=1.0, capsize=2, zorder=4)
        bars.lines[2][0].set_gid("frontier-se")
        ax.scatter(x, y, s=60, facecolors="none", edgecolors="crimson", lw=1.2, zorder=4)
        chosen = "validation" if "val_error" in pareto.columns else "test"
        handles.append(
            Line2D(
                [],
                [],
                color="crimson",
                lw=1.6,
                marker="o",
                mfc="none",
                ms=7,
                label=f"Pareto frontier\n(chosen on {chosen} error;\nbars: ± 1 SE over seeds)",
            )
        )
        _annotate_frontier(ax, pareto, n_annotate)
        if n_annotate > 0:
            handles.append(Line2D([], [], ls="none", label="labels: width, bits"))
    handles.append(Line2D([], [], ls="none", label="markers: seed means"))

    what = "Total memory" if mem_col == "memory_bits_total" else "Weight memory"
    memory_axis(ax, cells[mem_col] / KIB, what)
    ax.set_ymargin(0.08)  # room for the label under the lowest frontier point
    if maybe_log_y(ax, 100 * cells["test_error"]):
        log_ticks(ax.yaxis, 100 * cells["test_error"])
    ax.set_ylabel("Test error (%)")
    legend(ax, handles)
    return ax


def _frontier_se(summary: pd.DataFrame, pareto: pd.DataFrame) -> np.ndarray:
    """One standard error over seeds of each frontier cell's mean test error."""
    if "error_std" not in pareto.columns:
        return np.zeros(len(pareto))
    rows = with_method(summary)
    keys = ["width", "bits", "method"] if "method" in pareto.columns else ["width", "bits"]
    counts = rows.groupby(keys)["seed"].count().rename("n_seeds").reset_index()
    n = pareto.merge(counts, on=keys, how="left")["n_seeds"].to_numpy(float)
    return se(pareto["error_std"].to_numpy(float), n)


def _annotate_frontier(ax, pareto: pd.DataFrame, n: int) -> None:
    """Label up to ``n`` frontier points, spread along it, with "width×bits"."""
    if n <= 0 or pareto.empty:
        return
    idx = np.unique(np.round(np.linspace(0, len(pareto) - 1, min(n, len(pareto)))).astype(int))
    for i in idx:
        r = pareto.iloc[i]
        if not (np.isfinite(r["width"]) and np.isfinite(r["bits"])):
            continue
        b = int(r["bits"])
        tag = "float" if is_float_bits(b) else f"{b}b"
        # Below-left of a Pareto point is empty by definition: no cell is both
        # smaller and better, and the step line leaves the point up and right.
        ax.annotate(
            f"{int(r['width'])}, {tag}",
            (r["memory_bits"] / KIB, 100 * r["error"]),
            xytext=(-5, -5),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=7,
            color="crimson",
            zorder=5,
        )


def plot_ecr_vs_width(ecr: pd.DataFrame, ax, styles: Mapping | None = None, n_test: int | None = None):
    """Effective compression ratio vs width, one curve per bits.

    ECR > 1 means quantizing saves memory even after paying back its accuracy
    loss with a larger network; the paper finds it rises with width. What the
    read-off can say is drawn apart from what it cannot: filled markers joined
    by lines are informative read-offs, with their bootstrap interval over
    seeds as bars; open circles are read-offs whose interval spans more than
    :data:`qdesign.analysis.aggregate.INFORMATIVE_RATIO` (the float curve is
    too flat there for the seeds to pin the ratio); open triangles are only
    bounds (▽ upper, △ lower: the quantized error lies outside the float
    curve), never joined by a line.
    """
    require(ecr, _REQUIRED["ecr"], "ecr")
    q = ecr[~is_float_bits(ecr["bits"])].copy()
    q["ecr"] = pd.to_numeric(q["ecr"], errors="coerce")
    q = q.dropna(subset=["ecr", "width"])
    q = q[q["ecr"] > 0]
    bound = q["ecr_bound"].astype(object).where(q["ecr_bound"].notna(), None)
    q["bound"] = bound.map(lambda v: v if v in ("upper", "lower") else "")
    q["informative"] = readoff_informative(q).to_numpy(bool)
    has_band = {"ecr_lo", "ecr_hi"} <= set(q.columns) and q[["ecr_lo", "ecr_hi"]].notna().any().any()

    order = bits_order(q["bits"])
    styles = styles_for(styles, order)
    seen = {"upper": False, "lower": False, "wide": False}
    # a small sideways offset per bits value, so that bars at one width do not hide each other
    shift = dict(zip(order, 2.0 ** (0.06 * (np.arange(len(order)) - (len(order) - 1) / 2))))
    for b in order:
        s = q[q["bits"] == b].sort_values("width")
        st = styles[b]
        x, y = s["width"].to_numpy(float) * shift[b], s["ecr"].to_numpy(float)
        good = s["informative"].to_numpy(bool) & (s["bound"] == "").to_numpy()
        wide = ~s["informative"].to_numpy(bool) & (s["bound"] == "").to_numpy()
        ax.plot(x, np.where(good, y, np.nan), color=st["color"], lw=1.4, zorder=2)
        ax.plot(x[good], y[good], ls="none", color=st["color"], marker=st["marker"], ms=4.5, zorder=3)
        if has_band:
            lo, hi = s["ecr_lo"].to_numpy(float), s["ecr_hi"].to_numpy(float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            for sel, lw, alpha in ((good & ok, 1.0, 1.0), (~good & ok, 0.7, 0.45)):
                err = np.vstack([y - lo, hi - y]).clip(min=0)[:, sel]
                ax.errorbar(
                    x[sel],
                    y[sel],
                    yerr=err,
                    fmt="none",
                    ecolor=st["color"],
                    elinewidth=lw,
                    alpha=alpha,
                    capsize=1.5,
                    zorder=2,
                )
        if wide.any():
            seen["wide"] = True
            ax.plot(x[wide], y[wide], ls="none", marker="o", ms=5, mfc="white", mec=st["color"], mew=1.1, zorder=4)
        for kind, mk in (("upper", "v"), ("lower", "^")):
            sel = (s["bound"] == kind).to_numpy()
            if sel.any():
                seen[kind] = True
                ax.plot(x[sel], y[sel], ls="none", marker=mk, ms=7, mfc="white", mec=st["color"], mew=1.3, zorder=4)

    ax.axhline(1.0, color="black", ls="--", lw=1.0, zorder=1)
    width_axis(ax, ecr["width"].dropna())
    values = np.r_[q["ecr"].to_numpy(float), 1.0]
    if maybe_log_y(ax, values):
        log_ticks(ax.yaxis, values)
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(fmt_g))
    ax.set_xlabel(width_label(ecr))
    ax.set_ylabel("Effective compression ratio (×)")

    handles = [
        Line2D([], [], color=styles[b]["color"], marker=styles[b]["marker"], ms=4.5, lw=1.4, label=styles[b]["label"])
        for b in order
    ]
    handles.append(Line2D([], [], color="black", ls="--", lw=1.0, label="float (ECR = 1)"))
    if has_band:
        handles.append(Line2D([], [], color="0.3", lw=1.0, marker="|", ms=6, label="bars: 90% bootstrap\nover seeds"))
    if seen["wide"]:
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="o",
                ms=5,
                mfc="white",
                mec="0.3",
                label=f"uninformative: interval\nwider than {INFORMATIVE_RATIO:g}x (float\ncurve too flat)",
            )
        )
    if seen["upper"]:
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="v",
                ms=7,
                mfc="white",
                mec="0.3",
                label="upper bound (worse\nthan smallest float)",
            )
        )
    if seen["lower"]:
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="^",
                ms=7,
                mfc="white",
                mec="0.3",
                label="lower bound (better\nthan largest float)",
            )
        )
    if n_test:
        handles.append(
            Line2D([], [], ls="none", label=f"test set: {n_test:,} images\n(1 image = {100 / n_test:.2g} points)")
        )
    legend(ax, handles)
    return ax


def retrain_gaps(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (bits, width): mean over seeds of the error above float, in percentage points.

    Each quantized row is paired with the float row (bits == 32) of the same
    width and seed (and study/model/depth when present).  Columns: bits,
    width, direct, retrained (NaN where no pairs or no direct error).
    """
    require(summary, _REQUIRED["retrain_gap"], "summary")
    keys = ["width", "seed", *[k for k in _PAIR_KEYS if k in summary.columns]]
    is_f = is_float_bits(summary["bits"])
    ref = (
        summary.loc[is_f, keys + ["test_error"]]
        .groupby(keys, dropna=False, sort=False)["test_error"]
        .mean()
        .rename("float_error")
        .reset_index()
    )
    q = summary.loc[~is_f, keys + ["bits", "test_error", "direct_test_error"]]
    m = q.merge(ref, on=keys, how="inner")
    m["direct"] = 100 * (m["direct_test_error"].astype(float) - m["float_error"])
    m["retrained"] = 100 * (m["test_error"].astype(float) - m["float_error"])
    return m.groupby(["bits", "width"], sort=True)[["direct", "retrained"]].mean().reset_index()


def plot_retrain_gap(summary: pd.DataFrame, ax, styles: Mapping | None = None):
    """Error added by quantization vs width, before (dashed) and after (solid) retraining.

    Shows what retraining buys and that wide networks tolerate few bits: the
    gap shrinks with width.  Gaps are seed means of (quantized − float) test
    error for the same width and seed, in percentage points.  Lines are drawn
    per bits ascending, solid (gid ``retrained-<bits>``) then dashed
    (gid ``direct-<bits>``, omitted when all direct errors are NaN).  The y
    axis turns symmetric-log when gaps exceed 10 pp, so the small retrained
    gaps stay readable next to large direct ones.
    """
    gaps = retrain_gaps(summary)
    order = bits_order(gaps["bits"])
    styles = styles_for(styles, order)
    for b in order:
        s = gaps[gaps["bits"] == b].sort_values("width")
        st = styles[b]
        x = s["width"].to_numpy(float)
        r, d = s["retrained"].to_numpy(float), s["direct"].to_numpy(float)
        ok = np.isfinite(r)
        ax.plot(x[ok], r[ok], color=st["color"], marker=st["marker"], ms=4, lw=1.4, gid=f"retrained-{b}", zorder=3)
        ok = np.isfinite(d)
        if ok.any():
            ax.plot(
                x[ok],
                d[ok],
                color=st["color"],
                marker=st["marker"],
                ms=3,
                mfc="white",
                lw=1.1,
                ls="--",
                gid=f"direct-{b}",
                zorder=2,
            )

    ax.axhline(0.0, color="black", lw=0.8, zorder=1)
    width_axis(ax, summary["width"].dropna())
    vals = gaps[["direct", "retrained"]].to_numpy(float)
    vals = vals[np.isfinite(vals)]
    symlog = bool(vals.size) and np.abs(vals).max() > 10
    if symlog:
        ax.set_yscale("symlog", linthresh=1.0, linscale=1.0)
        # Autoscale pads symlog by whole decades; pad by 5% of the drawn range instead.
        tr = ax.yaxis.get_transform()
        lo, hi = tr.transform([min(vals.min(), 0.0), vals.max()])
        pad = 0.05 * (hi - lo)
        y0, y1 = tr.inverted().transform([lo - pad, hi + pad])
        ax.set_ylim(y0, y1)
        # 1-2-5 ticks, including 0.5 inside the linear part around zero.
        mags = np.outer(10.0 ** np.arange(0, 4), [1, 2, 5]).ravel()
        ticks = np.r_[0.0, 0.5, -0.5, mags, -mags]
        ax.yaxis.set_major_locator(FixedLocator(np.sort(ticks[(ticks >= y0) & (ticks <= y1)])))
        ax.yaxis.set_major_formatter(FuncFormatter(fmt_g))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(width_label(summary))
    ax.set_ylabel("Error above float (percentage points" + (", symlog)" if symlog else ")"))

    handles = [
        Line2D([], [], color=styles[b]["color"], marker=styles[b]["marker"], ms=4, lw=1.4, label=styles[b]["label"])
        for b in order
    ]
    handles += [
        Line2D([], [], color="0.3", lw=1.4, label="after retraining"),
        Line2D([], [], color="0.3", lw=1.1, ls="--", label="direct (before\nretraining)"),
    ]
    if not order:
        ax.text(
            0.5,
            0.5,
            "no quantized cells with a float\nreference of the same width and seed",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    legend(ax, handles)
    return ax


_METHOD_LINES = ("-", "--", ":", "-.")


def plot_method_comparison(summary: pd.DataFrame, ax, styles: Mapping | None = None):
    """Retrained test error (%) vs width for every retraining method, one colour
    per bits value and one line style per method, float in black: which method
    wins at each width and word length (seed means). With several methods, a
    pale band per bits value follows the best of them (the best-method frontier)."""
    require(summary, ("width", "bits", "test_error"), "summary")
    df = summary.copy()
    if "method" not in df.columns:
        df["method"] = np.where(is_float_bits(df["bits"]), "float", "fixed")
    df["method"] = df["method"].fillna("float")
    means = df.groupby(["method", "bits", "width"], sort=True)["test_error"].mean().reset_index()
    methods = sorted(m for m in means["method"].unique() if m != "float")
    order = bits_order(means["bits"])
    styles = styles_for(styles, order)
    if len(methods) > 1:
        # the best-method frontier: per word length, the lowest seed-mean error
        # over the methods at each width, as a broad pale band under the lines
        quant = means[(means["method"] != "float") & (~is_float_bits(means["bits"]))]
        best = quant.groupby(["bits", "width"], sort=True)["test_error"].min().reset_index()
        for b in order:
            s = best[best["bits"] == b]
            if len(s):
                ax.plot(s["width"], 100 * s["test_error"], color=styles[b]["color"], lw=6, alpha=0.22, zorder=1)
    for b in order:
        for i, m in enumerate(["float"] if is_float_bits(b) else methods):
            s = means[(means["bits"] == b) & (means["method"] == m)].sort_values("width")
            if s.empty:
                continue
            ax.plot(
                s["width"],
                100 * s["test_error"],
                color=styles[b]["color"],
                marker=styles[b]["marker"],
                ms=3.5,
                lw=1.3,
                ls=_METHOD_LINES[i % len(_METHOD_LINES)] if not is_float_bits(b) else "-",
            )
    width_axis(ax, means["width"])
    maybe_log_y(ax, 100 * means["test_error"])
    ax.set_xlabel(width_label(summary))
    ax.set_ylabel("Test error after retraining (%)")
    handles = [
        Line2D([], [], color=styles[b]["color"], marker=styles[b]["marker"], ms=4, lw=1.3, label=styles[b]["label"])
        for b in order
    ]
    handles += [
        Line2D([], [], color="0.3", lw=1.3, ls=_METHOD_LINES[i % len(_METHOD_LINES)], label=f"method: {m}")
        for i, m in enumerate(methods)
    ]
    if len(methods) > 1:
        handles.append(Line2D([], [], color="0.3", lw=6, alpha=0.22, label="best method (per bits)"))
    legend(ax, handles)
    return ax
