"""The figure kit: one style for every figure of the project, and the one way to save.

Paper-size text, one colour and marker per bits value (viridis by bits, float
in black) so that a reader can follow "4 bits" from one figure to the next,
axis helpers (log axes labelled where the data are, width axes whose ticks are
the trained widths), the legend outside the axes, and :func:`save_figure`,
which writes every format atomically with fixed metadata so that unchanged
tables give identical files.

Only matplotlib's object API (no pyplot, no torch): figures built from
:class:`matplotlib.figure.Figure` need no backend and are not registered
globally, so they cannot leak between calls or workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from ..core.constants import FLOAT_BITS
from ..core.errors import TableError
from ..core.io import atomic_path
from ..core.precision import is_float_bits

FIGSIZE = (6.4, 4.2)

SUPPORTED_FORMATS = frozenset(FigureCanvasBase.get_supported_filetypes())

# Paper-size text: ~9 pt body at 6.4 in wide.  Applied only inside figures().
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "svg.fonttype": "none",
    "svg.hashsalt": "qdesign",  # stable SVG ids, so reruns give identical files
}

# Drop timestamps so that re-plotting unchanged tables gives identical files.
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}

# No triangles here: open triangles mean "ECR bound" in the ECR figure.
MARKERS = ("o", "D", "P", "X", "h", "p", "*", "8", "H", "d")
FLOAT_MARKER = "s"


def require(df: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TableError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(f"{name} is missing required column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")


def bits_label(bits: int) -> str:
    return f"float ({FLOAT_BITS} bits)" if is_float_bits(bits) else f"{bits} bits"


def bits_styles(bits: Iterable) -> dict[int, dict]:
    """Colour, marker and label for every bits value, float in black.

    Quantized bits take evenly spaced colours of viridis (stopping short of its
    pale yellow end, which vanishes on white), ordered by bits so that the
    eye reads "more bits" as a direction.  Compute it once from all tables and
    pass it to every plot to keep figures consistent.
    """
    values = sorted({int(b) for b in pd.Series(list(bits), dtype=float).dropna()})
    quant = [b for b in values if not is_float_bits(b)]
    cmap = matplotlib.colormaps["viridis"]
    positions = np.linspace(0.0, 0.85, len(quant)) if len(quant) > 1 else [0.35]
    styles = {
        b: {"color": cmap(float(p)), "marker": MARKERS[i % len(MARKERS)], "label": bits_label(b)}
        for i, (b, p) in enumerate(zip(quant, positions))
    }
    for b in values:
        if is_float_bits(b):
            styles[b] = {"color": "black", "marker": FLOAT_MARKER, "label": bits_label(b)}
    return styles


def styles_for(styles: Mapping | None, bits: Iterable) -> dict[int, dict]:
    bits = list(bits)
    if styles is not None and all(int(b) in styles for b in bits):
        return dict(styles)
    return bits_styles(bits)


def bits_order(bits: Iterable) -> list[int]:
    """Quantized bits ascending, then float: the legend order of every figure."""
    return sorted({int(b) for b in bits}, key=lambda b: (is_float_bits(b), b))


def width_label(df: pd.DataFrame) -> str:
    models = set(df["model"].dropna().astype(str).str.lower()) if "model" in df.columns else set()
    if models == {"fcdnn"}:
        return "Width (units per hidden layer)"
    if models == {"cnn"}:
        return "Width (feature maps in first conv block)"
    return "Width (units per hidden layer / first-block feature maps)"


def width_axis(ax, widths) -> None:
    """log2 x axis whose ticks are exactly the widths trained."""
    widths = sorted({int(w) for w in widths if np.isfinite(w) and w > 0})
    ax.set_xscale("log", base=2)
    if not widths:
        return
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.xaxis.set_minor_locator(NullLocator())
    lo, hi = widths[0], widths[-1]
    pad = 2**0.25  # a quarter octave, so end markers are not clipped
    ax.set_xlim(lo / pad, hi * pad)


def fmt_g(value, _pos=None) -> str:
    return f"{value:g}"


def fmt_si(value, _pos=None) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def log_x(ax, values) -> None:
    """Log x axis labelled where the data are: over less than three decades,
    1-2-5 major ticks with short labels (2k, 5k, 10k) instead of matplotlib's
    decades (which leave two or three labels, or colliding minor ones)."""
    ax.set_xscale("log")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() < 1000:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(fmt_si))
        ax.xaxis.set_minor_formatter(NullFormatter())


def maybe_log_y(ax, values, ratio: float = 10.0) -> bool:
    """Use log y when positive values span more than ``ratio``; plain numbers as labels."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() <= 0 or v.max() / v.min() <= ratio:
        return False
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(fmt_g))
    ax.yaxis.set_minor_formatter(NullFormatter())
    return True


