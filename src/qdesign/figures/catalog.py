"""The table of figures: every figure's drawer, and the one writer.

:data:`qdesign.core.registry.FIGURE_INFO` names each figure, its title and the
tables it is drawn from (the rules build their inputs and outputs from it);
:data:`DRAWERS` gives each name its drawer here. A name without a drawer (or a
drawer without a name) fails at import, not later as a missing output.

:func:`write_figures` draws every requested figure first (so that a bad table
leaves no figure written), then saves them with
:func:`qdesign.figures.style.save_figure`. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from ..analysis.tables import primary_method_rows, retraining_methods
from ..core.errors import TableError
from ..core.registry import FIGURE_INFO
from .curves import plot_training_curves
from .mixed import plot_mixed_frontier, plot_sensitivity
from .scaling import is_fitted, not_fitted_note, plot_ecr_bands, plot_scaling_fit
from .search import plot_search_progress
from .study import (
    plot_ecr_vs_width,
    plot_error_vs_memory,
    plot_error_vs_weights,
    plot_method_comparison,
    plot_retrain_gap,
)
from .style import FIGSIZE, RC, bits_styles, normalize_formats, note, save_figure, study_name

__all__ = ["DRAWERS", "draw_figure", "write_figures"]

Tables = Mapping[str, pd.DataFrame]
Drawer = Callable[[Figure, Tables, dict], None]


def _on_axes(plot: Callable) -> Drawer:
    """A drawer for a one-Axes figure from ``plot(ax, tables, styles)``."""

    def draw(fig: Figure, tables: Tables, styles: dict) -> None:
        plot(fig.add_subplot(), tables, styles)

    return draw


def _primary(tables: Tables, name: str) -> pd.DataFrame:
    """The one-method figures show the study's primary method (and float)."""
    return primary_method_rows(tables[name])


def _scaling(plot: Callable) -> Callable:
    """A law figure, or the table's reason for having no law."""

    def draw(ax, tables, styles):
        if is_fitted(tables["scaling"]):
            plot(ax, tables, styles)
        else:
            not_fitted_note(tables["scaling"], ax)

    return draw


def _n_test(tables: Tables) -> int | None:
    """The study's test-set size (what one misclassified image weighs), when its summary says."""
    s = tables.get("summary")
    if s is None or "n_test" not in s.columns or s["n_test"].isna().all():
        return None
    return int(s["n_test"].median())


def _method_comparison(ax, tables: Tables, styles: dict) -> None:
    """Several methods side by side; a study of one method says so instead of repeating its errors."""
    methods = retraining_methods(tables["summary"])
    if len(methods) > 1:
        plot_method_comparison(tables["summary"], ax, styles)
    else:
        only = methods[0] if methods else "none"
        ax.figure.set_size_inches(FIGSIZE[0], 1.8)
        note(
            ax,
            f"one retraining method in this study ({only}): nothing to compare.\n"
            "List several in the config's retraining.methods\n(fixed, epoch, learned) to compare them here.",
        )


def _training_curves(fig: Figure, tables: Tables, styles: dict) -> None:
    plot_training_curves(_primary(tables, "summary"), fig, styles)


def _ecr_bands(fig: Figure, tables: Tables, styles: dict) -> None:
    if is_fitted(tables["scaling"]):
        plot_ecr_bands(_primary(tables, "ecr"), tables["scaling"], fig, styles)
    else:
        not_fitted_note(tables["scaling"], fig.add_subplot())


def _sensitivity(fig: Figure, tables: Tables, styles: dict) -> None:
    n_widths = tables["sensitivity"]["width"].nunique()
    fig.set_size_inches(max(FIGSIZE[0], 1.9 * n_widths + 1.5), 3.2)
    plot_sensitivity(tables["sensitivity"], fig)


def _mixed_frontier(fig: Figure, tables: Tables, styles: dict) -> None:
    methods = sorted(tables["mixed"]["method"].unique())
    fig.set_size_inches(FIGSIZE[0], 3.6 * len(methods))
    for i, method in enumerate(methods):
        ax = fig.add_subplot(len(methods), 1, i + 1)
        plot_mixed_frontier(tables["summary"], tables["mixed"], ax, method)
        ax.set_title(f"retraining method: {method}", fontsize=8.5)


DRAWERS: dict[str, Drawer] = {
    "error_vs_weights": _on_axes(lambda ax, t, s: plot_error_vs_weights(_primary(t, "summary"), ax, s)),
    "error_vs_memory": _on_axes(lambda ax, t, s: plot_error_vs_memory(_primary(t, "summary"), t["frontier"], ax, s)),
    "ecr_vs_width": _on_axes(lambda ax, t, s: plot_ecr_vs_width(_primary(t, "ecr"), ax, s, _n_test(t))),
    "retrain_gap": _on_axes(lambda ax, t, s: plot_retrain_gap(_primary(t, "summary"), ax, s)),
    "method_comparison": _on_axes(_method_comparison),
    "training_curves": _training_curves,
    "scaling_fit": _on_axes(_scaling(lambda ax, t, s: plot_scaling_fit(_primary(t, "summary"), t["scaling"], ax, s))),
    "ecr_bands": _ecr_bands,
    "sensitivity": _sensitivity,
    "mixed_frontier": _mixed_frontier,
    "search_progress": _on_axes(lambda ax, t, s: plot_search_progress(t["search"], ax)),
}

_unmatched = sorted(set(FIGURE_INFO) ^ set(DRAWERS))
if _unmatched:
    raise ImportError(
        f"figures without a drawer or drawers without a figure: {', '.join(_unmatched)} "
        "(qdesign.core.registry.FIGURE_INFO and qdesign.figures.catalog.DRAWERS must name the same figures)"
    )


def _styles(tables: Tables) -> dict:
    """One colour and marker per bits value over the study's uniform tables, so
    that every figure of a study agrees."""
    bits = [t["bits"] for n, t in tables.items() if n in ("summary", "ecr", "frontier") and "bits" in t.columns]
    return bits_styles(pd.concat(bits).dropna()) if bits else {}


def draw_figure(name: str, tables: Tables, styles: dict | None = None, title: str | None = None) -> Figure:
    """Draw one figure of :data:`FIGURE_INFO` from its tables. The title is
    ``<title or the study's name>: <what the figure shows>``; a drawer that
    titles its own Axes keeps that title, and the figure's goes above it."""
    info = FIGURE_INFO[name]
    missing = [t for t in info.tables if t not in tables]
    if missing:
        raise TableError(f"figure {name} needs the table{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    base = title if title is not None else (study_name(*(tables[t] for t in info.tables)) or "qdesign")
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    DRAWERS[name](fig, tables, _styles(tables) if styles is None else styles)
    heading = f"{base}: {info.title}" if base else info.title
    axes = fig.get_axes()
    if len(axes) == 1 and not axes[0].get_title():
        axes[0].set_title(heading)
    else:
        fig.suptitle(heading)
    return fig


def write_figures(
    names: Iterable[str],
    tables: Tables,
    out_dir: str | Path,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
    title: str | None = None,
) -> list[Path]:
    """Draw the named figures from ``tables`` (name -> DataFrame) and write each
    as ``out_dir/<name>.<format>``; returns the paths written. Every figure is
    drawn before any is written, and each file is written atomically."""
    names = list(names)
    formats = normalize_formats(formats)  # a bad format fails before anything is drawn
    with matplotlib.rc_context(RC):
        styles = _styles(tables)
        drawn = [(name, draw_figure(name, tables, styles, title)) for name in names]
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        for name, fig in drawn:
            paths += save_figure(fig, out_dir / name, formats, dpi)
    return paths
