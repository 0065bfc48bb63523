"""A predictive design model: test error as a function of network size and bits.

The read-off ECR (:func:`qdesign.analysis.ecr.effective_compression_ratio`) inverts the
measured float curve cell by cell, so it inherits every wiggle of that curve
(where float error is flat, every ECR collapses).  Here one smooth law is fitted
jointly to all seed-mean cells of a study::

    err(N, b) = E + A * (N * g(b)) ** (-alpha),      g(float) = 1

``g(b)`` is the effective-size factor of b-bit weights: a b-bit network of N
weights behaves like a float network of ``N * g(b)`` weights, so the
model-based ECR of b bits is ``g(b) * 32 / b`` at every width.  ``g`` is free
per trained bits value; for untrained bits (1, 7, 10, ...) a saturating
parametric ``g`` (Kumar et al. 2024, ``1 - exp(-b / gamma)``, normalised so that
g(32) = 1) is fitted to the free values.  Other forms are kept for the
cross-validation that chose this one (docs/scaling.md).

Uncertainty comes from a bootstrap over seeds: per width one multiset of seed
labels is drawn and used for every bits value (a quantized network is retrained
from the float network of the same seed, so cells of one width are paired).

Pure numpy/scipy/pandas on purpose: no torch, analysis runs on tables only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, minimize_scalar

from ..core.constants import FLOAT_BITS
from .ecr import effective_compression_ratio

__all__ = [
    "DEFAULT_FORM",
    "DEFAULT_G_FORM",
    "FORMS",
    "G_FORMS",
    "ScalingLaw",
    "bootstrap",
    "cell_stats",
    "cv_leave_one_bits_out",
    "cv_leave_one_width_out",
    "cv_summary",
    "fit",
    "g_parametric",
    "law_from_table",
    "readoff_ecr_intervals",
    "scaling_table",
]

FORMS = ("effsize", "kumar", "additive")
"""Size laws tried: free effective size per bits, Kumar's parametric effective
size fitted jointly, and an additive per-bits penalty (a constant gap)."""

G_FORMS = ("hybrid", "kumar", "kumar_c", "hyperbolic", "loglinear")
"""g(b) for untrained bits, from the free g of ``effsize``: a parametric form
fitted to it (kumar, kumar_c, hyperbolic), log-linear interpolation in b
(loglinear, flat outside), or ``hybrid``: interpolation inside the trained
bits, flat above them, kumar_c below them (what won leave-one-bits-out)."""

DEFAULT_FORM = "effsize"
DEFAULT_G_FORM = "hybrid"
DEFAULT_WEIGHTS = "se"
DEFAULT_LEVEL = 0.9

_LOG_G = (math.log(1e-4), math.log(8.0))
_LOG_GAMMA = (math.log(0.05), math.log(64.0))


# --------------------------------------------------------------------------
# Parametric g(b)
# --------------------------------------------------------------------------


def g_parametric(bits, gamma, g_form: str = DEFAULT_G_FORM, scale=1.0) -> np.ndarray:
    """Effective-size factor of ``bits`` under a parametric form, with g(float) = 1.

    ``kumar``: (1 - exp(-b/gamma)) / (1 - exp(-32/gamma));
    ``kumar_c``: ``scale`` times kumar for quantized bits (a plateau that may
    exceed 1: retrained quantized networks can beat float ones);
    ``hyperbolic``: (b / (b + gamma)) / (32 / (32 + gamma)).  Float (b >= 32) is 1.
    """
    b = np.minimum(np.asarray(bits, dtype=float), FLOAT_BITS)
    if g_form in ("kumar", "kumar_c", "hybrid"):
        g = -np.expm1(-b / gamma) / -np.expm1(-FLOAT_BITS / gamma)
    elif g_form == "hyperbolic":
        g = (b / (b + gamma)) / (FLOAT_BITS / (FLOAT_BITS + gamma))
    else:
        raise ValueError(f"g_form must be one of {G_FORMS[:-1]} for a parametric g, got {g_form!r}")
    if g_form in ("kumar_c", "hybrid"):
        g = np.where(b >= FLOAT_BITS, 1.0, scale * g)
    return g


def _fit_g_param(bits: np.ndarray, log_g: np.ndarray, g_form: str) -> tuple[float, float]:
    """(gamma, scale) minimising the squared log-ratio between free and parametric g.

    A dense log grid over gamma (the best scale of ``kumar_c`` is the mean
    log-ratio, in closed form), then a bounded scalar search around the best
    grid point: deterministic, and cheap enough for every bootstrap law.
    """
    if g_form == "loglinear" or bits.size == 0:
        return math.nan, 1.0
    free_scale = g_form in ("kumar_c", "hybrid") and bits.size >= 2

    def cost(t):
        r = np.log(g_parametric(bits, np.exp(np.asarray(t))[..., None], g_form)) - log_g
        if free_scale:
            r = r - r.mean(axis=-1, keepdims=True)
        return (r**2).sum(axis=-1)

    grid = np.linspace(*_LOG_GAMMA, 241)
    costs = cost(grid)
    i = int(np.argmin(costs))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    r = minimize_scalar(lambda t: float(cost(t)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    t = r.x if r.fun <= costs[i] else grid[i]
    gamma = float(math.exp(t))
    scale = 1.0
    if free_scale:
        scale = float(math.exp(np.mean(log_g - np.log(g_parametric(bits, gamma, "kumar")))))
    return gamma, scale


# --------------------------------------------------------------------------
# The fitted law
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ScalingLaw:
    """A fitted err(N, b); ``predict`` takes arrays, returns error fractions.

    ``a0`` is the excess error at the reference size ``n0`` (well conditioned);
    ``A = a0 * n0**alpha`` is the constant of ``E + A * (N g)^-alpha``.
    ``g_trained`` maps each trained bits value (float included) to its free g
    (``effsize``) or parametric g (``kumar``); ``additive`` has ``d_trained``
    (the per-bits penalty) instead.  ``boot`` holds the bootstrap laws.
    """

    form: str
    E: float
    a0: float
    alpha: float
    n0: float
    g_trained: Mapping[int, float]
    g_form: str
    gamma: float
    n_range: tuple[float, float]
    d_trained: Mapping[int, float] = dataclasses.field(default_factory=dict)
    g_scale: float = 1.0
    boot: tuple = ()
    level: float = DEFAULT_LEVEL

    @property
    def A(self) -> float:
        return self.a0 * self.n0**self.alpha

    @property
    def trained_bits(self) -> tuple[int, ...]:
        keys = self.d_trained if self.form == "additive" else self.g_trained
        return tuple(sorted(int(b) for b in keys))

    def g(self, bits) -> np.ndarray:
        """Effective-size factor: the free value for trained bits, else the parametric one."""
        b = np.asarray(bits, dtype=float)
        out = np.full(b.shape, np.nan)
        flat_b, flat_out = b.ravel(), out.ravel()
        trained = np.array(sorted(self.g_trained), dtype=float)
        vals = np.array([self.g_trained[int(k)] for k in sorted(self.g_trained)], dtype=float)
        quant = trained < FLOAT_BITS
        tq, vq = trained[quant], vals[quant]
        for i, v in enumerate(flat_b):
            key = min(FLOAT_BITS, v)
            hit = np.nonzero(trained == key)[0]
            if hit.size:
                flat_out[i] = vals[hit[0]]
            elif key >= FLOAT_BITS:
                flat_out[i] = 1.0
            elif self.g_form == "hybrid" and tq.size and key >= tq[0]:
                flat_out[i] = math.exp(np.interp(key, tq, np.log(vq)))  # flat above the trained bits
            elif self.g_form == "loglinear" and tq.size:
                flat_out[i] = math.exp(np.interp(key, tq, np.log(vq)))
            elif math.isfinite(self.gamma):
                flat_out[i] = float(g_parametric(key, self.gamma, self.g_form, self.g_scale))
        return flat_out.reshape(b.shape)

    def predict(self, n_weights, bits) -> np.ndarray:
        """Predicted error fraction for each (n_weights, bits) pair (broadcast)."""
        n, b = np.broadcast_arrays(np.asarray(n_weights, dtype=float), np.asarray(bits, dtype=float))
        x = np.log(n / self.n0)
        if self.form == "additive":
            d = np.array(
                [self.d_trained.get(FLOAT_BITS if v >= FLOAT_BITS else int(v), np.nan) for v in b.ravel()]
            ).reshape(b.shape)
            return self.E + d + self.a0 * np.exp(-self.alpha * x)
        return self.E + self.a0 * np.exp(-self.alpha * (x + np.log(self.g(b))))

    def model_ecr(self, bits, reference_bits: int = FLOAT_BITS) -> np.ndarray:
        """ECR implied by the law: g(b) * reference_bits / b (the same at every width)."""
        b = np.asarray(bits, dtype=float)
        return self.g(b) * reference_bits / np.minimum(b, FLOAT_BITS)

    def interval(self, values_fn, level: float | None = None):
        """(lo, hi) percentile interval of ``values_fn(law)`` over the bootstrap laws."""
        if not self.boot:
            raise ValueError("this law has no bootstrap; fit it with bootstrap()")
        q = (1 - (self.level if level is None else level)) / 2
        draws = np.stack([np.asarray(values_fn(law), dtype=float) for law in self.boot])
        return np.nanquantile(draws, q, axis=0), np.nanquantile(draws, 1 - q, axis=0)

    def predict_interval(self, n_weights, bits, level: float | None = None):
        return self.interval(lambda law: law.predict(n_weights, bits), level)

    def params(self) -> dict[str, float]:
        return {
            "E": self.E,
            "A": self.A,
            "a0": self.a0,
            "alpha": self.alpha,
            "n0": self.n0,
            "gamma": self.gamma,
            "g_scale": self.g_scale,
            "n_min": self.n_range[0],
            "n_max": self.n_range[1],
        }


# --------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------


def cell_stats(cells: pd.DataFrame) -> pd.DataFrame:
    """Seed means per (n_weights, bits): error, its standard error and seed count.

    Accepts ``error`` or ``test_error``; keeps ``width`` when present.  Float
    rows (bits >= 32) get bits = 32.
    """
    if not isinstance(cells, pd.DataFrame):
        raise ValueError("cells must be a pandas DataFrame")
    err_col = "error" if "error" in cells.columns else "test_error"
    missing = [c for c in ("n_weights", "bits", err_col) if c not in cells.columns]
    if missing:
        raise ValueError(f"cells is missing required column(s): {', '.join(missing)}")
    df = pd.DataFrame(
        {
            "n_weights": cells["n_weights"].to_numpy(float),
            "bits": np.minimum(cells["bits"].to_numpy(float), FLOAT_BITS).astype(int),
            "error": cells[err_col].to_numpy(float),
        }
    )
    if "width" in cells.columns:
        df["width"] = cells["width"].to_numpy()
    if not (np.all(df["n_weights"] > 0) and np.all(np.isfinite(df["error"]))):
        raise ValueError("n_weights must be positive and error finite")
    keys = ["n_weights", "bits"] + (["width"] if "width" in df.columns else [])
    out = (
        df.groupby(keys, sort=True)
        .agg(error=("error", "mean"), std=("error", "std"), n_seeds=("error", "count"))
        .reset_index()
    )
    out["se"] = (out["std"] / np.sqrt(out["n_seeds"])).fillna(0.0)
    if not (out["bits"] == FLOAT_BITS).any():
        raise ValueError(f"cells has no float rows (bits >= {FLOAT_BITS}): the law needs g(float) = 1")
    return out.drop(columns="std")


class _Problem:
    """Arrays and residuals of one form on one set of seed-mean cells."""

    def __init__(self, stats: pd.DataFrame, form: str, weights: str):
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.form = form
        n = stats["n_weights"].to_numpy(float)
        self.n0 = float(np.exp(np.mean(np.log(np.unique(n)))))
        self.x = np.log(n / self.n0)
        self.bits = stats["bits"].to_numpy(int)
        self.qbits = np.array(sorted(set(self.bits[self.bits < FLOAT_BITS])), dtype=int)
        self.bidx = np.searchsorted(self.qbits, self.bits)  # == len(qbits) for float
        self.bidx[self.bits >= FLOAT_BITS] = -1
        err = stats["error"].to_numpy(float)
        self.y = err
        if weights == "uniform":
            self.sigma = np.ones_like(err)
        elif weights == "se":
            se = stats["se"].to_numpy(float)
            floor = max(float(np.median(se)), 1e-4)
            self.sigma = np.sqrt(se**2 + floor**2)
        else:
            raise ValueError(f"weights must be 'uniform' or 'se', got {weights!r}")
        k = self.qbits.size
        e_hi = max(float(err.min()), 1e-6)
        lo = [0.0, math.log(1e-7), 0.02]
        hi = [e_hi, math.log(2.0), 3.0]
        if form == "effsize":
            lo += [_LOG_G[0]] * k
            hi += [_LOG_G[1]] * k
        elif form == "kumar":
            lo += [_LOG_GAMMA[0]]
            hi += [_LOG_GAMMA[1]]
        else:
            lo += [-0.5] * k
            hi += [0.5] * k
        self.bounds = (np.array(lo), np.array(hi))

    def predict(self, theta: np.ndarray) -> np.ndarray:
        E, la, alpha = theta[0], theta[1], theta[2]
        if self.form == "additive":
            d = np.r_[theta[3:], 0.0][self.bidx]
            return E + d + np.exp(la - alpha * self.x)
        if self.form == "effsize":
            lg = np.r_[theta[3:], 0.0][self.bidx]
        else:
            lg = np.log(g_parametric(self.bits, math.exp(theta[3]), "kumar"))
        return E + np.exp(la - alpha * (self.x + lg))

    def residuals(self, theta):
        return (self.predict(theta) - self.y) / self.sigma

    def jacobian(self, theta):
        """Analytic Jacobian of the residuals (effsize, additive); finite differences for kumar."""
        la, alpha = theta[1], theta[2]
        n, k = self.y.size, theta.size
        jac = np.zeros((n, k))
        jac[:, 0] = 1.0
        if self.form == "kumar":
            h = 1e-7
            t = theta.copy()
            t[3] += h
            jac[:, 3] = (self.predict(t) - self.predict(theta)) / h
            lg = np.log(g_parametric(self.bits, math.exp(theta[3]), "kumar"))
        else:
            lg = np.r_[theta[3:], 0.0][self.bidx] if self.form == "effsize" else 0.0
        z = self.x + lg
        p = np.exp(la - alpha * z)
        jac[:, 1] = p
        jac[:, 2] = -p * z
        q = self.bidx >= 0
        if self.form == "effsize":
            jac[np.nonzero(q)[0], 3 + self.bidx[q]] = -alpha * p[q]
        elif self.form == "additive":
            jac[np.nonzero(q)[0], 3 + self.bidx[q]] = 1.0
        return jac / self.sigma[:, None]

    def starts(self) -> list[np.ndarray]:
        e0 = 0.5 * float(self.y.min())
        la = math.log(max(float(self.y.mean()) - e0, 1e-6))
        tail = {
            "effsize": np.zeros(self.qbits.size),
            "kumar": np.array([math.log(2.0)]),
            "additive": np.zeros(self.qbits.size),
        }[self.form]
        return [np.clip(np.r_[e0, la, a, tail], self.bounds[0], self.bounds[1]) for a in (0.2, 0.5, 1.0)]

    def solve(self, starts) -> np.ndarray:
        best = None
        for s in starts:
            r = least_squares(
                self.residuals,
                s,
                jac=self.jacobian,
                bounds=self.bounds,
                method="trf",
                x_scale="jac",
                xtol=1e-9,
                ftol=1e-9,
                gtol=1e-9,
                max_nfev=1000,
            )
            if best is None or r.cost < best.cost - 1e-15:
                best = r
        return best.x

    def law(self, theta: np.ndarray, g_form: str, n_range) -> ScalingLaw:
        E, a0, alpha = float(theta[0]), float(math.exp(theta[1])), float(theta[2])
        g, d, gamma, scale = {FLOAT_BITS: 1.0}, {}, math.nan, 1.0
        if self.form == "effsize":
            g.update({int(b): float(math.exp(v)) for b, v in zip(self.qbits, theta[3:])})
            gamma, scale = _fit_g_param(self.qbits.astype(float), np.asarray(theta[3:], float), g_form)
        elif self.form == "kumar":
            gamma = float(math.exp(theta[3]))
            g.update({int(b): float(g_parametric(b, gamma, "kumar")) for b in self.qbits})
            g_form = "kumar"
        else:
            g = {}
            d = {FLOAT_BITS: 0.0, **{int(b): float(v) for b, v in zip(self.qbits, theta[3:])}}
            g_form = "none"
        return ScalingLaw(
            form=self.form,
            E=E,
            a0=a0,
            alpha=alpha,
            n0=self.n0,
            g_trained=g,
            g_form=g_form,
            gamma=gamma,
            n_range=n_range,
            d_trained=d,
            g_scale=scale,
        )


def _n_range(stats):
    return float(stats["n_weights"].min()), float(stats["n_weights"].max())


def fit(
    cells: pd.DataFrame, form: str = DEFAULT_FORM, g_form: str = DEFAULT_G_FORM, weights: str = DEFAULT_WEIGHTS
) -> ScalingLaw:
    """Fit the law to the seed means of ``cells`` (deterministic: fixed starts, trf).

    ``cells`` has n_weights, bits, error or test_error, optionally seed and
    width.  Least squares on seed-mean errors (``weights="se"`` divides each
    residual by its standard error, floored at the median one); three starts
    of alpha, best cost kept.
    """
    stats = cell_stats(cells)
    prob = _Problem(stats, form, weights)
    return prob.law(prob.solve(prob.starts()), g_form, _n_range(stats))


# --------------------------------------------------------------------------
# Bootstrap over seeds
# --------------------------------------------------------------------------


def _boot_means(cells: pd.DataFrame, stats: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_cells) seed-mean errors of resampled tables, aligned with ``stats``.

    Per n_weights (width) one multiset of seed labels is drawn with
    replacement and applied to every bits value of that width.  Without a
    ``seed`` column the rows of each cell are resampled independently.
    """
    rng = np.random.default_rng(seed)
    err_col = "error" if "error" in cells.columns else "test_error"
    df = pd.DataFrame(
        {
            "n_weights": cells["n_weights"].to_numpy(float),
            "bits": np.minimum(cells["bits"].to_numpy(float), FLOAT_BITS).astype(int),
            "error": cells[err_col].to_numpy(float),
        }
    )
    if "seed" in cells.columns:
        df["seed"] = cells["seed"].to_numpy()
    else:
        df["seed"] = df.groupby(["n_weights", "bits"]).cumcount()
    key = pd.MultiIndex.from_frame(stats[["n_weights", "bits"]])
    table = df.pivot_table(index=["n_weights", "bits"], columns="seed", values="error", aggfunc="mean")
    table = table.reindex(key)
    err = table.to_numpy(float)  # (cells, seeds), NaN where a seed is missing
    present = np.isfinite(err)
    err0 = np.where(present, err, 0.0)
    n_cells, n_seeds = err.shape
    widths, width_of = np.unique(stats["n_weights"].to_numpy(float), return_inverse=True)
    shared = "seed" in cells.columns
    out = np.empty((n_boot, n_cells))
    for i in range(n_boot):
        w = np.zeros((n_cells, n_seeds))
        if shared:
            for j in range(widths.size):
                rows = np.nonzero(width_of == j)[0]
                avail = np.nonzero(present[rows].any(axis=0))[0]
                counts = np.bincount(rng.choice(avail, size=avail.size), minlength=n_seeds)
                w[rows] = counts
        else:
            for c in range(n_cells):
                avail = np.nonzero(present[c])[0]
                w[c] = np.bincount(rng.choice(avail, size=avail.size), minlength=n_seeds)
        w = w * present
        tot = w.sum(axis=1)
        mean = (w * err0).sum(axis=1) / np.where(tot > 0, tot, 1.0)
        out[i] = np.where(tot > 0, mean, stats["error"].to_numpy(float))  # cell missing the drawn seeds
    return out