def legend(ax, handles=None, **kw):
    """Legend outside the axes on the right: it can never hide data."""
    kw = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0, "frameon": False, **kw}
    if handles is None:
        return ax.legend(**kw)
    return ax.legend(handles=handles, **kw)


def study_name(*tables: pd.DataFrame) -> str | None:
    for df in tables:
        if isinstance(df, pd.DataFrame) and "study" in df.columns:
            names = [str(s) for s in pd.unique(df["study"].dropna())]
            if names:
                return ", ".join(names)
    return None


def seed_stats(summary: pd.DataFrame, x_col: str) -> pd.DataFrame:
    """Per (bits, width): mean x, and mean/min/max/count of test error over seeds."""
    g = summary.groupby(["bits", "width"], sort=True)
    out = g.agg(
        x=(x_col, "mean"),
        mean=("test_error", "mean"),
        lo=("test_error", "min"),
        hi=("test_error", "max"),
        n=("test_error", "count"),
    ).reset_index()
    return out[out["n"] > 0]


def normalize_formats(formats: Sequence[str] | str) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    out = []
    for f in formats:
        f = str(f).lower().lstrip(".")
        if f not in SUPPORTED_FORMATS:
            raise ValueError(f"unsupported figure format {f!r}; use one of {', '.join(sorted(SUPPORTED_FORMATS))}")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError("formats must name at least one file format (e.g. png, pdf)")
    return out


def plain_log_axis(axis) -> None:
    """1-2-5 major ticks on a log axis, labelled as plain numbers (2, 5, 10, 20)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(fmt_g))
    axis.set_minor_formatter(NullFormatter())


def log_ticks(axis, values) -> None:
    """Labelled ticks on a log axis where the data are: 1-2-5 over several
    decades, 1-2-3-5 over one or two, every integer step (1.5 too) within a
    factor of 4, so a 1.4-7% range reads 1.5, 2, 3, 4, 5, 6, 7 and not just 2, 5."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    span = v.max() / v.min() if v.size else 100.0
    if span < 4:
        subs = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    elif span < 30:
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
    else:
        subs = (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(fmt_g))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(1.0, 10.0)))
    axis.set_minor_formatter(NullFormatter())


KIB = 8 * 1024
"""Bits per KiB: every memory axis and table of the project is in KiB."""


def memory_axis(ax, kib, label: str = "Weight memory") -> None:
    """Log x axis of memory in KiB, ticks labelled where the data are."""
    ax.set_xscale("log")
    log_ticks(ax.xaxis, kib)
    ax.set_xlabel(f"{label} (KiB, log scale)")


def note(ax, text: str) -> None:
    """A figure that has nothing to draw says why, in the middle of its axes."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def se(std, n):
    """Standard error of a mean over ``n`` seeds from their std (0 for one seed)."""
    n = np.asarray(n, float)
    out = np.asarray(std, float) / np.sqrt(np.where(n > 0, n, np.nan))
    return np.where(np.isfinite(out), out, 0.0)


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str], dpi: int) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for every format, each atomically
    (temporary name, then rename: an interrupted run leaves no truncated
    figure), readable by everyone (0644), with no timestamp in the file.
    Returns the paths; the figure is cleared afterwards."""
    stem = Path(stem)
    out = []
    for fmt in normalize_formats(formats):
        dest = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=METADATA.get(fmt))
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; figures are for sharing
        out.append(dest)
    fig.clear()  # drop artists now rather than at garbage collection
    return out
