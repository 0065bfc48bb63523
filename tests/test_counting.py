"""The compiled counting of the step search (src/qdesign/quantize/_counting.c)
returns exactly what the NumPy path returns: counts, count table, prefix sums,
lower bounds and steps, bit for bit. Without a C compiler the package builds
without it; CI sets QDESIGN_REQUIRE_KERNELS=1 so that a silently missing build
fails there."""

import os
import sys

import numpy as np
import pytest
import torch

from qdesign.quantize import step_search
from qdesign.quantize.step_search import _SortedMagnitudes, l2_optimal_step

kernels = pytest.mark.skipif(step_search._counting is None, reason="the compiled counting was not built")


def test_the_compiled_counting_was_built_where_required():
    if os.environ.get("QDESIGN_REQUIRE_KERNELS") == "1":
        assert step_search._counting is not None, "qdesign.quantize._counting did not build (see setup.py)"
        assert step_search.POLISH_KERNEL, "the compiled polish does not sum as this NumPy does"


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


@kernels
def test_the_compiled_sum_is_numpys_for_every_length_and_kind_of_value():
    kern = step_search._counting
    rng = np.random.default_rng(5)
    for n in [0, 1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 135, 136, 255, 256, 257, 1023, 1024, 1025, 5000]:
        for x in (
            rng.standard_normal(n),
            rng.standard_normal(n) * 10.0 ** rng.uniform(-300, 300, n),
            np.cumsum(rng.uniform(0, 1, n)),  # prefix-sum-like: growing, all positive
            -np.zeros(n),  # signed zeros: NumPy adds them to +0.0
        ):
            assert kern.sum(x).hex() == float(x.sum()).hex(), n
    assert np.isnan(kern.sum(np.array([1.0, np.nan, 2.0])))
    with pytest.raises(TypeError):
        kern.sum(np.arange(3))  # int64, not float64


def test_a_different_summation_order_switches_the_compiled_polish_off(monkeypatch):
    class PlainOrder:  # left to right: differs from NumPy's pairwise sums from 9 items on
        @staticmethod
        def sum(x):
            total = 0.0
            for v in x:
                total += float(v)
            return total

    monkeypatch.setattr(step_search, "_counting", PlainOrder)
    assert step_search._kernel_sums_are_numpys() is False


def test_a_build_older_than_the_compiled_polish_leaves_it_off(monkeypatch):
    class Stale:  # the counting kernels of the fifth pass: no sum, no polish
        count_below = prefix_sums = count_table = pair_diffs = range_sq = None

    monkeypatch.setattr(step_search, "_counting", Stale)
    assert step_search._kernel_sums_are_numpys() is False


def _polish_both(sm, steps, k, max_iter, monkeypatch):
    """_lloyd_polish and _lloyd_polish_many from each start, NumPy and compiled."""
    starts = [sm.evaluate_one(float(s), k) for s in steps]
    out = {}
    for compiled in (False, True):
        monkeypatch.setattr(step_search, "POLISH_KERNEL", compiled)
        assert sm.polish_compiled(k) is compiled
        single = [step_search._lloyd_polish(sm, float(s), k, max_iter, start=st) for s, st in zip(steps, starts)]
        many = step_search._lloyd_polish_many(sm, steps, starts, k, max_iter)
        out[compiled] = [(float(a).hex(), float(b).hex()) for a, b in single + many]
    return out


@kernels
@pytest.mark.parametrize("k", [1, 3, 7, 127])
@pytest.mark.parametrize("kind,n,dtype", [c for c in CASES if c[1] != 50], ids=lambda c: str(c))
def test_the_compiled_lloyd_polish_takes_numpys_steps(k, kind, n, dtype, monkeypatch):
    sm = _SortedMagnitudes(_weights(kind, n, dtype, seed=k))
    assert sm._kern is not None
    if sm.max == 0.0:
        return
    rng = np.random.default_rng(k)
    steps = np.concatenate([rng.uniform(0.01, 2.5, 12) * sm.max / (k + 0.5), [2.5 * sm.max, 1e-30]])
    for max_iter in (0, 1, 3, step_search._POLISH_ITER):
        out = _polish_both(sm, steps, k, max_iter, monkeypatch)
        assert out[True] == out[False]


@kernels
def test_the_compiled_polish_ends_where_either_python_loop_ends_on_nan(monkeypatch):
    sm = _SortedMagnitudes(_weights("gaussian", 20_000, torch.float32))
    k = 7
    good = sm.evaluate_one(0.3, k)
    starts = [(good[0], float("nan"), good[2]), (good[0], good[1], float("nan")), (float("nan"), *good[1:])]
    for start in starts:
        results = []
        for compiled in (False, True):
            monkeypatch.setattr(step_search, "POLISH_KERNEL", compiled)
            results.append(
                (
                    str(step_search._lloyd_polish(sm, 0.3, k, start=start)),
                    str(step_search._lloyd_polish_many(sm, [0.3], [start], k)),
                )
            )
        assert results[0] == results[1], start


