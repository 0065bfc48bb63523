"""A predictive design model: error as a function of network size and bits,
fitted and chosen on validation data.

The read-off ECR (:func:`qdesign.analysis.ecr.effective_compression_ratio`)
inverts the measured float curve cell by cell and inherits every wiggle of it.
Here one smooth law per retraining method is fitted to all seed-mean
*validation* errors of a study (x = log(N / n0), N the number of weights, n0
their geometric mean; ``*_b`` one parameter per trained bits value, 0 for
float)::

    effsize   err = E + a exp(-alpha (x + lg_b))            a b-bit net of N weights acts like a float one of N e^lg_b
    penalty   err = E + a exp(-alpha x) + c_b exp(-beta x)  quantization costs its own power of N
    additive  err = E + a exp(-alpha x) + d_b               a constant cost per bits value

The form is chosen by held-out validation error (leave one width out, and
leave one bits value out), and its reported accuracy comes from a *nested*
cross-validation that repeats that choice inside every fold
(:func:`nested_cv`), so the number reported is not the one the choice was
made on. Untrained bits between trained ones interpolate ``*_b`` linearly in
b; beyond them it is extrapolated (from the nearest two, flat above the
largest) and marked as such. The floor E is free (0 <= E <= the largest
error), not pinned to the smallest measured one.

Test error is never read by a fit, a choice or an interval: it is read only
to *measure* the intervals' coverage (:func:`nested_cv`'s ``test_error``
column). Prediction intervals: :mod:`qdesign.analysis.intervals`. Parameter
intervals: a bootstrap over seeds (:mod:`qdesign.analysis.bootstrap`).
Pure numpy/scipy/pandas: no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from ..core.constants import FLOAT_BITS
from ..core.errors import TableError
from ..core.precision import is_float_bits
from .bootstrap import DEFAULT_LEVEL, boot_means, seed_table
from .intervals import IntervalModel
from .tables import FLOAT_METHOD, flagged, retraining_methods, with_method

__all__ = [
    "FORMS",
    "MIN_WIDTHS",
    "ScalingLaw",
    "cell_stats",
    "cv_residuals",
    "fit",
    "fit_study",
    "interval_model",
    "law_from_table",
    "nested_cv",
    "scaling_table",
    "select_form",
]

FORMS = ("effsize", "penalty", "additive")
TARGET = "val_error"
"""What the law is fitted on. Choices read validation error only."""
MIN_WIDTHS = 4
"""Fewer widths leave no leave-one-width-out to choose and check a form with."""

_LOG_A = (math.log(1e-7), math.log(2.0))
_RATE = (0.02, 3.0)
_PER_BITS = {"effsize": (math.log(1e-4), math.log(8.0)), "penalty": (-0.5, 0.5), "additive": (-0.5, 0.5)}


# --------------------------------------------------------------------------
# The law
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ScalingLaw:
    """A fitted err(N, b) of one retraining method; :meth:`predict` takes arrays.

    ``a0`` is the excess error of a float network at the reference size
    ``n0``; ``per_bits`` maps each trained quantized bits value to its
    parameter (lg_b, c_b or d_b of the form). ``boot`` holds the laws fitted
    on seed-resampled tables (parameter intervals)."""

    form: str
    E: float
    a0: float
    alpha: float
    beta: float
    n0: float
    per_bits: Mapping[int, float]
    n_range: tuple[float, float]
    method: str = "fixed"
    boot: tuple = ()
    level: float = DEFAULT_LEVEL

    @property
    def trained_bits(self) -> tuple[int, ...]:
        return tuple(sorted(int(b) for b in self.per_bits))

    def bits_kind(self, bits) -> str:
        """``float``, ``trained``, ``interpolated`` (between trained bits) or ``extrapolated``."""
        b = int(bits)
        if is_float_bits(b):
            return "float"
        trained = self.trained_bits
        if b in trained:
            return "trained"
        return "interpolated" if trained and trained[0] < b < trained[-1] else "extrapolated"

    def theta(self, bits) -> np.ndarray:
        """The per-bits parameter of each bits value (0 for float): trained values
        as fitted, others linear in b between the nearest trained ones, linear
        from the nearest two below the smallest, flat above the largest."""
        b = np.asarray(bits, dtype=float)
        keys = np.array(self.trained_bits, dtype=float)
        vals = np.array([self.per_bits[int(k)] for k in keys], dtype=float)
        out = np.interp(b, keys, vals) if keys.size else np.zeros(b.shape)
        if keys.size >= 2:
            slope = (vals[1] - vals[0]) / (keys[1] - keys[0])
            below = b < keys[0]
            out = np.where(below, vals[0] + slope * (b - keys[0]), out)
        lo, hi = _PER_BITS[self.form]
        out = np.clip(out, lo, hi)
        return np.where(is_float_bits(b), 0.0, out)

    def predict(self, n_weights, bits) -> np.ndarray:
        """Predicted (validation) error for each (n_weights, bits) pair (broadcast)."""
        n, b = np.broadcast_arrays(np.asarray(n_weights, dtype=float), np.asarray(bits, dtype=float))
        return _predict(self.form, self.E, self.a0, self.alpha, self.beta, np.log(n / self.n0), self.theta(b))

    def float_equivalent(self, n_weights, bits) -> np.ndarray:
        """Weights a float network needs to reach the law's error of (n_weights,
        bits); inf where that error is at or below the floor E."""
        excess = self.predict(n_weights, bits) - self.E
        with np.errstate(divide="ignore", invalid="ignore"):
            x = -np.log(excess / self.a0) / self.alpha
            return np.where(excess > 0, self.n0 * np.exp(x), np.inf)

    def model_ecr(self, n_weights, bits, reference_bits: int = FLOAT_BITS) -> np.ndarray:
        """The law's ECR at a size: float-equivalent weights x reference bits /
        (weights x bits). Width-independent only for ``effsize``."""
        n, b = np.broadcast_arrays(np.asarray(n_weights, dtype=float), np.asarray(bits, dtype=float))
        return self.float_equivalent(n, b) * reference_bits / (n * np.minimum(b, FLOAT_BITS))

    def params(self) -> dict[str, float]:
        return {
            "E": self.E,
            "a0": self.a0,
            "alpha": self.alpha,
            "beta": self.beta,
            "n0": self.n0,
            "n_min": self.n_range[0],
            "n_max": self.n_range[1],
        }


def _predict(form, E, a0, alpha, beta, x, theta):
    if form == "effsize":
        return E + a0 * np.exp(-alpha * (x + theta))
    if form == "penalty":
        return E + a0 * np.exp(-alpha * x) + theta * np.exp(-beta * x)
    return E + a0 * np.exp(-alpha * x) + theta


# --------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------


def cell_stats(cells: pd.DataFrame, target: str = TARGET) -> pd.DataFrame:
    """Seed means per (width, n_weights, bits) of ``target``: error, its standard
    error (``se``, 0 for a single seed) and ``n_seeds``. Float bits are 32.
    Refuses (one line) missing columns, non-finite errors or errors outside [0, 1]."""
    if not isinstance(cells, pd.DataFrame):
        raise TableError("cells must be a pandas DataFrame")
    missing = [c for c in ("n_weights", "bits", target) if c not in cells.columns]
    if missing:
        raise TableError(f"the study table lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    err = cells[target].to_numpy(float)
    if not np.all(np.isfinite(err)):
        n_bad = int((~np.isfinite(err)).sum())
        raise TableError(f"{target} has {n_bad} non-finite value{'s' if n_bad != 1 else ''}: rerun those cells")
    if np.any((err < 0) | (err > 1)):
        raise TableError(f"{target} must be a fraction in [0, 1]; found {err.min():.4g}..{err.max():.4g}")
    if not np.all(cells["n_weights"].to_numpy(float) > 0):
        raise TableError("n_weights must be positive")
    df = pd.DataFrame(
        {
            "width": cells["width"].to_numpy() if "width" in cells.columns else cells["n_weights"].to_numpy(),
            "n_weights": cells["n_weights"].to_numpy(float),
            "bits": np.minimum(cells["bits"].to_numpy(float), FLOAT_BITS).astype(int),
            "error": err,
        }
    )
    out = (
        df.groupby(["width", "n_weights", "bits"], sort=True)
        .agg(error=("error", "mean"), std=("error", "std"), n_seeds=("error", "count"))
        .reset_index()
    )
    out["se"] = (out["std"] / np.sqrt(out["n_seeds"])).fillna(0.0)
    if not (out["bits"] == FLOAT_BITS).any():
        raise TableError(f"the study table has no float rows (bits {FLOAT_BITS}): the law needs the float curve")
    return out.drop(columns="std")


# --------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------


class _Problem:
    """Weighted least squares of one form on one set of seed means."""

    def __init__(self, stats: pd.DataFrame, form: str):
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.form = form
        n = stats["n_weights"].to_numpy(float)
        self.n0 = float(np.exp(np.mean(np.log(np.unique(n)))))
        self.x = np.log(n / self.n0)
        bits = stats["bits"].to_numpy(int)
        self.qbits = np.array(sorted(set(bits[bits < FLOAT_BITS])), dtype=int)
        self.bidx = np.searchsorted(self.qbits, bits)
        self.bidx[bits >= FLOAT_BITS] = -1
        self.y = stats["error"].to_numpy(float)
        se = stats["se"].to_numpy(float)
        self.sigma = np.sqrt(se**2 + max(float(np.median(se)), 1e-4) ** 2)
        k = self.qbits.size
        self.n_head = 4 if form == "penalty" else 3
        lo = [0.0, _LOG_A[0], _RATE[0]] + ([_RATE[0]] if form == "penalty" else []) + [_PER_BITS[form][0]] * k
        hi = [max(float(self.y.max()), 1e-6), _LOG_A[1], _RATE[1]] + ([_RATE[1]] if form == "penalty" else [])
        hi += [_PER_BITS[form][1]] * k
        self.bounds = (np.array(lo), np.array(hi))

    def _theta(self, t: np.ndarray) -> np.ndarray:
        return np.r_[t[self.n_head :], 0.0][self.bidx]

    def predict(self, t: np.ndarray) -> np.ndarray:
        beta = t[3] if self.form == "penalty" else math.nan
        return _predict(self.form, t[0], math.exp(t[1]), t[2], beta, self.x, self._theta(t))

    def residuals(self, t):
        return (self.predict(t) - self.y) / self.sigma

    def jacobian(self, t):
        n, k = self.y.size, t.size
        jac = np.zeros((n, k))
        jac[:, 0] = 1.0
        a, alpha, th = math.exp(t[1]), t[2], self._theta(t)
        q = np.nonzero(self.bidx >= 0)[0]
        cols = self.n_head + self.bidx[q]
        if self.form == "effsize":
            z = self.x + th
            p = a * np.exp(-alpha * z)
            jac[:, 1], jac[:, 2] = p, -p * z
            jac[q, cols] = -alpha * p[q]
        else:
            p = a * np.exp(-alpha * self.x)
            jac[:, 1], jac[:, 2] = p, -p * self.x
            if self.form == "penalty":
                e = np.exp(-t[3] * self.x)
                jac[:, 3] = -th * self.x * e
                jac[q, cols] = e[q]
            else:
                jac[q, cols] = 1.0
        return jac / self.sigma[:, None]

    def starts(self) -> list[np.ndarray]:
        e0 = 0.5 * float(self.y.min())
        la = math.log(max(float(self.y.mean()) - e0, 1e-6))
        tail = np.zeros(self.qbits.size)
        out = []
        for alpha in (0.2, 0.5, 1.0):
            head = [e0, la, alpha] + ([alpha] if self.form == "penalty" else [])
            out.append(np.clip(np.r_[head, tail], self.bounds[0], self.bounds[1]))
        return out

    def start_from(self, law: ScalingLaw) -> np.ndarray:
        """A start near ``law`` (fitted on related cells): its parameters moved to
        this problem's reference size, its per-bits values read at these bits."""
        shift = math.log(self.n0 / law.n0)
        head = [law.E, math.log(law.a0) - law.alpha * shift, law.alpha]
        if self.form == "penalty":
            head.append(law.beta)
        tail = np.asarray(law.theta(self.qbits), float)
        if self.form == "penalty":
            tail = tail * math.exp(-law.beta * shift)
        return np.clip(np.r_[head, tail], self.bounds[0], self.bounds[1])

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
                xtol=1e-10,
                ftol=1e-10,
                gtol=1e-10,
                max_nfev=2000,
            )
            if best is None or r.cost < best.cost - 1e-15:
                best = r
        return best.x

    def law(self, t: np.ndarray, n_range, method: str) -> ScalingLaw:
        return ScalingLaw(
            form=self.form,
            E=float(t[0]),
            a0=float(math.exp(t[1])),
            alpha=float(t[2]),
            beta=float(t[3]) if self.form == "penalty" else math.nan,
            n0=self.n0,
            per_bits={int(b): float(v) for b, v in zip(self.qbits, t[self.n_head :])},
            n_range=n_range,
            method=method,
        )


