"""Tests for qdesign.figures.study on synthetic but realistic tables (no torch needed)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from qdesign.core.registry import FIGURE_INFO, FIGURES
from qdesign.figures import style
from qdesign.figures.catalog import write_figures
from qdesign.figures.study import (
    plot_ecr_vs_width,
    plot_error_vs_memory,
    plot_error_vs_weights,
    plot_retrain_gap,
)

from .study_tables import WIDTHS, fcdnn_weights, synthetic_ecr, synthetic_frontier, synthetic_summary

TABLE_FIGURES = [n for n in FIGURES if "scaling" not in FIGURE_INFO[n].tables]


def figures(summary, ecr, frontier, out_dir, **kw):
    """The study figures drawn from the three aggregate tables (the law's are in test_scaling)."""
    return write_figures(TABLE_FIGURES, {"summary": summary, "ecr": ecr, "frontier": frontier}, out_dir, **kw)


@pytest.fixture
def tables():
    s = synthetic_summary()
    e = synthetic_ecr(s)
    return s, e, synthetic_frontier(e)


def _ax():
    return Figure().add_subplot()


# --------------------------------------------------------------------------


def test_synthetic_ecr_has_bounds(tables):
    _, e, _ = tables
    assert set(e["ecr_bound"].dropna()) == {"upper", "lower"}


def test_figures_writes_png_and_pdf(tables, tmp_path):
    s, e, f = tables
    paths = figures(s, e, f, tmp_path / "figs", formats=("png", "pdf"), dpi=80)
    expected = {tmp_path / "figs" / f"{n}.{fmt}" for n in TABLE_FIGURES for fmt in ("png", "pdf")}
    assert set(paths) == expected and len(paths) == 2 * len(TABLE_FIGURES)
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000
        if p.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert data[:5] == b"%PDF-"
    # Only the final files: no temporaries left behind.
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(p.name for p in expected)


def test_figures_is_deterministic_and_titled(tables, tmp_path):
    s, e, f = tables
    a = figures(s, e, f, tmp_path / "a", formats=["pdf"])
    a2 = figures(s, e, f, tmp_path / "a2", formats=["pdf"])
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in a2]
    figures(s, e, f, tmp_path / "s", formats=["svg"])
    figures(s, e, f, tmp_path / "t", formats=["svg"], title="My study")
    svg_s = (tmp_path / "s" / "ecr_vs_width.svg").read_text()
    svg_t = (tmp_path / "t" / "ecr_vs_width.svg").read_text()
    assert "mnist_fcdnn" in svg_s and "My study" in svg_t and "mnist_fcdnn" not in svg_t


def test_figures_edge_cases(tmp_path):
    """Single seed, single width, all-NaN direct errors for a bits value, bounds only."""
    s = synthetic_summary(widths=(64,), seeds=(0,))
    s.loc[s["bits"] == 3, "direct_test_error"] = np.nan
    e = synthetic_ecr(s)
    e.loc[e["bits"] == 2, "ecr_bound"] = "upper"
    e.loc[e["bits"] == 8, "ecr_bound"] = "lower"
    f = synthetic_frontier(e)
    paths = figures(s, e, f, tmp_path, formats=("png",))
    assert len(paths) == len(TABLE_FIGURES) and all(p.stat().st_size > 0 for p in paths)