def bootstrap(
    cells: pd.DataFrame,
    n_boot: int = 200,
    seed: int = 0,
    form: str = DEFAULT_FORM,
    g_form: str = DEFAULT_G_FORM,
    weights: str = DEFAULT_WEIGHTS,
    level: float = DEFAULT_LEVEL,
) -> ScalingLaw:
    """Fit the law and ``n_boot`` laws on seed-resampled tables (warm-started from the fit)."""
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    stats = cell_stats(cells)
    prob = _Problem(stats, form, weights)
    theta = prob.solve(prob.starts())
    n_range = _n_range(stats)
    main = prob.law(theta, g_form, n_range)
    laws = []
    y0 = prob.y
    for means in _boot_means(cells, stats, n_boot, seed):
        prob.y = means
        t = np.clip(theta, prob.bounds[0], prob.bounds[1])
        laws.append(prob.law(prob.solve([t]), g_form, n_range))
    prob.y = y0
    return dataclasses.replace(main, boot=tuple(laws), level=level)


# --------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------


def cv_leave_one_width_out(
    cells: pd.DataFrame, form: str = DEFAULT_FORM, weights: str = DEFAULT_WEIGHTS
) -> pd.DataFrame:
    """Per held-out size: fit on the other sizes, predict every bits value there.

    One row per held-out cell: held_out (its width, or n_weights without a
    width column), bits, n_weights, error (seed mean), se, predicted, abs_error.
    """
    stats = cell_stats(cells)
    col = "width" if "width" in stats.columns else "n_weights"
    rows = []
    for held in np.unique(stats[col]):
        train, test = stats[stats[col] != held], stats[stats[col] == held]
        if train["n_weights"].nunique() < 3:
            raise ValueError("leave-one-width-out needs at least 4 widths")
        prob = _Problem(train, form, weights)
        law = prob.law(prob.solve(prob.starts()), "kumar", _n_range(train))
        pred = law.predict(test["n_weights"], test["bits"])
        rows.append(test.assign(held_out=held, predicted=pred))
    return _cv_frame(rows)


