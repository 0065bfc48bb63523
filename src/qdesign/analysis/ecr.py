"""Weight memory, effective compression ratio (ECR) and the memory/error frontier.

The paper asks whether, for a fixed weight memory, a network should be made
smaller or its weights coarser.  Both answers need, beside the memory model
(:mod:`qdesign.core.memory`, which charges every network in bits the same way):

* the ECR: how many times smaller a quantized network is than the float network
  that reaches the same error (read off the monotone float error-vs-size curve);
* the Pareto front and the best network under a budget.

Pure numpy/pandas on purpose: analysis must run where torch is not installed.
"""

from __future__ import annotations

import operator

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS  # also the bits of a float weight, of a stored step and of a bias
from ..core.precision import is_float_bits

__all__ = [
    "isotonic_nonincreasing",
    "effective_compression_ratio",
    "pareto_front",
    "best_under_budget",
    "budget_grid",
]

# Errors closer than this count as equal when reading the float curve, so that
# isotonic pooling noise (e.g. (0.2 + 0.25) / 2) does not decide a tie.
_ERROR_TOL = 1e-12

_SEED_KEYS = ("study", "model", "depth", "method", "width", "n_weights", "bits")


# --------------------------------------------------------------------------
# Isotonic regression
# --------------------------------------------------------------------------