def _n_range(stats) -> tuple[float, float]:
    return float(stats["n_weights"].min()), float(stats["n_weights"].max())


def fit(stats: pd.DataFrame, form: str, method: str = "fixed", near: ScalingLaw | None = None) -> ScalingLaw:
    """The law of ``form`` fitted to seed means (:func:`cell_stats`): weighted
    least squares (each residual over sqrt(se^2 + median se^2)), three fixed
    starts of alpha, the best kept; deterministic. ``near``: a law of the same
    form fitted on related cells (cross-validation folds), whose parameters
    replace two of the three starts."""
    prob = _Problem(stats, form)
    starts = prob.starts() if near is None else [prob.start_from(near), prob.starts()[1]]
    return prob.law(prob.solve(starts), _n_range(stats), method)


# --------------------------------------------------------------------------
# Cross-validation and the choice of form
# --------------------------------------------------------------------------


def cv_residuals(stats: pd.DataFrame, form: str, by: str, near: ScalingLaw | None = None) -> pd.DataFrame:
    """Leave one width (``by="width"``) or one quantized bits value (``"bits"``)
    out: fit on the rest, predict the held-out cells. One row per held-out
    cell with ``predicted``, ``residual`` (error - predicted) and ``pool``
    (:data:`qdesign.analysis.intervals.POOLS`: inside the trained range or at
    its end)."""
    if by == "width":
        values = np.unique(stats["width"])
    elif by == "bits":
        values = np.array(sorted(set(stats["bits"]) - {FLOAT_BITS}))
    else:
        raise ValueError(f"by must be 'width' or 'bits', got {by!r}")
    rows = []
    for held in values:
        train, test = stats[stats[by] != held], stats[stats[by] == held]
        if by == "width" and train["width"].nunique() < MIN_WIDTHS - 1:
            raise TableError(f"leave-one-width-out needs at least {MIN_WIDTHS} widths")
        if by == "bits" and not (set(train["bits"]) - {FLOAT_BITS}):
            continue
        law = fit(train, form, near=near)
        end = held == values.min() or held == values.max()
        rows.append(
            test.assign(
                held_out=held,
                predicted=law.predict(test["n_weights"], test["bits"]),
                pool=f"{by}_end" if end else by,
            )
        )
    if not rows:
        return pd.DataFrame(columns=[*stats.columns, "held_out", "predicted", "pool", "residual"])
    out = pd.concat(rows, ignore_index=True)
    out["residual"] = out["error"] - out["predicted"]
    return out