def cv_leave_one_bits_out(
    cells: pd.DataFrame, g_form: str = DEFAULT_G_FORM, weights: str = DEFAULT_WEIGHTS
) -> pd.DataFrame:
    """Per held-out quantized bits value: fit on the others, predict it from the parametric g.

    ``g_form="kumar"`` etc. fits the free-g law and then gamma; ``"joint"``
    fits Kumar's g jointly with the size law (form ``kumar``).
    """
    stats = cell_stats(cells)
    rows = []
    for held in sorted(set(stats["bits"]) - {FLOAT_BITS}):
        train, test = stats[stats["bits"] != held], stats[stats["bits"] == held]
        form = "kumar" if g_form == "joint" else "effsize"
        prob = _Problem(train, form, weights)
        law = prob.law(prob.solve(prob.starts()), "kumar" if g_form == "joint" else g_form, _n_range(train))
        pred = law.predict(test["n_weights"], test["bits"])
        rows.append(test.assign(held_out=held, predicted=pred))
    return _cv_frame(rows)


def _cv_frame(rows) -> pd.DataFrame:
    out = pd.concat(rows, ignore_index=True)
    out["abs_error"] = (out["predicted"] - out["error"]).abs()
    return out


def cv_summary(cv: pd.DataFrame) -> pd.DataFrame:
    """Per held-out value: mean and max absolute error, mean standard error, cell count."""
    return (
        cv.groupby("held_out", sort=True)
        .agg(
            mae=("abs_error", "mean"),
            max_abs=("abs_error", "max"),
            mean_se=("se", "mean"),
            n_cells=("abs_error", "count"),
        )
        .reset_index()
    )


