"""The compiled counting of the step search (src/qdesign/quantize/_counting.c)
returns exactly what the NumPy path returns: counts, count table, prefix sums,
lower bounds and steps, bit for bit. Without a C compiler the package builds
without it; CI sets QDESIGN_REQUIRE_KERNELS=1 so that a silently missing build
fails there."""

import os

import numpy as np
import pytest
import torch

from qdesign.quantize import step_search
from qdesign.quantize.step_search import _SortedMagnitudes, l2_optimal_step

kernels = pytest.mark.skipif(step_search._counting is None, reason="the compiled counting was not built")


def test_the_compiled_counting_was_built_where_required():
    if os.environ.get("QDESIGN_REQUIRE_KERNELS") == "1":
        assert step_search._counting is not None, "qdesign.quantize._counting did not build (see setup.py)"


def _both(w, monkeypatch):
    monkeypatch.setattr(step_search, "USE_KERNELS", False)
    plain = _SortedMagnitudes(w)
    monkeypatch.setattr(step_search, "USE_KERNELS", True)
    fast = _SortedMagnitudes(w)
    assert plain._kern is None and fast._kern is not None
    return plain, fast


def _weights(kind, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=dtype)
    if kind == "ties":
        w = torch.round(w * 4) / 4
    elif kind == "outlier":
        w[0] = 1e4
    elif kind == "zeros":
        w[: n // 2] = 0.0
    elif kind == "tiny":
        w = w * 1e-36 if dtype == torch.float32 else w * 1e-300
    return w


CASES = [
    (kind, n, dtype)
    for kind in ("gaussian", "ties", "outlier", "zeros", "tiny")
    for n in (50, 5000, 200_000)
    for dtype in (torch.float32, torch.float64)
]


@kernels
@pytest.mark.parametrize("kind,n,dtype", CASES, ids=lambda c: str(c))
def test_tables_and_prefix_sums_are_numpys(kind, n, dtype, monkeypatch):
    plain, fast = _both(_weights(kind, n, dtype), monkeypatch)
    assert plain._pair.tobytes() == fast._pair.tobytes()  # prefix sums, bit for bit
    assert plain._n_bins == fast._n_bins
    if plain._n_bins:
        np.testing.assert_array_equal(plain._cum, fast._cum)
        assert plain._max_occupancy == fast._max_occupancy


@kernels
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # the NumPy path's float32 keys of 1e300
@pytest.mark.parametrize("kind,n,dtype", CASES, ids=lambda c: str(c))
def test_counts_are_searchsorted_for_every_kind_of_query(kind, n, dtype, monkeypatch):
    plain, fast = _both(_weights(kind, n, dtype), monkeypatch)
    a = plain.a.astype(np.float64)
    rng = np.random.default_rng(1)
    exact = rng.choice(a, 4000)
    queries = np.concatenate(
        [
            exact,  # magnitudes themselves, ties included, and their neighbours
            np.nextafter(exact, np.inf),
            np.nextafter(exact, -np.inf),
            rng.uniform(0, 2 * plain.max, 4000),
            [0.0, -0.0, -1.0, plain.max, 2 * plain.max, 1e300, np.inf, -np.inf, np.nan, 5e-324],
        ]
    )
    want = np.searchsorted(a, queries, side="left")
    np.testing.assert_array_equal(fast.count_below(queries), want)
    np.testing.assert_array_equal(plain.count_below(queries), want)
    grid = queries[:3000].reshape(30, 100)  # 2-D queries keep their shape
    np.testing.assert_array_equal(fast.count_below(grid), want[:3000].reshape(30, 100))


@kernels
@pytest.mark.parametrize("k", [1, 3, 127])
def test_evaluations_and_lower_bounds_are_numpys(k, monkeypatch):
    plain, fast = _both(_weights("gaussian", 100_000, torch.float32), monkeypatch)
    steps = np.geomspace(plain.max / (k + 0.5) * 1e-2, 2 * plain.max, 41)
    for a, b in zip(plain.evaluate(steps, k), fast.evaluate(steps, k)):
        assert a.tobytes() == b.tobytes()
    for s in steps[::5]:
        assert plain.evaluate_one(float(s), k) == fast.evaluate_one(float(s), k)
    lo, hi = steps[:-1], steps[1:]
    args = (lo, hi, k, plain.band_counts(lo, k), plain.band_counts(hi, k))
    # equal as numbers (a clipped zero may differ in sign, which no comparison sees)
    np.testing.assert_array_equal(plain.lower_bounds(*args), fast.lower_bounds(*args))
    narrow_hi = lo * (1 + 1e-4)  # the narrow-interval branch
    args = (lo, narrow_hi, k, plain.band_counts(lo, k), plain.band_counts(narrow_hi, k))
    np.testing.assert_array_equal(plain.lower_bounds(*args), fast.lower_bounds(*args))


@kernels
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("kind", ["gaussian", "ties", "outlier", "zeros"])
def test_steps_do_not_depend_on_the_kernels(bits, kind, monkeypatch):
    for n, dtype in [(3000, torch.float32), (300_000, torch.float32), (20_000, torch.float64)]:
        w = _weights(kind, n, dtype, seed=bits)
        monkeypatch.setattr(step_search, "USE_KERNELS", False)
        plain = l2_optimal_step(w, bits)
        monkeypatch.setattr(step_search, "USE_KERNELS", True)
        assert l2_optimal_step(w, bits).hex() == plain.hex()


@kernels
def test_bad_buffers_fail_loudly_instead_of_reading_out_of_bounds():
    kern = step_search._counting
    a = np.sort(np.abs(np.random.default_rng(0).standard_normal(100))).astype(np.float32)
    pair = np.zeros(2 * (a.size + 1))
    kern.prefix_sums(a, pair)
    with pytest.raises(TypeError, match="float32 or float64"):
        kern.prefix_sums(a.astype(np.int32), pair)
    with pytest.raises(TypeError, match="out must be"):
        kern.prefix_sums(a, pair[:-1])  # too short
    with pytest.raises(ValueError, match="contiguous"):
        kern.prefix_sums(a[::2], np.zeros(2 * (a.size + 1)))  # not contiguous
    good = np.array([0, 100], dtype=np.intp)
    out = np.empty(2)
    kern.pair_diffs(pair, good, good[::-1].copy(), out, out.copy())
    with pytest.raises(IndexError):
        kern.pair_diffs(pair, good, np.array([0, 101], dtype=np.intp), out, out.copy())
    with pytest.raises(IndexError):
        kern.range_sq(pair, np.array([-1, 0], dtype=np.intp), good, np.ones(2), out)
    with pytest.raises(TypeError, match="out must be"):
        kern.count_below(a, np.ones(3), np.empty(2, dtype=np.intp), None, 1.0, 1)
    with pytest.raises(ValueError, match="NaN"):
        kern.count_table(np.array([0.0, np.nan]), 1.0, 4, np.empty(6, dtype=np.intp))
    with pytest.raises(ValueError, match="scale"):
        kern.count_table(a, 0.0, 4, np.empty(6, dtype=np.intp))
