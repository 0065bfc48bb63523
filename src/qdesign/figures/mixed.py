"""Figures of a mixed-precision study.

* ``sensitivity``: per width, a layer x bits heat map of the validation error
  increase (percentage points, mean over seeds) when that layer alone is
  quantized; the numbers are printed in the cells.
* ``mixed_frontier``: test error against weight memory for every uniform
  (circles, coloured by bits), explicit-pattern (diamonds) and budget (stars)
  design, seed means with bars of one standard error over seeds, and the
  Pareto fronts of uniform designs alone (solid) and of all designs (dashed),
  chosen on validation error and drawn at their test error, one panel per method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from ..analysis.ecr import pareto_front
from ..analysis.mixed import mixed_means, uniform_means
from ..analysis.tables import FLOAT_METHOD
from .style import KIB, bits_order, bits_styles, fmt_g, legend, log_ticks, maybe_log_y, memory_axis, se

__all__ = ["plot_mixed_frontier", "plot_sensitivity"]


def plot_sensitivity(sens: pd.DataFrame, fig: Figure) -> None:
    widths = sorted(sens["width"].unique())
    mean = sens.groupby(["width", "layer", "bits"], sort=True)["d_val_error"].mean().reset_index()
    vmax = max(1e-3, float((100 * mean["d_val_error"]).abs().max()))
    norm = SymLogNorm(linthresh=0.1, vmin=-vmax, vmax=vmax, base=10)
    axes = fig.subplots(1, len(widths), sharey=True, squeeze=False)[0]
    image = None
    for ax, w in zip(axes, widths):
        t = mean[mean["width"] == w].pivot(index="layer", columns="bits", values="d_val_error") * 100
        image = ax.imshow(t.to_numpy(), cmap="RdBu_r", norm=norm, aspect="auto")
        ax.set_xticks(range(t.shape[1]), [str(b) for b in t.columns])
        ax.set_yticks(range(t.shape[0]), [f"{i + 1}" for i in t.index])
        ax.grid(False)
        ax.set_title(f"width {w}")
        ax.set_xlabel("Bits of that layer")
        for (i, j), v in np.ndenumerate(t.to_numpy()):
            text = f"{v:.1f}" if round(v, 1) != 0 else "0.0"  # no "-0.0": a change below 0.05 points is none
            ax.text(j, i, text, ha="center", va="center", fontsize=6, color="white" if abs(v) > 3 else "black")
    axes[0].set_ylabel("Weight layer (first to last)")
    cbar = fig.colorbar(image, ax=list(axes), shrink=0.9)
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(fmt_g))
    cbar.set_label("Validation error increase\n(percentage points, symlog)")


def plot_mixed_frontier(summary: pd.DataFrame, mixed: pd.DataFrame, ax, method: str) -> None:
    uni = uniform_means(summary)
    uni = uni[uni["method"].isin([method, FLOAT_METHOD])]
    mix = mixed_means(mixed)
    mix = mix[mix["method"] == method]
    styles = bits_styles(uni["bits"])
    for b in bits_order(uni["bits"]):
        g = uni[uni["bits"] == b]
        st = styles[int(b)]
        ax.errorbar(
            g["memory_bits"] / KIB, 100 * g["error"], yerr=100 * se(g["error_std"], g["n_seeds"]), fmt=st["marker"],
            color=st["color"], ms=4, lw=0.8, alpha=0.8, label=st["label"],
        )  # fmt: skip
    for kind, marker, label in (("explicit", "D", "mixed: pattern"), (None, "*", "mixed: budget")):
        g = mix[mix["allocation"] == "explicit"] if kind else mix[mix["allocation"] != "explicit"]
        if len(g):
            ax.errorbar(
                g["memory_bits"] / KIB, 100 * g["error"], yerr=100 * se(g["error_std"], g["n_seeds"]), fmt=marker,
                color="tab:red", mfc="none" if kind else "tab:red", ms=7 if marker == "*" else 5, lw=0.8, label=label,
            )  # fmt: skip
    # the fronts are chosen on validation error, like every choice, and drawn at their test error
    cols = ["memory_bits", "val_error", "error"]
    front_u = pareto_front(uni[cols], error_col="val_error").sort_values("memory_bits")
    front_all = pareto_front(pd.concat([uni[cols], mix[cols]]), error_col="val_error").sort_values("memory_bits")
    ax.step(front_u["memory_bits"] / KIB, 100 * front_u["error"], where="post", color="0.3", lw=1.2)
    ax.step(front_all["memory_bits"] / KIB, 100 * front_all["error"], where="post", color="tab:red", lw=1, ls="--")
    memory_axis(ax, pd.concat([uni["memory_bits"], mix["memory_bits"]]) / KIB)
    ax.set_ylabel("Test error (%)")
    errors = 100 * pd.concat([uni["error"], mix["error"]])
    if maybe_log_y(ax, errors, ratio=3.0):
        log_ticks(ax.yaxis, errors)
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", lw=1.2, label="Pareto front: uniform"),
        Line2D([], [], color="tab:red", lw=1, ls="--", label="Pareto front: all designs"),
        Line2D([], [], ls="none", label="fronts chosen on\nvalidation error"),
        Line2D([], [], ls="none", label="markers: seed means;\nbars: ± 1 SE over seeds"),
    ]
    legend(ax, handles=handles)