def _cv_score(stats: pd.DataFrame, form: str) -> float:
    """Mean absolute held-out error (points as fractions) of a form: leave one
    width out, and leave one bits value out where there are at least 3 bits."""
    near = fit(stats, form)
    parts = [cv_residuals(stats, form, "width", near)["residual"].abs().to_numpy()]
    if len(set(stats["bits"]) - {FLOAT_BITS}) >= 3:
        parts.append(cv_residuals(stats, form, "bits", near)["residual"].abs().to_numpy())
    return float(np.mean([p.mean() for p in parts if p.size]))


def select_form(stats: pd.DataFrame, forms: Iterable[str] = FORMS) -> tuple[str, dict[str, float]]:
    """The form with the smallest held-out validation error (:func:`_cv_score`;
    ties: the earlier in ``forms``), and every form's score."""
    scores = {f: _cv_score(stats, f) for f in forms}
    return min(scores, key=lambda f: (scores[f], list(scores).index(f))), scores


def interval_model(stats: pd.DataFrame, form: str, n_val: int, n_test: int, level: float) -> IntervalModel:
    """Residual pools of ``form`` on ``stats`` (both cross-validations)."""
    near = fit(stats, form)
    res = [cv_residuals(stats, form, "width", near)]
    if len(set(stats["bits"]) - {FLOAT_BITS}) >= 2:
        res.append(cv_residuals(stats, form, "bits", near))
    res = pd.concat(res, ignore_index=True)
    pools = {p: g["residual"].to_numpy(float) for p, g in res.groupby("pool")}
    return IntervalModel(pools, int(n_val), int(n_test), level)


