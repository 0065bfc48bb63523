"""Training and retraining curves per width: what every cell's epochs did.

Drawn from the per-epoch lists a cell records in its metrics row
(:data:`qdesign.core.constants.HISTORY_COLUMNS`), so no checkpoint and no
torch is read. Top row: the float networks' training (validation error solid,
training error dashed); bottom row: retraining at each word length, starting
from direct quantization at epoch 0. Seed means per epoch; one panel per width.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..core.constants import HISTORY_COLUMNS
from ..core.precision import is_float_bits
from .style import FIGSIZE, bits_order, fmt_g, note, styles_for

__all__ = ["has_history", "plot_training_curves"]

_VAL, _TRAIN = HISTORY_COLUMNS["val_error"], HISTORY_COLUMNS["train_error"]


def has_history(summary: pd.DataFrame) -> bool:
    """Whether the table carries per-epoch curves (tables written before they were recorded do not)."""
    return _VAL in summary.columns and bool(summary[_VAL].map(_is_curve).any())


def _is_curve(v) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0


def _mean_curve(curves: pd.Series) -> np.ndarray:
    """Per-epoch mean over seeds (seeds of different lengths: over those that reached the epoch)."""
    curves = [np.asarray(c, float) for c in curves if _is_curve(c)]
    if not curves:
        return np.array([])
    n = max(len(c) for c in curves)
    stacked = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        stacked[i, : len(c)] = c
    return np.nanmean(stacked, axis=0)


def _percent_axis(ax, values) -> None:
    """Symmetric-log y in percent: linear below 1% (a training error of 0 stays on the axis), log above,
    1-2-5 ticks where the data are."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    hi = float(v.max()) if v.size else 100.0
    ax.set_yscale("symlog", linthresh=1.0, linscale=0.4)
    top = min(100.0, hi * 1.15)
    bottom = 0.0 if not v.size or v.min() < 1.0 else float(v.min()) / 1.15
    ticks = np.r_[0.0, np.outer(10.0 ** np.arange(0, 3), [1, 2, 3, 5]).ravel()]
    ax.set_ylim(bottom, top)
    ax.yaxis.set_major_locator(FixedLocator(ticks[(ticks >= bottom) & (ticks <= top)]))
    ax.yaxis.set_major_formatter(FuncFormatter(fmt_g))
    ax.yaxis.set_minor_locator(NullLocator())


def plot_training_curves(summary: pd.DataFrame, fig: Figure, styles: Mapping | None = None) -> None:
    """Two rows of panels, one column per width (see the module doc)."""
    if not has_history(summary):
        fig.set_size_inches(FIGSIZE[0], 1.8)
        note(
            fig.add_subplot(),
            "no per-epoch history in this table: cells record it in their metrics row\n"
            "since 2026-12-03, and the cells of these tables were trained before",
        )
        return
    widths = sorted(int(w) for w in summary["width"].unique())
    order = bits_order(summary["bits"])
    styles = styles_for(styles, order)
    fig.set_size_inches(max(FIGSIZE[0], 1.7 * len(widths) + 1.9), 4.6)
    axes = fig.subplots(2, len(widths), sharey="row", squeeze=False)
    for j, w in enumerate(widths):
        top, bottom = axes[0, j], axes[1, j]
        cell = summary[summary["width"] == w]
        fl = cell[is_float_bits(cell["bits"])]
        for col, ls in ((_VAL, "-"), (_TRAIN, "--")):
            if col in fl.columns:
                y = 100 * _mean_curve(fl[col])
                top.plot(np.arange(1, len(y) + 1), y, color="black", ls=ls, lw=1.1)
        if len(fl):
            best = 100 * float(fl[_VAL].map(lambda c: np.min(c) if _is_curve(c) else np.nan).mean())
            bottom.axhline(best, color="black", ls=":", lw=1.0)
        for b in order:
            if is_float_bits(b):
                continue
            q = cell[cell["bits"] == b]
            y = 100 * _mean_curve(q[_VAL])
            if not len(y):
                continue
            start = 100 * float(q["direct_val_error"].mean()) if "direct_val_error" in q.columns else np.nan
            y = np.r_[start, y]
            bottom.plot(np.arange(len(y)), y, color=styles[b]["color"], lw=1.1)
            bottom.plot([0], [start], ls="none", marker=styles[b]["marker"], color=styles[b]["color"], ms=3.5)
        top.set_title(f"width {w}", fontsize=8.5)
        bottom.set_xlabel("Epoch", fontsize=8)
        for ax in (top, bottom):
            ax.tick_params(labelsize=7)
    for row in axes:
        row_values = [line.get_ydata() for ax in row for line in ax.get_lines()]
        _percent_axis(row[0], np.concatenate(row_values) if row_values else np.array([1.0]))
    axes[0, 0].set_ylabel("Float training:\nerror (%, log above 1)", fontsize=8)
    axes[1, 0].set_ylabel("Retraining: validation\nerror (%, log above 1)", fontsize=8)
    handles = [
        Line2D([], [], color="black", lw=1.1, label="float: validation"),
        Line2D([], [], color="black", lw=1.1, ls="--", label="float: training"),
        Line2D([], [], color="black", lw=1.0, ls=":", label="float: best\nvalidation error"),
    ]
    handles += [
        Line2D([], [], color=styles[b]["color"], marker=styles[b]["marker"], ms=3.5, lw=1.1, label=styles[b]["label"])
        for b in order
        if not is_float_bits(b)
    ]
    handles.append(Line2D([], [], ls="none", label="marker at epoch 0:\ndirect quantization\n(before retraining)"))
    handles.append(Line2D([], [], ls="none", label="lines: seed means"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=7)