@kernels
def test_the_compiled_polish_is_not_used_where_its_integer_sums_could_round(monkeypatch):
    sm = _SortedMagnitudes(_weights("gaussian", 5000, torch.float32))
    assert sm.polish_compiled(127)
    monkeypatch.setattr(sm, "n", 2**53 // (127 * 127) + 1)
    assert not sm.polish_compiled(127)


@kernels
def test_bad_polish_arguments_fail_loudly():
    kern = step_search._counting
    sm = _SortedMagnitudes(_weights("gaussian", 5000, torch.float32))
    one = np.ones(2)
    with pytest.raises(TypeError, match="errs must be"):
        kern.polish(sm.a, sm._pair, *sm._table(), 3, one.copy(), np.ones(1), one.copy(), one.copy(), 5)
    with pytest.raises(TypeError, match="pair must be"):
        kern.polish(sm.a, sm._pair[:-2], *sm._table(), 3, one.copy(), one.copy(), one.copy(), one.copy(), 5)
    with pytest.raises(TypeError, match="cum must be"):  # a table shorter than its bins
        kern.polish(sm.a, sm._pair, sm._cum[:-1], sm._scale, sm._n_bins, 3, *(one.copy() for _ in range(4)), 5)
    with pytest.raises(ValueError, match="finite scale"):
        kern.count_below(sm.a, one, np.empty(2, dtype=np.intp), sm._cum, float("inf"), sm._n_bins)
    with pytest.raises(ValueError, match="k <="):
        kern.polish(sm.a, sm._pair, *sm._table(), 0, one.copy(), one.copy(), one.copy(), one.copy(), 5)
    with pytest.raises(ValueError):  # read-only steps: the polish writes them
        ro = one.copy()
        ro.flags.writeable = False
        kern.polish(sm.a, sm._pair, *sm._table(), 3, ro, one.copy(), one.copy(), one.copy(), 5)


@kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_compiled_polish_evaluates_a_step_exactly_where_queries_hit_magnitudes(dtype, monkeypatch):
    # magnitudes at exactly the queries (j + 1/2) * step of a few steps: a
    # count (and so the error) changes if a query is computed one ulp off
    k = 31
    rng = np.random.default_rng(3)
    steps = rng.uniform(0.01, 0.05, 6)
    on_queries = (steps[:, None] * (np.arange(k) + 0.5)[None, :]).ravel()
    w = torch.from_numpy(np.concatenate([on_queries, rng.uniform(0, 1.6, 3000)])).to(dtype)
    sm = _SortedMagnitudes(w)
    for step in steps:
        # a start whose S1 / S2 is the step itself: one polish iteration evaluates it
        start = (np.inf, float(step), 1.0)
        want = step_search._lloyd_polish(sm, 1.0, k, 1, start=start)
        monkeypatch.setattr(step_search, "POLISH_KERNEL", False)
        plain = step_search._lloyd_polish(sm, 1.0, k, 1, start=start)
        monkeypatch.setattr(step_search, "POLISH_KERNEL", True)
        assert want[0] == step and want[1] == plain[1] == sm.evaluate_one(float(step), k)[0]


@kernels
def test_failed_calls_release_every_buffer_they_held():
    # a held buffer keeps a reference to its array: the counts must come back
    kern = step_search._counting
    sm = _SortedMagnitudes(_weights("gaussian", 5000, torch.float32))
    a, pair, cum = sm.a.copy(), sm._pair.copy(), sm._cum.copy()
    one = np.ones(2)
    bad_calls = [
        lambda: kern.count_below(a, one, np.empty(2, dtype=np.intp), cum[:-1], sm._scale, sm._n_bins),
        lambda: kern.count_below(a, one, np.empty(2, dtype=np.intp), cum, np.inf, sm._n_bins),
        lambda: kern.polish(a, pair, cum[:-1], sm._scale, sm._n_bins, 3, *(one.copy() for _ in range(4)), 5),
        lambda: kern.polish(a, pair[:-2], cum, sm._scale, sm._n_bins, 3, *(one.copy() for _ in range(4)), 5),
        lambda: kern.prefix_sums(a, pair[:-1]),
        lambda: kern.count_table(a, sm._scale, sm._n_bins, cum[:-1]),
        lambda: kern.pair_diffs(pair, np.array([0, 10**6], dtype=np.intp), np.array([0, 1], dtype=np.intp), one, one),
        lambda: kern.range_sq(pair, np.array([0, 1], dtype=np.intp), np.array([0, 1], dtype=np.intp), one, one[:1]),
    ]
    before = [sys.getrefcount(x) for x in (a, pair, cum)]
    for call in bad_calls:
        with pytest.raises((TypeError, ValueError, IndexError)):
            call()
    assert [sys.getrefcount(x) for x in (a, pair, cum)] == before