# --------------------------------------------------------------------------
# Read-off ECR intervals
# --------------------------------------------------------------------------


def readoff_ecr_intervals(
    summary: pd.DataFrame,
    n_boot: int = 200,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    reference_bits: int = FLOAT_BITS,
) -> pd.DataFrame:
    """Bootstrap interval of the read-off ECR per (width, bits): width, bits, ecr_lo, ecr_hi.

    The same seed resampling as :func:`bootstrap`, then
    :func:`qdesign.analysis.ecr.effective_compression_ratio` on each resampled table
    of seed means.
    """
    stats = cell_stats(summary)
    if "width" not in stats.columns:
        raise ValueError("summary is missing required column: width")
    draws = _boot_means(summary, stats, n_boot, seed)
    base = stats[["n_weights", "bits"]].copy()
    ecrs = np.empty_like(draws)
    for i, means in enumerate(draws):
        res = effective_compression_ratio(base.assign(error=means), reference_bits=reference_bits, average_seeds=False)
        ecrs[i] = res["ecr"].to_numpy(float)
    q = (1 - level) / 2
    out = stats[["width", "bits"]].copy().reset_index(drop=True)
    out["ecr_lo"] = np.quantile(ecrs, q, axis=0)
    out["ecr_hi"] = np.quantile(ecrs, 1 - q, axis=0)
    return out


