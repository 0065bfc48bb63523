"""The per-layer L2-optimal step: the step that minimises the squared
quantization error of one tensor, found globally (branch and bound over the
step axis with prefix sums; see ``docs/method.md`` §2 for the algorithm and its
guarantee). Step *choice* lives here; the quantizer itself is
:mod:`qdesign.quantize.primitives`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .primitives import check_bits, max_level

try:  # the optional compiled counting (setup.py); exact, so only speed depends on it
    from . import _counting
except ImportError:  # built without a C compiler: NumPy does the same counting
    _counting = None

#: Use the compiled counting where it was built (tests switch it off to check
#: that both paths return the same steps bit for bit).
USE_KERNELS = True


def _kernel_sums_are_numpys() -> bool:
    """Whether the compiled Lloyd polish sums as this NumPy sums (its order of
    summation is NumPy's own, not a documented contract): checked once, on
    sums of every length up to 300 and a few longer ones, where a different
    order would show. False too for a build older than the polish (a
    checkout updated without rebuilding: ``pip install -e .`` rebuilds)."""
    if not (hasattr(_counting, "sum") and hasattr(_counting, "polish")):
        return False
    rng = np.random.default_rng(20261203)
    for n in [*range(1, 301), 511, 1000, 4097]:
        x = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)
        if _counting.sum(x) != x.sum():
            return False
    return True


#: The Lloyd polish runs compiled only where its sums are NumPy's, bit for bit.
POLISH_KERNEL = _counting is not None and _kernel_sums_are_numpys()

_BINNED_MIN_N = 4096  # magnitudes below this: plain binary searches only
_BINNED_MIN_QUERIES = 2048  # fewer queries: one np.searchsorted is as fast
_BIN_OCCUPANCY = 4  # mean magnitudes per bin of count_below's table


class _SortedMagnitudes:
    """|w| sorted ascending, with prefix sums, so that the squared error of any
    step, and a lower bound of it over a whole interval of steps, costs
    O(K log N) instead of O(N).

    The magnitudes stay in the tensor's own precision (float32 mostly: half the
    memory, so half the cache misses of the binary searches, which dominate);
    the prefix sums are float64. Counts are exact whatever the precision
    (:meth:`_keys`)."""

    def __init__(self, w: torch.Tensor):
        flat = w.detach().reshape(-1).cpu()
        if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.to(torch.float64 if not flat.is_floating_point() else torch.float32)
        # NumPy's abs and sort (torch's abs allocates through its thread pool;
        # NumPy's vectorised float32 sort is about 3x faster than torch.sort),
        # into one buffer with a trailing +inf, the sentinel of count_below
        src = flat.numpy()
        n = src.size
        buf = np.empty(n + 1, dtype=src.dtype)
        np.abs(src, out=buf[:n])
        buf[:n].sort()
        buf[n] = np.inf
        a = buf[:n]
        self.a, self._a_pad, self.n = a, buf, n
        self._kern = _counting if USE_KERNELS else None
        # prefix sums of |w| and w**2 in float64 (each element widened exactly
        # first), both in one complex cumsum: its real and imaginary parts are
        # two independent sequential float64 sums, bit for bit the two plain
        # cumsums, in one pass (1.5x faster; the sums are latency-bound)
        pair = np.empty(n + 1, dtype=np.complex128)
        if self._kern is not None:  # the same sums in the same order, in one compiled pass
            self._kern.prefix_sums(a, pair.view(np.float64))
        else:
            pair[0] = 0.0
            parts = pair[1:].view(np.float64).reshape(n, 2)
            parts[:, 0] = a
            np.multiply(a, a, dtype=np.float64, out=parts[:, 1])
            np.cumsum(pair[1:], out=pair[1:])
        self.p1, self.p2 = pair.real, pair.imag  # strided views, side by side in memory
        self._pair = pair.view(np.float64)  # the same, interleaved, for the compiled kernels
        self.total_sq = float(self.p2[-1])
        self.max = float(a[-1]) if n else 0.0
        self._k = None
        self._build_bins()

    def _keys(self, x) -> np.ndarray:
        """Query values in the magnitudes' precision with the same counts below:
        for float32 magnitudes, the smallest float32 >= x (a float32 m is below x
        exactly when it is below that value)."""
        x = np.asarray(x, dtype=np.float64)
        if self.a.dtype == np.float64:
            return x
        x32 = x.astype(self.a.dtype)
        np.nextafter(x32, np.inf, out=x32, where=x32 < x)
        return x32

    def _build_bins(self) -> None:
        """The table of :meth:`count_below`: ``cum[b]`` magnitudes lie in bins
        below ``b``, bin ``f(v) = floor(min(v * scale, n_bins))``. As ``f`` is
        monotone, the count of magnitudes below any ``v >= 0`` lies in
        ``[cum[f(v)], cum[f(v) + 1]]``: an exact bracket, whatever the rounding
        (``f`` is computed in float64 for magnitudes and queries alike)."""
        self._n_bins = 0
        if self.n < _BINNED_MIN_N or not (0.0 < self.max < math.inf):
            return
        n_bins = self.n // _BIN_OCCUPANCY
        scale = n_bins / self.max
        if not 0.0 < scale < math.inf:
            return
        self._scale, self._n_bins = scale, n_bins
        if self._kern is not None:
            self._cum = np.empty(n_bins + 2, dtype=np.intp)
            self._max_occupancy = self._kern.count_table(self.a, scale, n_bins, self._cum)
            return
        self._cum = np.zeros(n_bins + 2, dtype=np.intp)
        np.cumsum(np.bincount(self._bin_of(self.a), minlength=n_bins + 1), out=self._cum[1:])
        self._max_occupancy = int(np.diff(self._cum).max())

    def _table(self):
        """(cum, scale, n_bins): the count table as the compiled kernels take it
        (cum None: no table, plain binary searches)."""
        return (self._cum, self._scale, self._n_bins) if self._n_bins else (None, 1.0, 1)

    def polish_compiled(self, k: int) -> bool:
        """Whether :func:`_lloyd_polish` may run compiled for this tensor: the
        kernels are on, their sums are NumPy's, and S2 = k^2 n - ... stays an
        integer below 2**53 (exact in a double, as in Python)."""
        return self._kern is not None and POLISH_KERNEL and k * k * self.n < 2**53

    def polish(self, steps, starts, k: int, max_iter: int):
        """The compiled Lloyd polish of several starts ((E, S1, S2) each), each
        run step for step :func:`_lloyd_polish`. Returns the final steps and
        errors."""
        step = np.array(steps, dtype=np.float64)
        err, s1, s2 = (np.array([s[i] for s in starts], dtype=np.float64) for i in range(3))
        self._kern.polish(self.a, self._pair, *self._table(), k, step, err, s1, s2, max_iter)
        return step, err

    def _bin_of(self, v: np.ndarray) -> np.ndarray:
        b = np.multiply(v, self._scale, dtype=np.float64)
        np.clip(b, 0.0, self._n_bins, out=b)
        return b.astype(np.intp)  # truncation = floor: b >= 0

    def count_below(self, x) -> np.ndarray:
        """Number of magnitudes strictly below each ``x``: exactly
        ``np.searchsorted(self.a, x, side="left")``. For many queries, a few
        vectorised bisection steps inside the bracket of each query's bin
        instead of one cache-missing binary search over all N magnitudes each
        (about 2x faster at 10^4 queries into 10^6 magnitudes)."""
        v = np.asarray(x, dtype=np.float64)
        if self._kern is not None:  # the same counts: one compiled search per query, in its bin
            v = np.ascontiguousarray(v)
            out = np.empty(v.shape, dtype=np.intp)
            self._kern.count_below(self.a, v, out, *self._table())
            return out
        if self._n_bins == 0 or v.size < _BINNED_MIN_QUERIES or not (np.isfinite(v).all() and v.min() >= 0.0):
            return np.searchsorted(self.a, self._keys(v), side="left")
        flat = v.ravel()  # float32 magnitudes compare exactly with float64 queries
        b = self._bin_of(flat)
        base = self._cum[b]
        length = self._cum[b + 1] - base
        a = self._a_pad
        # branchless lower bound over a[base : base + length]; lengths of 1 stay put
        for _ in range(max(0, (self._max_occupancy - 1).bit_length())):
            half = length >> 1
            np.add(base, half, out=base, where=a[base + half] < flat)
            length -= half
        # a[base] < v moves past the last candidate; the sentinel a[n] = inf never does
        base += a[base] < flat
        return base.reshape(v.shape)

    def _constants(self, k: int) -> None:
        if self._k != k:
            self._k = k
            self._half = np.arange(k, dtype=np.float64) + 0.5
            self._odd = 2 * np.arange(k, dtype=np.int64) + 1

    def evaluate_one(self, step: float, k: int) -> tuple[float, float, float]:
        """:meth:`evaluate` of a single step, bit for bit, in a handful of NumPy
        calls (the Lloyd polish makes hundreds of these one after another)."""
        self._constants(k)
        x = step * self._half
        idx = self.count_below(x) if self._kern is not None else np.searchsorted(self.a, self._keys(x), side="left")
        s1 = float(k * self.p1[self.n] - self.p1[idx].sum())
        # S2 is an integer below 2**53: exact in any order of summation
        s2 = float(k * k * self.n - int(np.dot(idx, self._odd)))
        return max(self.total_sq - 2.0 * step * s1 + step * step * s2, 0.0), s1, s2

    def _range_sq(self, lo, hi, center):
        """sum over sorted indices [lo, hi) of (a - center)**2, clipped at 0."""
        if self._kern is not None:  # the same arithmetic, elementwise, in one compiled pass
            lo, hi = np.ascontiguousarray(lo), np.ascontiguousarray(hi)
            center = np.ascontiguousarray(np.broadcast_to(center, lo.shape), dtype=np.float64)
            out = np.empty(lo.shape, dtype=np.float64)
            self._kern.range_sq(self._pair, lo, hi, center, out)
            return out
        s2 = self.p2[hi] - self.p2[lo]
        s1 = self.p1[hi] - self.p1[lo]
        cnt = hi - lo
        return np.maximum(s2 - 2.0 * center * s1 + center * center * cnt, 0.0)

    def band_counts(self, steps: np.ndarray, k: int) -> np.ndarray:
        """``[i, j]`` = number of magnitudes below ``(j + 1/2) * steps[i]``, i.e.
        at codes <= j for that step. The same counts are the band edges of
        :meth:`lower_bounds` for an interval ending at that step, which is why
        the branch and bound passes them on instead of counting twice."""
        half = np.arange(k, dtype=np.float64) + 0.5
        return self.count_below(steps[:, None] * half[None, :])

    def sums(self, steps: np.ndarray, k: int, counts: np.ndarray | None = None):
        """For each step: S1 = sum |w| z and S2 = sum z**2, with z the integer
        codes in 0..k that nearest-level rounding assigns to |w| (``counts``:
        :meth:`band_counts` of ``steps``, if already known)."""
        idx = self.band_counts(steps, k) if counts is None else counts
        # summation by parts: sum_z z (c_z - c_{z-1}) = K c_K - sum_{z<K} c_z
        s1 = k * self.p1[self.n] - self.p1[idx].sum(axis=1)
        s2 = float(k * k * self.n) - (idx * (2.0 * np.arange(k) + 1.0)[None, :]).sum(axis=1)
        return s1, s2

    def evaluate(self, steps: np.ndarray, k: int, counts: np.ndarray | None = None):
        """(E, S1, S2) of each step: the exact error and the sums of a Lloyd update."""
        s1, s2 = self.sums(steps, k, counts)
        return np.maximum(self.total_sq - 2.0 * steps * s1 + steps * steps * s2, 0.0), s1, s2

    def lower_bounds(self, lo: np.ndarray, hi: np.ndarray, k: int, band_lo: np.ndarray, band_hi: np.ndarray):
        """A lower bound of E(step) over each interval of steps [lo, hi].

        A magnitude outside every rounding band [(j+1/2) lo, (j+1/2) hi] gets the
        same code z for every step of the interval, so the error of all those
        "fixed" magnitudes is one quadratic in the step, minimised exactly over
        [lo, hi]. A magnitude inside band j is at least its distance from the
        level intervals [j lo, j hi] and [(j+1) lo, (j+1) hi] away from any
        level. The sum of both parts is a valid bound whose slack shrinks with the
        square of the interval width, which keeps the branch and bound small.

        ``band_lo``/``band_hi``: :meth:`band_counts` of ``lo``/``hi`` (the branch
        and bound already has them: the ends of its intervals were evaluated).
        """
        j = np.arange(k, dtype=np.float64)[None, :]
        lo2, hi2 = lo[:, None], hi[:, None]
        shape = (lo.size, k)

        def idx(values):
            return self.count_below(values.reshape(shape))

        # fixed magnitudes at code j: indices [band_hi[j-1], band_lo[j]); code k: [band_hi[k-1], n)
        start = np.concatenate([np.zeros((lo.size, 1), dtype=band_hi.dtype), band_hi], axis=1)
        stop = np.concatenate([band_lo, np.full((lo.size, 1), self.n, dtype=band_lo.dtype)], axis=1)
        stop = np.maximum(stop, start)
        codes = np.arange(k + 1, dtype=np.float64)[None, :]
        cnt = stop - start
        if self._kern is not None:  # the same differences, in one compiled pass
            d1, d2 = np.empty(stop.shape), np.empty(stop.shape)
            self._kern.pair_diffs(self._pair, start, stop, d1, d2)
        else:
            d1, d2 = self.p1[stop] - self.p1[start], self.p2[stop] - self.p2[start]
        qa = d2.sum(axis=1)
        qb = (codes * d1).sum(axis=1)
        qc = (codes * codes * cnt).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.clip(np.where(qc > 0, qb / qc, lo), lo, hi)
        fixed = np.maximum(qa - 2.0 * s * qb + s * s * qc, 0.0)

        # band magnitudes: distance to the nearest level interval, taken only
        # where the band lies in the gap between level intervals j and j+1
        g_lo = np.maximum((j + 0.5) * lo2, j * hi2)
        g_hi = np.maximum(np.minimum((j + 0.5) * hi2, (j + 1.0) * lo2), g_lo)
        mid = np.clip(0.5 * (j * hi2 + (j + 1.0) * lo2), g_lo, g_hi)
        i_mid = idx(mid)
        if np.all((k - 0.5) * (hi - lo) <= 0.5 * lo):
            # narrow intervals: every band lies inside its gap, nothing to clip
            i_lo, i_hi = band_lo, band_hi
        else:
            i_lo, i_hi = idx(g_lo), idx(g_hi)
        band = (self._range_sq(i_lo, i_mid, j * hi2) + self._range_sq(i_mid, i_hi, (j + 1.0) * lo2)).sum(axis=1)
        return fixed + band


_POLISH_ITER = 100

#: Intervals x levels of one round of the branch and bound, at most. Up to 8
#: bits a round stays far below it (the benchmark network's 1024x1024 layers:
#: at most 160 intervals x 127 levels), and rounds below it run as they always
#: ran. Above it (14-16 bits: thousands of intervals x up to 32,767 levels, tens
#: of GB in one round) the search goes on depth first in batches of this size,
#: which bounds its memory to a few hundred MB whatever the word length.
_ROUND_ELEMENTS = 1 << 21


def _lloyd_polish(sm, step: float, k: int, max_iter: int = _POLISH_ITER, start=None):
    """Alternate (assign levels, set step = S1/S2) from a good start, one
    evaluation per iteration; the error never increases, and the fixed point
    is a local optimum. A quick way to a good incumbent: the branch and bound,
    not this polish, guarantees optimality. ``start``: (E, S1, S2) of ``step``
    if already known."""
    err, s1, s2 = sm.evaluate_one(step, k) if start is None else start
    if sm.polish_compiled(k):  # the same iteration, compiled
        steps, errs = sm.polish([step], [(err, s1, s2)], k, max_iter)
        return float(steps[0]), float(errs[0])
    for _ in range(max_iter):
        if s2 <= 0 or s1 <= 0:
            break
        new = s1 / s2
        new_err, n1, n2 = sm.evaluate_one(new, k)
        if not new_err < err or new == step:
            break
        step, err, s1, s2 = new, new_err, n1, n2
    return step, err


def _lloyd_polish_many(sm, steps, starts, k: int, max_iter: int = _POLISH_ITER):
    """:func:`_lloyd_polish` of several starts in lock step: each run takes
    exactly the steps it would take alone (the runs are independent and
    :meth:`~_SortedMagnitudes.evaluate` is :meth:`~_SortedMagnitudes.evaluate_one`
    bit for bit), but the live runs share one batched evaluation per iteration."""
    if sm.polish_compiled(k):  # each run alone, compiled: the same steps
        steps, errs = sm.polish(steps, starts, k, max_iter)
        return [(float(a), float(b)) for a, b in zip(steps, errs)]
    step = np.array(steps, dtype=np.float64)
    err = np.array([e for e, _, _ in starts], dtype=np.float64)
    s1 = np.array([a for _, a, _ in starts], dtype=np.float64)
    s2 = np.array([b for _, _, b in starts], dtype=np.float64)
    live = np.ones(step.size, dtype=bool)
    for _ in range(max_iter):
        live &= (s2 > 0) & (s1 > 0)
        if not live.any():
            break
        ids = np.flatnonzero(live)
        new = s1[ids] / s2[ids]
        new_err, n1, n2 = sm.evaluate(new, k)
        take = (new_err < err[ids]) & (new != step[ids])
        live[ids[~take]] = False
        ids = ids[take]
        step[ids], err[ids], s1[ids], s2[ids] = new[take], new_err[take], n1[take], n2[take]
    return [(float(a), float(b)) for a, b in zip(step, err)]


def _branch_and_bound(sm, k: int, rtol: float, max_rounds: int) -> tuple[float, bool]:
    """Global minimisation of E(step) over step > 0 (see :func:`l2_optimal_step`).
    Returns the best step and whether the (1 + rtol) certificate was reached."""
    atol = 1e-13 * sm.total_sq
    # Beyond 2 max|w| every weight rounds to 0 (error = sum w**2, the worst), so
    # the optimum lies in (0, 2 max|w|). Start from a geometric grid plus [0, s0].
    pts = np.geomspace(sm.max / (k + 0.5) * 1e-3, 2.0 * sm.max, 65)
    cnt_pts = sm.band_counts(pts, k)
    errs, ps1, ps2 = sm.evaluate(pts, k, cnt_pts)
    order = np.argsort(errs)
    best_step, best_err = float(pts[order[0]]), float(errs[order[0]])
    first = order[:4]
    polished = _lloyd_polish_many(sm, pts[first], [(errs[i], ps1[i], ps2[i]) for i in first], k)
    for s, e in polished:
        if e < best_err:
            best_step, best_err = s, e
    lo = np.concatenate(([0.0], pts[:-1]))
    hi = pts.copy()
    # the band counts of every interval end travel with it: the ends of the
    # next round's intervals are this round's ends and evaluated candidates
    cnt_lo = np.concatenate([sm.band_counts(lo[:1], k), cnt_pts[:-1]])
    cnt_hi = cnt_pts
    frac = np.array([0.25, 0.5, 0.75])
    for depth in range(max_rounds):
        if lo.size * k > _ROUND_ELEMENTS:  # one round would not fit: the rest in bounded batches
            return _depth_first(sm, k, rtol, atol, (best_step, best_err), lo, hi, max_rounds - depth)
        lb = sm.lower_bounds(lo, hi, k, cnt_lo, cnt_hi)
        keep = lb * (1.0 + rtol) + atol < best_err
        lo, hi, cnt_lo, cnt_hi = lo[keep], hi[keep], cnt_lo[keep], cnt_hi[keep]
        if lo.size == 0:
            return best_step, True
        # split every surviving interval in 4 and evaluate the new points
        inner = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        cand = inner.ravel()
        cnt_cand = sm.band_counts(cand, k)
        cerr, cs1, cs2 = sm.evaluate(cand, k, cnt_cand)
        i = int(np.argmin(cerr))
        if cerr[i] < best_err:
            best_step, best_err = _lloyd_polish(sm, float(cand[i]), k, start=(cerr[i], cs1[i], cs2[i]))
        edges = np.concatenate([lo[:, None], inner, hi[:, None]], axis=1)
        cnt_edges = np.concatenate([cnt_lo[:, None], cnt_cand.reshape(lo.size, 3, k), cnt_hi[:, None]], axis=1)
        lo, hi = edges[:, :-1].ravel(), edges[:, 1:].ravel()
        cnt_lo, cnt_hi = cnt_edges[:, :-1].reshape(-1, k), cnt_edges[:, 1:].reshape(-1, k)
    return best_step, False


def _depth_first(sm, k: int, rtol: float, atol: float, best, lo, hi, rounds: int) -> tuple[float, bool]:
    """The branch and bound of :func:`_branch_and_bound` from the intervals
    [lo, hi] on, in batches of at most ``_ROUND_ELEMENTS // k`` intervals taken
    depth first, so that its memory stays bounded however many intervals
    survive. The same bounds, splits and polish, so the same certificate; the
    order differs from the breadth-first rounds, so the step may differ from
    theirs within it. Band counts are recounted per batch instead of carried
    (carrying them is what needs the memory). ``rounds``: splits left per
    interval, as ``max_rounds`` counts them."""
    best_step, best_err = best
    batch = max(1, _ROUND_ELEMENTS // k)
    frac = np.array([0.25, 0.5, 0.75])
    stack = [(lo[i : i + batch], hi[i : i + batch], 0) for i in reversed(range(0, lo.size, batch))]
    certified = True
    while stack:
        lo, hi, depth = stack.pop()
        lb = sm.lower_bounds(lo, hi, k, sm.band_counts(lo, k), sm.band_counts(hi, k))
        keep = lb * (1.0 + rtol) + atol < best_err
        lo, hi = lo[keep], hi[keep]
        if lo.size == 0:
            continue
        if depth >= rounds:
            certified = False
            continue
        inner = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        cand = inner.ravel()
        cerr, cs1, cs2 = sm.evaluate(cand, k)
        i = int(np.argmin(cerr))
        if cerr[i] < best_err:
            best_step, best_err = _lloyd_polish(sm, float(cand[i]), k, start=(cerr[i], cs1[i], cs2[i]))
        edges = np.concatenate([lo[:, None], inner, hi[:, None]], axis=1)
        lo, hi = edges[:, :-1].ravel(), edges[:, 1:].ravel()
        stack.extend((lo[i : i + batch], hi[i : i + batch], depth + 1) for i in reversed(range(0, lo.size, batch)))
    return best_step, certified


def l2_optimal_step(
    w: torch.Tensor,
    bits: int,
    *,
    rtol: float = 1e-5,
    max_rounds: int = 200,
) -> float:
    """Step size that minimises ``sum((w - quantize(w, bits, step))**2)`` globally.

    Branch and bound on the step axis: the exact error of a step and a lower
    bound of the error over a whole interval of steps both cost O(K log N) on the
    sorted magnitudes with prefix sums. Intervals whose lower bound cannot beat
    the best error found (within ``rtol``) are discarded; the others are split
    until none is left, and new best candidates are polished by the
    alternating (Lloyd) iteration. On return the error of the step is within a
    factor ``1 + rtol`` of the global minimum over all steps > 0 (unless
    ``max_rounds`` is exhausted, which has not been observed).

    b = 1 (binary, ``step * sign(w)``) has the closed form ``mean(|w|)``.
    An all-zero tensor returns 1.0 (every step gives zero error).
    """
    bits = check_bits(bits)
    if w.numel() == 0:
        raise ValueError("cannot choose a step for an empty tensor")
    if bits == 1:
        # in the tensor's logical order, whatever its memory layout (a channels-last
        # convolution's mean must not depend on it)
        m = float(w.detach().contiguous().abs().to(torch.float64).mean())
        if not math.isfinite(m):
            raise ValueError("weights contain NaN or Inf")
        return m if m > 0 else 1.0
    sm = _SortedMagnitudes(w)
    if not math.isfinite(sm.max):  # NaN and Inf sort last
        raise ValueError("weights contain NaN or Inf")
    if sm.max == 0.0:
        return 1.0
    return _branch_and_bound(sm, max_level(bits), rtol, max_rounds)[0]