def isotonic_nonincreasing(x, y, weights=None) -> np.ndarray:
    """Least-squares fit of ``y`` that is non-increasing in ``x`` (scikit-learn's
    pool-adjacent-violators ``IsotonicRegression``, with input checks).

    Float error must not rise with network size; measured errors do (noise,
    bad seeds), so the float curve is made monotone before it is inverted.
    ``x`` must be sorted ascending; points with equal ``x`` are pooled first
    and get one fitted value (as scikit-learn does).
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not (x.shape == y.shape == w.shape):
        raise ValueError(f"x, y and weights must have one length, got {x.size}, {y.size}, {w.size}")
    if x.size == 0:
        return np.empty(0)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    if not np.all((w > 0) & np.isfinite(w)):
        raise ValueError("weights must be positive and finite")
    if np.any(np.diff(x) < 0):
        raise ValueError("x must be sorted ascending")

    from sklearn.isotonic import IsotonicRegression  # noqa: PLC0415 - scikit-learn loads in ~0.5 s

    # ties in x are pooled (weighted mean) by scikit-learn, as documented
    return IsotonicRegression(increasing=False).fit_transform(x, y, sample_weight=w)


# --------------------------------------------------------------------------
# Effective compression ratio
# --------------------------------------------------------------------------


def _float_equivalent(errors: np.ndarray, log_n: np.ndarray, fitted: np.ndarray):
    """Invert the fitted float curve: weights needed to reach each error, and its bound.

    ``fitted`` is non-increasing in ``log_n``.  Interpolation is linear in
    log(n_weights); on a flat stretch the smallest n is taken (smallest ECR).
    Out of range the end of the curve is used and flagged, never extrapolated.
    """
    m = fitted.size
    # First index whose fitted error is <= e (within tolerance).
    k = np.searchsorted(-fitted, -(errors + _ERROR_TOL), side="left")
    log_few = np.empty(errors.size)
    bound = np.full(errors.size, None, dtype=object)

    above = (k == 0) & (errors > fitted[0] + _ERROR_TOL)
    below = k == m
    inside = ~(above | below)
    log_few[above] = log_n[0]
    bound[above] = "upper"
    log_few[below] = log_n[-1]
    bound[below] = "lower"

    ki = k[inside]
    ei = errors[inside]
    hit = fitted[ki] >= ei - _ERROR_TOL  # the curve reaches e exactly at point k
    result = log_n[ki].copy()
    # Otherwise f[k-1] > e > f[k] with k >= 1: interpolate in log n.
    j = ki[~hit]
    f_hi, f_lo = fitted[j - 1], fitted[j]
    t = (f_hi - ei[~hit]) / (f_hi - f_lo)
    result[~hit] = log_n[j - 1] + t * (log_n[j] - log_n[j - 1])
    log_few[inside] = result
    return np.exp(log_few), bound


def _check_cells(cells: pd.DataFrame) -> None:
    missing = [c for c in ("n_weights", "bits", "error") if c not in cells.columns]
    if missing:
        raise ValueError(f"cells is missing required column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    n = cells["n_weights"].to_numpy(dtype=float, na_value=np.nan)
    bits = cells["bits"].to_numpy(dtype=float, na_value=np.nan)
    err = cells["error"].to_numpy(dtype=float, na_value=np.nan)
    if not np.all(n > 0):
        raise ValueError("n_weights must be positive (and not NaN)")
    if not np.all(bits >= 1):
        raise ValueError("bits must be >= 1 (and not NaN)")
    if not np.all((err >= 0) & (err <= 1)):
        raise ValueError("error must be a fraction in [0, 1] (and not NaN)")
    if not np.any(is_float_bits(bits)):
        raise ValueError(f"no float rows (bits >= {FLOAT_BITS}) to build the float curve")
    if "study" in cells.columns and cells["study"].nunique(dropna=False) > 1:
        raise ValueError("cells mixes several studies; pass one study at a time")


def _average_seeds(cells: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in _SEED_KEYS if c in cells.columns]
    stats = (
        cells.groupby(keys, sort=False, dropna=False)["error"]
        .agg(error="mean", error_std="std", n_seeds="count")
        .reset_index()
    )
    stats["n_seeds"] = stats["n_seeds"].astype(int)
    return stats


def effective_compression_ratio(
    cells: pd.DataFrame, reference_bits: int = 32, average_seeds: bool = True
) -> pd.DataFrame:
    """Add ``float_equivalent_weights``, ``ecr`` and ``ecr_bound`` to one study's cells.

    ECR = (weights a float network needs for the same error) * reference_bits
    / (n_weights * bits): how much memory quantization really saves, once the
    accuracy it costs is paid back in network size.  The float curve is the
    per-n_weights mean error of the float rows (bits >= 32) of the *input*
    (before seed averaging, weighted by row count), made non-increasing with
    :func:`isotonic_nonincreasing` and read in log(n_weights).

    ``ecr_bound`` is None inside the curve, ``"upper"`` when the error is worse
    than the smallest float network (the ECR shown is an upper bound) and
    ``"lower"`` when it beats the largest one (a lower bound).  Float rows get
    ``ecr = 1``.  With ``average_seeds`` rows are first averaged per cell
    (adding ``error_std``, ddof=1, and ``n_seeds``), in order of first
    appearance; otherwise every row is kept with its index.  The input is not
    modified.
    """
    if not isinstance(cells, pd.DataFrame):
        raise ValueError("cells must be a pandas DataFrame")
    if not reference_bits >= 1:
        raise ValueError(f"reference_bits must be >= 1, got {reference_bits}")
    _check_cells(cells)

    n_in = cells["n_weights"].to_numpy(dtype=float)
    bits_in = cells["bits"].to_numpy(dtype=float)
    err_in = cells["error"].to_numpy(dtype=float)
    is_float_in = is_float_bits(bits_in)
    sizes, inverse = np.unique(n_in[is_float_in], return_inverse=True)
    counts = np.bincount(inverse).astype(float)
    mean_err = np.bincount(inverse, weights=err_in[is_float_in]) / counts
    log_sizes = np.log(sizes)
    fitted = isotonic_nonincreasing(log_sizes, mean_err, counts)

    out = _average_seeds(cells) if average_seeds else cells.copy()
    n = out["n_weights"].to_numpy(dtype=float)
    bits = out["bits"].to_numpy(dtype=float)
    err = out["error"].to_numpy(dtype=float)
    is_float = is_float_bits(bits)

    few = n.copy()
    bound = np.full(len(out), None, dtype=object)
    q = ~is_float
    few[q], bound[q] = _float_equivalent(err[q], log_sizes, fitted)
    ecr = np.ones(len(out))
    ecr[q] = few[q] * reference_bits / (n[q] * bits[q])

    out["float_equivalent_weights"] = few
    out["ecr"] = ecr
    out["ecr_bound"] = pd.Series(bound, index=out.index, dtype=object)
    return out


# --------------------------------------------------------------------------
# Frontier
# --------------------------------------------------------------------------


def _memory_error(cells: pd.DataFrame, memory_col: str, error_col: str):
    for col in (memory_col, error_col):
        if col not in cells.columns:
            raise ValueError(f"cells is missing column {col!r}")
    mem = cells[memory_col].to_numpy(dtype=float, na_value=np.nan)
    err = cells[error_col].to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(mem).any() or np.isnan(err).any():
        raise ValueError(f"{memory_col!r} and {error_col!r} must not contain NaN")
    return mem, err


def pareto_front(cells: pd.DataFrame, memory_col: str = "memory_bits", error_col: str = "error") -> pd.DataFrame:
    """Rows that no other row beats on both memory and error (ties are all kept).

    A dominates B iff A.memory <= B.memory, A.error <= B.error and one is
    strict.  One sort and one sweep, O(n log n).  Sorted by memory, then
    error; the original index is kept.
    """
    mem, err = _memory_error(cells, memory_col, error_col)
    order = np.lexsort((err, mem))  # stable: equal points keep input order
    m, e = mem[order], err[order]
    if m.size == 0:
        return cells.iloc[order]
    starts = np.r_[True, m[1:] != m[:-1]]
    group = np.cumsum(starts) - 1
    group_min = e[starts]  # sorted by error within a memory group
    best_smaller = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]
    keep = (e == group_min[group]) & (group_min[group] < best_smaller[group])
    return cells.iloc[order[keep]]


def best_under_budget(
    cells: pd.DataFrame, budgets, memory_col: str = "memory_bits", error_col: str = "error"
) -> pd.DataFrame:
    """For each budget (bits), the lowest-error row with memory <= budget.

    Ties go to smaller memory, then smaller ``bits`` (if present), then input
    order.  One row per budget, first column ``budget_bits``; a budget that no
    row fits keeps its row with NaN elsewhere, so plots show the gap.
    """
    mem, err = _memory_error(cells, memory_col, error_col)
    budgets = np.atleast_1d(np.asarray(budgets, dtype=float))
    if budgets.ndim != 1 or np.isnan(budgets).any():
        raise ValueError("budgets must be a 1-D list of numbers without NaN")
    if "budget_bits" in cells.columns:
        raise ValueError("cells already has a 'budget_bits' column")

    keys = [err, mem]
    if "bits" in cells.columns:
        keys.append(cells["bits"].to_numpy(dtype=float, na_value=np.nan))
    rank = np.empty(mem.size, dtype=np.int64)
    rank[np.lexsort(keys[::-1])] = np.arange(mem.size)  # lexsort: last key is primary

    by_mem = np.argsort(mem, kind="stable")
    pos = np.full(budgets.size, -1, dtype=np.int64)
    if mem.size:
        best_rank = np.minimum.accumulate(rank[by_mem])  # best row among the cheapest i+1
        row_of_rank = np.empty(mem.size, dtype=np.int64)
        row_of_rank[rank] = np.arange(mem.size)
        n_fit = np.searchsorted(mem[by_mem], budgets, side="right")
        fits = n_fit > 0
        pos[fits] = row_of_rank[best_rank[n_fit[fits] - 1]]

    out = cells.reset_index(drop=True).reindex(pos).reset_index(drop=True)
    out.insert(0, "budget_bits", budgets)
    return out


def budget_grid(memory, n: int = 25) -> np.ndarray:
    """``n`` geometrically spaced budgets from min(memory) to max(memory), both included.

    Memory spans orders of magnitude across widths and bit widths, so budgets
    are spaced evenly in log.
    """
    mem = np.asarray(memory, dtype=float).ravel()
    if mem.size == 0:
        raise ValueError("memory is empty")
    if not np.all(np.isfinite(mem) & (mem > 0)):
        raise ValueError("memory must be positive and finite")
    n = operator.index(n)
    if n < 2:
        raise ValueError(f"n must be >= 2 to include both ends, got {n}")
    lo, hi = mem.min(), mem.max()
    grid = np.geomspace(lo, hi, n)
    grid[0], grid[-1] = lo, hi
    return grid