def design_pool(law: ScalingLaw, n_weights: float, bits: int) -> str:
    """Which residual pool carries a design's uncertainty: an untrained bits
    value's (inside or beyond the trained bits), else an extrapolated width's
    (beyond the trained sizes), else an interpolated width's."""
    kind = law.bits_kind(bits)
    if kind in ("interpolated", "extrapolated"):
        return "bits" if kind == "interpolated" else "bits_end"
    lo, hi = law.n_range
    return "width" if lo * (1 - 1e-9) <= n_weights <= hi * (1 + 1e-9) else "width_end"


def nested_cv(
    val_stats: pd.DataFrame, test_stats: pd.DataFrame, n_val: int, n_test: int, level: float = DEFAULT_LEVEL
) -> pd.DataFrame:
    """The law's honest accuracy and its intervals' coverage: per held-out width
    and per held-out quantized bits value, the form is chosen, the law fitted
    and its residual pools built on the rest only (validation means), then the
    held-out cells are predicted with intervals. ``test_error`` (the held-out
    cells' test means) is joined afterwards, for measuring coverage only."""
    rows = []
    for by in ("width", "bits"):
        values = np.unique(val_stats["width"]) if by == "width" else sorted(set(val_stats["bits"]) - {FLOAT_BITS})
        for held in values:
            train, test = val_stats[val_stats[by] != held], val_stats[val_stats[by] == held]
            if train["width"].nunique() < MIN_WIDTHS or (by == "bits" and len(set(train["bits"]) - {32}) < 2):
                continue
            form, _ = select_form(train)
            law = fit(train, form)
            model = interval_model(train, form, n_val, n_test, level)
            for r in test.itertuples():
                pred = float(law.predict(r.n_weights, r.bits))
                lo, hi = model.interval(pred, design_pool(law, r.n_weights, r.bits))
                rows.append(
                    {
                        "by": by,
                        "held_out": float(held),
                        "form": form,
                        "width": r.width,
                        "n_weights": r.n_weights,
                        "bits": r.bits,
                        "val_error": r.error,
                        "se": r.se,
                        "predicted": pred,
                        "lo": lo,
                        "hi": hi,
                    }
                )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    test_means = test_stats.set_index(["width", "bits"])["error"].rename("test_error")
    out = out.join(test_means, on=["width", "bits"])
    out["abs_error"] = (out["predicted"] - out["val_error"]).abs()
    out["covered"] = (out["test_error"] >= out["lo"]) & (out["test_error"] <= out["hi"])
    return out