# --------------------------------------------------------------------------
# The tidy table and back
# --------------------------------------------------------------------------

_COLUMNS = [
    "kind",
    "name",
    "form",
    "g_form",
    "bits",
    "held_out",
    "boot",
    "value",
    "lo",
    "hi",
    "level",
    "mae",
    "max_abs",
    "mean_se",
    "n_cells",
]


def _law_rows(law: ScalingLaw, boot: int | None) -> list[dict]:
    rows = [{"name": k, "value": v} for k, v in law.params().items() if k != "A" or boot is None]
    keys = law.d_trained if law.form == "additive" else law.g_trained
    name = "d" if law.form == "additive" else "g"
    rows += [{"name": name, "bits": float(b), "value": float(keys[b])} for b in sorted(keys)]
    for r in rows:
        r.update(kind="boot" if boot is not None else "param", boot=boot, form=law.form, g_form=law.g_form)
    return rows


def scaling_table(
    summary: pd.DataFrame,
    n_boot: int = 200,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    form: str = DEFAULT_FORM,
    g_form: str = DEFAULT_G_FORM,
    weights: str = DEFAULT_WEIGHTS,
    cv: str = "default",
    extra_bits=(1, 7, 10),
) -> pd.DataFrame:
    """One long table for ``results/<study>/scaling.parquet``; ``kind`` says what a row is.

    * ``param``: E, A, a0, alpha, n0, gamma, n_min, n_max (value, lo, hi) and
      ``g`` per trained bits (name "g", bits);
    * ``g``: g(b) for trained and ``extra_bits`` (name "trained"/"parametric");
    * ``ecr_model``: g(b) * 32 / b per bits value;
    * ``cv``: leave-one-width-out (name "width", per form) and leave-one-bits-out
      (name "bits", per g_form) held-out mean/max absolute error: for the chosen
      form and g_form with ``cv="default"``, for all of them with ``"all"``
      (slower), none with ``"none"``;
    * ``boot``: the bootstrap laws' parameters (column ``boot``), so that
      :func:`law_from_table` rebuilds the intervals without refitting.
    """
    if cv not in ("default", "all", "none"):
        raise ValueError(f"cv must be 'default', 'all' or 'none', got {cv!r}")
    law = bootstrap(summary, n_boot=n_boot, seed=seed, form=form, g_form=g_form, weights=weights, level=level)
    rows = _law_rows(law, None)
    q = (1 - level) / 2
    for r in rows:
        if r["name"] in ("g", "d"):
            vals = [
                (lw.d_trained if lw.form == "additive" else lw.g_trained).get(int(r["bits"]), np.nan) for lw in law.boot
            ]
        else:
            vals = [lw.params()[r["name"]] for lw in law.boot]
        vals = np.asarray(vals, float)
        if np.isfinite(vals).any():
            r.update(lo=float(np.nanquantile(vals, q)), hi=float(np.nanquantile(vals, 1 - q)), level=level)
    if form != "additive":
        bits = np.array(sorted(set(law.trained_bits) | {int(b) for b in extra_bits}), dtype=float)
        g_lo, g_hi = law.interval(lambda lw: lw.g(bits))
        e_lo, e_hi = law.interval(lambda lw: lw.model_ecr(bits))
        for b, gv, gl, gh, ev, el, eh in zip(bits, law.g(bits), g_lo, g_hi, law.model_ecr(bits), e_lo, e_hi):
            name = "trained" if int(b) in law.trained_bits else "parametric"
            rows.append({"kind": "g", "name": name, "bits": b, "value": gv, "lo": gl, "hi": gh, "level": level})
            rows.append({"kind": "ecr_model", "name": name, "bits": b, "value": ev, "lo": el, "hi": eh, "level": level})
    for r in rows[len(_law_rows(law, None)) :]:
        r.update(form=law.form, g_form=law.g_form)
    for i, lw in enumerate(law.boot):
        rows += _law_rows(lw, i)
    if cv != "none":
        for f in FORMS if cv == "all" else (form,):
            for s in cv_summary(cv_leave_one_width_out(summary, form=f, weights=weights)).itertuples():
                rows.append(
                    {
                        "kind": "cv",
                        "name": "width",
                        "form": f,
                        "held_out": float(s.held_out),
                        "mae": s.mae,
                        "max_abs": s.max_abs,
                        "mean_se": s.mean_se,
                        "n_cells": s.n_cells,
                    }
                )
        if len(set(cell_stats(summary)["bits"])) > 2 and form == "effsize":
            for gf in (*G_FORMS, "joint") if cv == "all" else (g_form,):
                for s in cv_summary(cv_leave_one_bits_out(summary, g_form=gf, weights=weights)).itertuples():
                    rows.append(
                        {
                            "kind": "cv",
                            "name": "bits",
                            "form": "kumar" if gf == "joint" else "effsize",
                            "g_form": gf,
                            "held_out": float(s.held_out),
                            "mae": s.mae,
                            "max_abs": s.max_abs,
                            "mean_se": s.mean_se,
                            "n_cells": s.n_cells,
                        }
                    )
    out = pd.DataFrame(rows).reindex(columns=_COLUMNS)
    for c in ("bits", "held_out", "boot", "value", "lo", "hi", "level", "mae", "max_abs", "mean_se", "n_cells"):
        out[c] = out[c].astype(float)
    for c in ("kind", "name", "form", "g_form"):
        out[c] = out[c].astype(object)
    return out


