"""Prediction intervals for "the mean test error of a new training run of this design".

The law is fitted on validation errors (choices never read test error), so an
interval for a design's test error has to carry three things:

* the law's misfit and estimation error at a design it did not see, and the
  seed noise of a seed mean: both are in the cross-validation residuals of
  held-out validation means (:data:`POOLS`: held-out widths inside and at the
  ends of the trained range, held-out bits inside and outside it);
* the sampling noise of the two evaluation sets. The validation set the law
  was fitted on and the test set the design is reported on are finite samples,
  shared by every cell: their noise shifts all cells together, so it is not in
  the residuals. For a predicted error p it has variance
  ``p (1 - p) (1 / n_val + 1 / n_test)`` (binomial sampling of each set).

The interval is the central ``level`` range of the mixture "one residual of
the pool, drawn uniformly, plus a normal shift of that variance". Its tails
are those of the pool's empirical distribution smoothed by the shift, not
split-conformal ones (with 15-30 residuals per pool a conformal 90% two-sided
interval would often be unbounded). Coverage is measured, not assumed:
docs/scaling.md and the ``coverage`` rows of scaling.parquet.
Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

DEFAULT_LEVEL = 0.9

POOLS = ("width", "width_end", "bits", "bits_end")
"""Residual pools: held-out widths strictly inside the trained range, held-out
end widths (an extrapolation in width), held-out bits inside the trained bits,
and end bits (an extrapolation in bits)."""


def shift_sd(p, n_val: int, n_test: int):
    """Standard deviation of (test error - validation error) of one network from
    the finite sizes of the two sets, at error rate ``p``."""
    p = np.clip(np.asarray(p, dtype=float), 1e-4, 0.5)
    return np.sqrt(p * (1 - p) * (1.0 / n_val + 1.0 / n_test))


def mixture_quantiles(residuals: np.ndarray, sd: float, probs) -> np.ndarray:
    """Quantiles of ``r + s``, ``r`` uniform over ``residuals`` and ``s ~ N(0, sd^2)``
    (exact for that model: its CDF is a mean of normal CDFs, inverted by bisection)."""
    r = np.asarray(residuals, dtype=float)
    probs = np.atleast_1d(np.asarray(probs, dtype=float))
    if sd <= 0:
        return np.quantile(r, probs, method="inverted_cdf")
    lo, hi = r.min() - 8 * sd, r.max() + 8 * sd
    out = np.empty(probs.size)
    for i, p in enumerate(probs):
        a, b = lo, hi
        for _ in range(80):
            m = 0.5 * (a + b)
            if ndtr((m - r) / sd).mean() < p:
                a = m
            else:
                b = m
        out[i] = 0.5 * (a + b)
    return out


@dataclass(frozen=True)
class IntervalModel:
    """Residual pools (validation mean minus prediction, from cross-validation)
    and the evaluation sets' sizes; :meth:`interval` gives (lo, hi)."""

    pools: dict[str, np.ndarray]
    n_val: int
    n_test: int
    level: float = DEFAULT_LEVEL
    min_pool: int = field(default=5)

    def pool(self, name: str) -> np.ndarray:
        """A pool by name; a pool with too few residuals borrows the next wider one
        (an end pool for an inner one), so no interval rests on a handful of points."""
        order = {"width": ("width", "width_end", "bits"), "width_end": ("width_end", "width", "bits_end")}
        order |= {"bits": ("bits", "bits_end", "width"), "bits_end": ("bits_end", "bits", "width_end")}
        got = np.empty(0)
        for n in order[name]:
            got = np.r_[got, self.pools.get(n, np.empty(0))]
            if got.size >= self.min_pool:
                break
        return got

    def interval(self, predicted: float, pool: str) -> tuple[float, float]:
        """Central ``level`` interval for the mean test error of a new training
        run of a design the law predicts at ``predicted``; NaN without residuals."""
        r = self.pool(pool)
        if r.size == 0 or not math.isfinite(predicted):
            return math.nan, math.nan
        probs = [(1 - self.level) / 2, 1 - (1 - self.level) / 2]
        sd = float(shift_sd(predicted, self.n_val, self.n_test))
        lo, hi = mixture_quantiles(r, sd, probs)
        return max(0.0, predicted + lo), min(1.0, predicted + hi)