def test_no_pyplot_figures_leak(tables, tmp_path):
    s, e, f = tables
    figures(s, e, f, tmp_path, formats=("png",), dpi=50)
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_plots_module_imports_neither_torch_nor_pyplot():
    code = (
        "import sys, qdesign.figures.study; "
        "assert 'torch' not in sys.modules and 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------


def _legend_texts(ax):
    leg = ax.get_legend()
    assert leg is not None
    return [t.get_text() for t in leg.get_texts()]


def test_error_vs_weights_axes(tables):
    s, _, _ = tables
    ax = plot_error_vs_weights(s, _ax())
    assert ax.get_xscale() == "log"
    assert "weights" in ax.get_xlabel().lower() and "%" in ax.get_ylabel()
    texts = _legend_texts(ax)
    assert texts[:5] == ["2 bits", "3 bits", "4 bits", "8 bits", "float (32 bits)"]
    assert any("min–max" in t for t in texts)
    # Float line: black, seed means in percent, x = n_weights.
    float_line = [l for l in ax.lines if l.get_label() == "float (32 bits)"][0]
    assert float_line.get_color() == "black"
    exp = s[s["bits"] == 32].groupby("width")["test_error"].mean().to_numpy() * 100
    np.testing.assert_allclose(float_line.get_ydata(), exp)
    np.testing.assert_allclose(float_line.get_xdata(), [fcdnn_weights(w) for w in WIDTHS])


def test_error_vs_memory_axes(tables):
    s, _, f = tables
    ax = plot_error_vs_memory(s, f, _ax())
    assert ax.get_xscale() == "log"
    assert "memory" in ax.get_xlabel().lower() and "KiB" in ax.get_xlabel()
    assert "%" in ax.get_ylabel()
    texts = _legend_texts(ax)
    assert any(t.startswith("Pareto frontier") and "± 1 SE" in t for t in texts) and "float (32 bits)" in texts
    step = [line for line in ax.lines if line.get_gid() == "frontier"][0]
    pareto = f[f["kind"] == "pareto"].sort_values("memory_bits")
    np.testing.assert_allclose(np.unique(step.get_xdata()), np.unique(pareto["memory_bits"] / 8192))
    assert len(ax.texts) >= 1  # annotated frontier points
    # the frontier's uncertainty: one SE over seeds per point (error_std / sqrt(2 seeds))
    bars = [c for c in ax.collections if c.get_gid() == "frontier-se"][0]
    half = [abs(seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments()]
    np.testing.assert_allclose(sorted(half), sorted(100 * pareto["error_std"] / np.sqrt(2)))


def test_error_vs_memory_uses_total_when_frontier_does(tables):
    s, e, _ = tables
    cells = s.groupby(["width", "bits"])[["memory_bits_total", "test_error"]].mean().reset_index()
    f = pd.DataFrame(
        {
            "kind": "pareto",
            "width": cells["width"],
            "bits": cells["bits"],
            "memory_bits": cells["memory_bits_total"],
            "error": cells["test_error"],
        }
    )
    ax = plot_error_vs_memory(s, f.head(3), _ax())
    assert ax.get_xlabel().startswith("Total memory")


def test_ecr_vs_width_axes(tables):
    _, e, _ = tables
    ax = plot_ecr_vs_width(e, _ax())
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert [int(t) for t in ax.get_xticks()] == list(WIDTHS)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(w) for w in WIDTHS]
    assert "width" in ax.get_xlabel().lower() and "compression" in ax.get_ylabel().lower()
    texts = _legend_texts(ax)
    assert "float (ECR = 1)" in texts and "float (32 bits)" not in texts
    assert any("upper bound" in t for t in texts) and any("lower bound" in t for t in texts)
    hline = [l for l in ax.lines if l.get_linestyle() == "--"]
    assert hline and all(y == 1.0 for y in hline[0].get_ydata())
    # Open triangle markers for bounds.
    assert {l.get_marker() for l in ax.lines if l.get_markerfacecolor() == "white"} == {"v", "^"}


def test_ecr_vs_width_log_y_only_for_wide_ranges():
    base = dict(model="fcdnn", ecr_bound=None)
    narrow = pd.DataFrame([dict(base, width=w, bits=4, ecr=1 + w / 100) for w in (8, 16, 32)])
    wide = pd.DataFrame([dict(base, width=w, bits=2, ecr=w / 4) for w in (8, 64, 512)])
    assert plot_ecr_vs_width(narrow, _ax()).get_yscale() == "linear"
    assert plot_ecr_vs_width(wide, _ax()).get_yscale() == "log"


def test_retrain_gap_values():
    rows = [
        # width, bits, seed, test_error, direct_test_error
        (16, 32, 0, 0.10, np.nan),
        (16, 32, 1, 0.20, np.nan),
        (16, 2, 0, 0.15, 0.40),  # retrained +5 pp, direct +30 pp
        (16, 2, 1, 0.21, 0.30),  # retrained +1 pp, direct +10 pp
        (32, 32, 0, 0.05, np.nan),
        (32, 2, 0, 0.06, 0.09),  # +1, +4
        (32, 2, 1, 0.50, 0.90),  # no float for seed 1 at width 32: dropped
        (32, 4, 0, 0.04, np.nan),  # retrained -1, no direct error at all
    ]
    s = pd.DataFrame(rows, columns=["width", "bits", "seed", "test_error", "direct_test_error"])
    ax = plot_retrain_gap(s, _ax())
    by_gid = {l.get_gid(): l for l in ax.lines if l.get_gid()}
    assert set(by_gid) == {"retrained-2", "direct-2", "retrained-4"}
    np.testing.assert_allclose(by_gid["retrained-2"].get_xdata(), [16, 32])
    np.testing.assert_allclose(by_gid["retrained-2"].get_ydata(), [3.0, 1.0])
    np.testing.assert_allclose(by_gid["direct-2"].get_ydata(), [20.0, 4.0])
    np.testing.assert_allclose(by_gid["retrained-4"].get_ydata(), [-1.0])
    assert by_gid["direct-2"].get_linestyle() == "--" and by_gid["retrained-2"].get_linestyle() == "-"
    assert by_gid["direct-2"].get_color() == by_gid["retrained-2"].get_color()
    assert any(l.get_ydata()[0] == 0 and l.get_linestyle() == "-" for l in ax.lines if not l.get_gid())
    assert ax.get_xscale() == "log"
    assert "percentage points" in ax.get_ylabel() and ax.get_xlabel()
    texts = _legend_texts(ax)
    assert "2 bits" in texts and "after retraining" in texts


def test_colours_consistent_across_figures(tables):
    s, e, f = tables
    styles = style.bits_styles(s["bits"])
    ax1 = plot_error_vs_weights(s, _ax(), styles)
    ax2 = plot_retrain_gap(s, _ax(), styles)
    c1 = {l.get_label(): l.get_color() for l in ax1.lines if not l.get_label().startswith("_")}
    c2 = {l.get_gid(): l.get_color() for l in ax2.lines if l.get_gid()}
    for b in (2, 3, 4, 8):
        assert np.allclose(c1[f"{b} bits"], c2[f"retrained-{b}"])
    assert styles[32]["color"] == "black"
    assert len({tuple(styles[b]["color"]) for b in (2, 3, 4, 8)}) == 4


@pytest.mark.parametrize(
    "call, column",
    [
        (lambda s, e, f: plot_error_vs_weights(s.drop(columns="n_weights"), _ax()), "n_weights"),
        (lambda s, e, f: plot_error_vs_memory(s, f.drop(columns="kind"), _ax()), "kind"),
        (lambda s, e, f: plot_ecr_vs_width(e.drop(columns="ecr_bound"), _ax()), "ecr_bound"),
        (lambda s, e, f: plot_retrain_gap(s.drop(columns="direct_test_error"), _ax()), "direct_test_error"),
        (lambda s, e, f: figures(s.drop(columns="seed"), e, f, "/nonexistent/x"), "seed"),
    ],
)
def test_missing_columns(tables, call, column):
    s, e, f = tables
    with pytest.raises(ValueError, match=f"missing required column.*{column}") as info:
        call(s, e, f)
    assert "\n" not in str(info.value)


def test_bad_format_leaves_nothing(tables, tmp_path):
    s, e, f = tables
    with pytest.raises(ValueError):
        figures(s, e, f, tmp_path, formats=("nosuchformat",))
    assert list(tmp_path.iterdir()) == []


def test_method_comparison_draws_the_best_method_band():
    """Several methods: one pale band per quantized word length that follows the
    lowest seed-mean error over the methods at each width; one method: none."""
    from qdesign.figures.study import plot_method_comparison  # noqa: PLC0415

    base = synthetic_summary(bits=(2, 4, 32))
    quant = base[base["bits"] < 32]
    slower = quant.assign(method="epoch", test_error=quant["test_error"] + 0.01)
    faster = quant.assign(method="learned", test_error=quant["test_error"] - 0.005)
    df = pd.concat([base.assign(method=np.where(base["bits"] < 32, "fixed", None)), slower, faster])
    ax = Figure().subplots()
    plot_method_comparison(df, ax)
    bands = [ln for ln in ax.get_lines() if ln.get_linewidth() == 6]
    assert len(bands) == 2
    best = faster.groupby(["bits", "width"])["test_error"].mean()
    matched = set()
    for band in bands:
        x, y = band.get_data()
        matched |= {b for b in (2, 4) if np.allclose(y, 100 * best.loc[b].reindex(x).to_numpy())}
    assert matched == {2, 4}
    assert "best method (per bits)" in [t.get_text() for t in ax.get_legend().get_texts()]
    one = Figure().subplots()
    plot_method_comparison(base.assign(method=np.where(base["bits"] < 32, "fixed", None)), one)
    assert not [ln for ln in one.get_lines() if ln.get_linewidth() == 6]