# --------------------------------------------------------------------------
# One study
# --------------------------------------------------------------------------


def _law_rows(summary: pd.DataFrame, method: str) -> pd.DataFrame:
    """The float rows and ``method``'s rows of a summary, flagged cells (diverged,
    chance level: no result) left out."""
    df = with_method(summary)
    df = df[df["method"].isin([FLOAT_METHOD, method])]
    return df[~flagged(df)]


def fit_study(
    summary: pd.DataFrame, method: str, n_boot: int = 100, seed: int = 0, level: float = DEFAULT_LEVEL
) -> tuple[ScalingLaw, IntervalModel, dict[str, float]]:
    """The law of one method of a study (form chosen on validation error), its
    interval model, and every form's held-out score. ``n_boot`` laws on
    seed-resampled validation means give the parameter intervals (``law.boot``)."""
    rows = _law_rows(summary, method)
    stats = cell_stats(rows, TARGET)
    if stats["width"].nunique() < MIN_WIDTHS:
        raise TableError(
            f"{stats['width'].nunique()} widths: the law needs at least {MIN_WIDTHS} (leave-one-width-out)"
        )
    form, scores = select_form(stats)
    law = fit(stats, form, method)
    n_val, n_test = int(rows["n_val"].median()), int(rows["n_test"].median())
    model = interval_model(stats, form, n_val, n_test, level)
    boot = []
    if n_boot:
        table = seed_table(rows, TARGET)
        key = pd.MultiIndex.from_frame(stats[["width", "n_weights", "bits"]])
        draws = boot_means(table.reindex(key), n_boot, seed)
        prob = _Problem(stats, form)
        start = np.r_[law.E, math.log(law.a0), law.alpha]
        start = np.r_[start, [law.beta] if form == "penalty" else [], [law.per_bits[int(b)] for b in prob.qbits]]
        for means in draws:
            prob.y = means
            boot.append(prob.law(prob.solve([np.clip(start, *prob.bounds)]), law.n_range, method))
    return dataclasses.replace(law, boot=tuple(boot), level=level), model, scores