_LAW_COLUMNS = ("name", "bits", "value", "form", "g_form")


def _law_from_rows(rows: list[tuple], level: float) -> ScalingLaw:
    """One law from its rows' (name, bits, value, form, g_form), in table order."""
    p = {n: v for n, _, v, _, _ in rows if n not in ("g", "d")}
    g = {int(b): float(v) for n, b, v, _, _ in rows if n == "g"}
    d = {int(b): float(v) for n, b, v, _, _ in rows if n == "d"}
    return ScalingLaw(
        form=str(rows[0][3]),
        E=float(p["E"]),
        a0=float(p["a0"]),
        alpha=float(p["alpha"]),
        n0=float(p["n0"]),
        g_trained=g,
        g_form=str(rows[0][4]),
        gamma=float(p["gamma"]),
        n_range=(float(p["n_min"]), float(p["n_max"])),
        d_trained=d,
        g_scale=float(p.get("g_scale", 1.0)),
        level=level,
    )


def _rows(table: pd.DataFrame) -> list[tuple]:
    return list(zip(*(table[c].tolist() for c in _LAW_COLUMNS)))


def law_from_table(table: pd.DataFrame) -> ScalingLaw:
    """Rebuild the fitted law (with its bootstrap laws) from :func:`scaling_table`'s output."""
    if not isinstance(table, pd.DataFrame) or "kind" not in table.columns:
        raise ValueError("not a scaling table: no 'kind' column")
    params = table[table["kind"] == "param"]
    if params.empty:
        raise ValueError("scaling table has no 'param' rows")
    lv = params["level"].dropna()
    level = float(lv.iloc[0]) if len(lv) else DEFAULT_LEVEL
    law = _law_from_rows(_rows(params), level)
    # the bootstrap laws, by replicate in ascending order, rows in table order (as a groupby
    # on "boot" would give them; plain lists: 200 replicates in 0.05 s instead of 1 s)
    boot = table[table["kind"] == "boot"]
    replicates: dict[float, list[tuple]] = {}
    for b, row in zip(boot["boot"].tolist(), _rows(boot)):
        if b == b:  # not NaN
            replicates.setdefault(b, []).append(row)
    laws = tuple(_law_from_rows(replicates[b], level) for b in sorted(replicates))
    return dataclasses.replace(law, boot=laws)
