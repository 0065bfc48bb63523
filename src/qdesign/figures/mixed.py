"""Figures of a mixed-precision study.

* ``sensitivity``: per width, a layer x bits heat map of the validation error
  increase (percentage points, mean over seeds) when that layer alone is
  quantized; the numbers are printed in the cells.
* ``mixed_frontier``: test error against weight memory for every uniform
  (circles, coloured by bits), explicit-pattern (diamonds) and budget (stars)
  design, seed means with seed std bars, and the Pareto fronts of uniform
  designs alone (solid) and of all designs (dashed), one panel per method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..analysis.ecr import pareto_front
from ..analysis.mixed import mixed_means, uniform_means
from ..analysis.tables import FLOAT_METHOD
from .style import bits_styles, legend, log_x, maybe_log_y

__all__ = ["plot_mixed_frontier", "plot_sensitivity"]
_KIB = 8 * 1024  # bits per KiB


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
        ax.set_xlabel("bits of that layer")
        for (i, j), v in np.ndenumerate(t.to_numpy()):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6, color="white" if abs(v) > 3 else "black")
    axes[0].set_ylabel("weight layer (first to last)")
    cbar = fig.colorbar(image, ax=list(axes), shrink=0.9)
    cbar.set_label("validation error increase (points)")


def plot_mixed_frontier(summary: pd.DataFrame, mixed: pd.DataFrame, ax, method: str) -> None:
    uni = uniform_means(summary)
    uni = uni[uni["method"].isin([method, FLOAT_METHOD])]
    mix = mixed_means(mixed)
    mix = mix[mix["method"] == method]
    styles = bits_styles(uni["bits"])
    for b, g in uni.groupby("bits"):
        st = styles[int(b)]
        ax.errorbar(
            g["memory_bits"] / _KIB, 100 * g["error"], yerr=100 * g["error_std"].fillna(0), fmt=st["marker"],
            color=st["color"], ms=4, lw=0.8, alpha=0.8, label=st["label"],
        )  # fmt: skip
    for kind, marker, label in (("explicit", "D", "mixed: pattern"), (None, "*", "mixed: budget")):
        g = mix[mix["allocation"] == "explicit"] if kind else mix[mix["allocation"] != "explicit"]
        if len(g):
            ax.errorbar(
                g["memory_bits"] / _KIB, 100 * g["error"], yerr=100 * g["error_std"].fillna(0), fmt=marker,
                color="tab:red", mfc="none" if kind else "tab:red", ms=7 if marker == "*" else 5, lw=0.8, label=label,
            )  # fmt: skip
    cols = ["memory_bits", "error"]
    front_u = pareto_front(uni[cols]).sort_values("memory_bits")
    front_all = pareto_front(pd.concat([uni[cols], mix[cols]])).sort_values("memory_bits")
    ax.step(front_u["memory_bits"] / _KIB, 100 * front_u["error"], where="post", color="0.3", lw=1.2)
    ax.step(front_all["memory_bits"] / _KIB, 100 * front_all["error"], where="post", color="tab:red", lw=1, ls="--")
    log_x(ax, pd.concat([uni["memory_bits"], mix["memory_bits"]]) / _KIB)
    ax.set_xlabel("weight memory (KiB, log scale)")
    ax.set_ylabel("test error (%)")
    maybe_log_y(ax, 100 * pd.concat([uni["error"], mix["error"]]), ratio=3.0)
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", lw=1.2, label="Pareto front: uniform"),
        Line2D([], [], color="tab:red", lw=1, ls="--", label="Pareto front: all designs"),
    ]
    legend(ax, handles=handles)