# --------------------------------------------------------------------------
# The tidy table and back
# --------------------------------------------------------------------------

COLUMNS = [
    "method",
    "kind",
    "name",
    "form",
    "bits",
    "width",
    "by",
    "held_out",
    "value",
    "lo",
    "hi",
    "level",
    "n",
    "note",
]


def _q(values, level):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not v.size:
        return math.nan, math.nan
    q = (1 - level) / 2
    return float(np.quantile(v, q)), float(np.quantile(v, 1 - q))


def _method_rows(summary, method, n_boot, seed, level, extra_bits) -> list[dict]:
    law, model, scores = fit_study(summary, method, n_boot, seed, level)
    rows: list[dict] = []

    def add(**r):
        rows.append({"method": method, "form": law.form, "level": level, **r})

    add(kind="meta", name="target", note=TARGET)
    add(kind="meta", name="n_val", value=float(model.n_val))
    add(kind="meta", name="n_test", value=float(model.n_test))
    for f, s in scores.items():
        add(kind="form_score", name=f, value=s, note="chosen" if f == law.form else "")
    for name, value in law.params().items():
        lo, hi = _q([b.params()[name] for b in law.boot], level) if law.boot else (math.nan, math.nan)
        add(kind="param", name=name, value=value, lo=lo, hi=hi)
    for b, v in law.per_bits.items():
        lo, hi = _q([lw.per_bits.get(b, math.nan) for lw in law.boot], level) if law.boot else (math.nan, math.nan)
        add(kind="per_bits", name="theta", bits=float(b), value=v, lo=lo, hi=hi)
    for pool, res in model.pools.items():
        for r in res:
            add(kind="residual", name=pool, value=float(r))
    # the model's ECR at every trained width and bits (and extra bits), with bootstrap intervals
    rows_w = with_method(summary)
    sizes = rows_w.groupby("width")["n_weights"].first()
    bits = sorted(set(law.trained_bits) | {int(b) for b in extra_bits})
    for w, n in sizes.items():
        for b in bits:
            v = float(law.model_ecr(n, b))
            lo, hi = _q([float(lw.model_ecr(n, b)) for lw in law.boot], level) if law.boot else (math.nan, math.nan)
            add(kind="ecr_model", name=law.bits_kind(b), bits=float(b), width=float(w), value=v, lo=lo, hi=hi)
    for i, lw in enumerate(law.boot):
        for name, value in lw.params().items():
            add(kind="boot", name=name, value=value, n=float(i))
        for b, v in lw.per_bits.items():
            add(kind="boot", name="theta", bits=float(b), value=v, n=float(i))
    return rows


def _nested_rows(summary, method, level) -> list[dict]:
    rows = _law_rows(summary, method)
    val, test = cell_stats(rows, TARGET), cell_stats(rows, "test_error")
    cv = nested_cv(val, test, int(rows["n_val"].median()), int(rows["n_test"].median()), level)
    if cv.empty:
        note = f"nested cross-validation needs {MIN_WIDTHS + 1} widths (or 3 quantized bits values)"
        return [{"method": method, "kind": "status", "name": "not checked", "note": note}]
    out = []
    for r in cv.itertuples():
        out.append(
            {
                "method": method,
                "kind": "cv",
                "name": "held_out_cell",
                "form": r.form,
                "by": r.by,
                "held_out": r.held_out,
                "bits": float(r.bits),
                "width": float(r.width),
                "value": r.predicted,
                "lo": r.lo,
                "hi": r.hi,
                "level": level,
                "note": f"val {r.val_error:.6g} se {r.se:.3g} test {r.test_error:.6g}",
            }
        )
    for by, g in cv.groupby("by"):
        out.append(
            {
                "method": method,
                "kind": "coverage",
                "name": by,
                "by": by,
                "value": float(g["covered"].mean()),
                "level": level,
                "n": float(len(g)),
                "note": f"mean abs held-out validation error {g['abs_error'].mean():.6g}",
            }
        )
    return out


