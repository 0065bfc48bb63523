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


class _SortedMagnitudes:
    """|w| sorted ascending, with prefix sums, so that the squared error of any
    step, and a lower bound of it over a whole interval of steps, costs
    O(K log N) instead of O(N)."""

    def __init__(self, w: torch.Tensor):
        flat = w.detach().reshape(-1).abs().cpu()
        if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.to(torch.float64 if not flat.is_floating_point() else torch.float32)
        # sort in the tensor's own precision (NumPy's vectorised float32 sort is
        # about 3x faster than torch.sort here), then widen for the prefix sums
        a64 = np.sort(flat.numpy()).astype(np.float64)
        self.a = a64
        self.n = a64.size
        self.p1 = np.concatenate(([0.0], np.cumsum(a64)))
        self.p2 = np.concatenate(([0.0], np.cumsum(a64 * a64)))
        self.total_sq = float(self.p2[-1])
        self.max = float(a64[-1]) if self.n else 0.0

    def _range_sq(self, lo, hi, center):
        """sum over sorted indices [lo, hi) of (a - center)**2, clipped at 0."""
        s2 = self.p2[hi] - self.p2[lo]
        s1 = self.p1[hi] - self.p1[lo]
        cnt = hi - lo
        return np.maximum(s2 - 2.0 * center * s1 + center * center * cnt, 0.0)

    def sums(self, steps: np.ndarray, k: int):
        """For each step: S1 = sum |w| z and S2 = sum z**2, with z the integer
        codes in 0..k that nearest-level rounding assigns to |w|."""
        half = np.arange(k, dtype=np.float64) + 0.5
        thr = steps[:, None] * half[None, :]
        # idx[:, j] = number of magnitudes below (j + 1/2) * step, i.e. at codes <= j
        idx = np.searchsorted(self.a, thr.ravel(), side="left").reshape(thr.shape)
        # summation by parts: sum_z z (c_z - c_{z-1}) = K c_K - sum_{z<K} c_z
        s1 = k * self.p1[self.n] - self.p1[idx].sum(axis=1)
        s2 = float(k * k * self.n) - (idx * (2.0 * np.arange(k) + 1.0)[None, :]).sum(axis=1)
        return s1, s2

    def evaluate(self, steps: np.ndarray, k: int):
        """(E, S1, S2) of each step: the exact error and the sums of a Lloyd update."""
        s1, s2 = self.sums(steps, k)
        return np.maximum(self.total_sq - 2.0 * steps * s1 + steps * steps * s2, 0.0), s1, s2

    def errors(self, steps: np.ndarray, k: int) -> np.ndarray:
        """Exact squared quantization error E(step) for each step."""
        return self.evaluate(steps, k)[0]

    def lower_bounds(self, lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
        """A lower bound of E(step) over each interval of steps [lo, hi].

        A magnitude outside every rounding band [(j+1/2) lo, (j+1/2) hi] gets the
        same code z for every step of the interval, so the error of all those
        "fixed" magnitudes is one quadratic in the step, minimised exactly over
        [lo, hi]. A magnitude inside band j is at least its distance from the
        level intervals [j lo, j hi] and [(j+1) lo, (j+1) hi] away from any
        level. The sum of both parts is a valid bound whose slack shrinks with the
        square of the interval width, which keeps the branch and bound small.
        """
        j = np.arange(k, dtype=np.float64)[None, :]
        lo2, hi2 = lo[:, None], hi[:, None]
        shape = (lo.size, k)

        def idx(values):
            return np.searchsorted(self.a, values.ravel(), side="left").reshape(shape)

        band_lo, band_hi = idx((j + 0.5) * lo2), idx((j + 0.5) * hi2)
        # fixed magnitudes at code j: indices [band_hi[j-1], band_lo[j]); code k: [band_hi[k-1], n)
        start = np.concatenate([np.zeros((lo.size, 1), dtype=band_hi.dtype), band_hi], axis=1)
        stop = np.concatenate([band_lo, np.full((lo.size, 1), self.n, dtype=band_lo.dtype)], axis=1)
        stop = np.maximum(stop, start)
        codes = np.arange(k + 1, dtype=np.float64)[None, :]
        cnt = stop - start
        qa = (self.p2[stop] - self.p2[start]).sum(axis=1)
        qb = (codes * (self.p1[stop] - self.p1[start])).sum(axis=1)
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


def _lloyd_polish(sm, step: float, k: int, max_iter: int = 100):
    """Alternate (assign levels, set step = S1/S2) from a good start, one
    evaluation per iteration; the error never increases, and the fixed point
    is a local optimum. A quick way to a good incumbent: the branch and bound,
    not this polish, guarantees optimality."""
    err, s1, s2 = (float(v[0]) for v in sm.evaluate(np.array([step]), k))
    for _ in range(max_iter):
        if s2 <= 0 or s1 <= 0:
            break
        new = s1 / s2
        new_err, n1, n2 = (float(v[0]) for v in sm.evaluate(np.array([new]), k))
        if not new_err < err or new == step:
            break
        step, err, s1, s2 = new, new_err, n1, n2
    return step, err


def _branch_and_bound(sm, k: int, rtol: float, max_rounds: int) -> tuple[float, bool]:
    """Global minimisation of E(step) over step > 0 (see :func:`l2_optimal_step`).
    Returns the best step and whether the (1 + rtol) certificate was reached."""
    atol = 1e-13 * sm.total_sq
    # Beyond 2 max|w| every weight rounds to 0 (error = sum w**2, the worst), so
    # the optimum lies in (0, 2 max|w|). Start from a geometric grid plus [0, s0].
    pts = np.geomspace(sm.max / (k + 0.5) * 1e-3, 2.0 * sm.max, 65)
    errs = sm.errors(pts, k)
    order = np.argsort(errs)
    best_step, best_err = float(pts[order[0]]), float(errs[order[0]])
    for i in order[:4]:
        s, e = _lloyd_polish(sm, float(pts[i]), k)
        if e < best_err:
            best_step, best_err = s, e
    lo = np.concatenate(([0.0], pts[:-1]))
    hi = pts.copy()
    frac = np.array([0.25, 0.5, 0.75])
    for _ in range(max_rounds):
        lb = sm.lower_bounds(lo, hi, k)
        keep = lb * (1.0 + rtol) + atol < best_err
        lo, hi = lo[keep], hi[keep]
        if lo.size == 0:
            return best_step, True
        # split every surviving interval in 4 and evaluate the new points
        inner = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        cand = inner.ravel()
        cerr = sm.errors(cand, k)
        i = int(np.argmin(cerr))
        if cerr[i] < best_err:
            best_step, best_err = _lloyd_polish(sm, float(cand[i]), k)
        edges = np.concatenate([lo[:, None], inner, hi[:, None]], axis=1)
        lo, hi = edges[:, :-1].ravel(), edges[:, 1:].ravel()
    return best_step, False


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
        m = float(w.detach().abs().to(torch.float64).mean())
        if not math.isfinite(m):
            raise ValueError("weights contain NaN or Inf")
        return m if m > 0 else 1.0
    sm = _SortedMagnitudes(w)
    if not math.isfinite(sm.max):  # NaN and Inf sort last
        raise ValueError("weights contain NaN or Inf")
    if sm.max == 0.0:
        return 1.0
    return _branch_and_bound(sm, max_level(bits), rtol, max_rounds)[0]