def scaling_table(
    summary: pd.DataFrame,
    n_boot: int = 100,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    nested: bool = True,
    extra_bits=(1, 7),
) -> pd.DataFrame:
    """One long table for ``results/<study>/scaling.parquet`` with a law per
    retraining method (column ``method``); ``kind`` says what a row is:

    * ``meta``: the target the law is fitted on (val_error) and the sizes of
      the validation and test sets; ``form_score``: each form's held-out
      validation error (the chosen one noted);
    * ``param`` (E, a0, alpha, beta, n0, n_min, n_max) and ``per_bits``
      (theta per trained bits), with seed-bootstrap intervals;
    * ``residual``: the interval model's cross-validation residuals per pool;
    * ``ecr_model``: the law's ECR per width and bits (trained, interpolated
      or extrapolated), with intervals;
    * ``cv`` (one row per held-out cell of the nested cross-validation) and
      ``coverage`` (per ``by``: the share of held-out cells whose test mean
      falls inside its interval; the mean absolute held-out error in ``note``);
    * ``boot``: the bootstrap laws' parameters (column ``n`` numbers them).

    A method whose study has too few widths gets one ``status`` row saying why.
    """
    methods = retraining_methods(summary)
    if not methods:
        raise TableError("the study table has no quantized rows: nothing to fit a law to")
    rows: list[dict] = []
    for method in methods:
        try:
            rows += _method_rows(summary, method, n_boot, seed, level, extra_bits)
        except TableError as exc:
            rows.append({"method": method, "kind": "status", "name": "not fitted", "note": str(exc)})
            continue
        if nested:
            rows += _nested_rows(summary, method, level)
    out = pd.DataFrame(rows).reindex(columns=COLUMNS)
    for c in ("bits", "width", "held_out", "value", "lo", "hi", "level", "n"):
        out[c] = out[c].astype(float)
    for c in ("method", "kind", "name", "form", "by", "note"):
        out[c] = out[c].astype(object)
    return out


def fitted_methods(table: pd.DataFrame) -> list[str]:
    """The methods of a scaling table that have a fitted law."""
    if "kind" not in table.columns or "method" not in table.columns:
        return []
    return sorted(table.loc[table["kind"] == "param", "method"].dropna().unique())


def law_from_table(table: pd.DataFrame, method: str | None = None) -> tuple[ScalingLaw, IntervalModel]:
    """Rebuild a method's law (with its bootstrap laws) and interval model from
    :func:`scaling_table`'s output; ``method`` None: the primary method."""
    if not isinstance(table, pd.DataFrame) or "kind" not in table.columns:
        raise TableError("not a scaling table: no 'kind' column (rerun the scaling rule)")
    fitted = fitted_methods(table)
    if not fitted:
        notes = table.loc[table["kind"] == "status", "note"].dropna()
        raise TableError(f"no law was fitted: {notes.iloc[0] if len(notes) else 'the table has no parameters'}")
    if method is None:
        method = "fixed" if "fixed" in fitted else fitted[0]
    if method not in fitted:
        raise TableError(f"no law was fitted for method {method!r} (fitted: {', '.join(fitted)})")
    t = table[table["method"] == method]
    params = t[t["kind"] == "param"]
    form = str(params["form"].iloc[0])
    level = float(params["level"].dropna().iloc[0]) if params["level"].notna().any() else DEFAULT_LEVEL

    def build(prm: Mapping, per_bits: Mapping) -> ScalingLaw:
        return ScalingLaw(
            form=form,
            E=float(prm["E"]),
            a0=float(prm["a0"]),
            alpha=float(prm["alpha"]),
            beta=float(prm["beta"]),
            n0=float(prm["n0"]),
            per_bits=per_bits,
            n_range=(float(prm["n_min"]), float(prm["n_max"])),
            method=method,
            level=level,
        )

    per_bits = {int(r.bits): float(r.value) for r in t[t["kind"] == "per_bits"].itertuples()}
    law = build(dict(zip(params["name"], params["value"])), per_bits)
    boot = []
    for _, g in t[t["kind"] == "boot"].groupby("n", sort=True):
        prm = dict(zip(g.loc[g["name"] != "theta", "name"], g.loc[g["name"] != "theta", "value"]))
        pb = {int(r.bits): float(r.value) for r in g[g["name"] == "theta"].itertuples()}
        boot.append(build(prm, pb))
    meta = t[t["kind"] == "meta"].set_index("name")["value"]
    pools = {p: g["value"].to_numpy(float) for p, g in t[t["kind"] == "residual"].groupby("name")}
    model = IntervalModel(pools, int(meta["n_val"]), int(meta["n_test"]), level)
    return dataclasses.replace(law, boot=tuple(boot)), model
