"""Design advice under a weight-memory budget, chosen on validation data.

Three answers, each per retraining method and together:

* **trained**: the measured cells that fit the budget, the best by seed-mean
  *validation* error, reported with its test error (mean +- SE over seeds);
  cells whose validation mean is within :data:`TIE_Z` standard errors of the
  difference are *tied* with it, and the smallest of the tied (memory, then
  bits) is named;
* **design**: the law's best design (:mod:`qdesign.analysis.scaling`) over the
  trained bits values and the trained width range, the largest width that fits
  at each bits value, with a prediction interval for the mean test error of a
  new training run (:mod:`qdesign.analysis.intervals`); designs the law cannot
  tell apart (predictions within :data:`TIE_Z` x sqrt(2) x the study's median
  cell SE) are tied, the smallest named;
* **extrapolated**: untrained bits values and widths beyond the trained range
  (at most a factor :data:`EXTRAPOLATION` outside it), listed apart with
  intervals that carry the held-out-bits and held-out-width error. A budget
  far beyond (or below) the grid is said to be so, and no width is invented.

Memory as a function of width comes from the study table itself: the number
of weights (and biases) of both model families is a polynomial of degree <= 2
in the width, fitted exactly on the trained widths, so no model code (and no
torch) is needed. Test error is read only to report what was chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS
from ..core.errors import ConfigError, TableError, UserError
from ..core.memory import format_bits, parse_budget
from ..core.precision import is_float_bits
from .scaling import cell_stats, design_pool, fitted_methods, law_from_table
from .tables import MEMORY_COLUMNS, flagged, read_table, with_method

__all__ = [
    "Recommendation",
    "SizeModel",
    "advise",
    "format_bits",
    "parse_budget",
    "recommend",
    "recommendation_table",
    "size_model",
]

TIE_Z = 2.0
"""Two designs are tied when their validation errors differ by less than this
many standard errors of the difference (about 95% two-sided)."""
EXTRAPOLATION = 2.0
"""Extrapolated widths reach at most this factor beyond the trained widths."""

# --------------------------------------------------------------------------
# Memory as a function of width
# --------------------------------------------------------------------------


class SizeModel:
    """n_weights(width) and n_biases(width) of one depth, exact polynomials of degree <= 2."""

    def __init__(self, depth, widths, n_weights, n_biases=None, quantized_layers=None):
        w = np.asarray(widths, float)
        self.depth = depth
        self.widths = np.unique(w)
        self.nw = _exact_poly(w, np.asarray(n_weights, float), "n_weights")
        self.nb = None if n_biases is None else _exact_poly(w, np.asarray(n_biases, float), "n_biases")
        self.q_layers = 0 if quantized_layers is None else int(np.max(quantized_layers))

    def n_weights(self, width) -> np.ndarray:
        return np.polyval(self.nw, np.asarray(width, float))

    def memory_bits(self, width, bits, memory: str = "weights") -> np.ndarray:
        """Weights at ``bits`` each (32 for float); ``total`` adds 32-bit biases and steps."""
        b = np.asarray(bits, float)
        per = np.where(b >= FLOAT_BITS, FLOAT_BITS, b)
        mem = self.n_weights(width) * per
        if memory == "total":
            if self.nb is None:
                raise ValueError("total memory needs n_biases in the table")
            mem = mem + FLOAT_BITS * np.polyval(self.nb, np.asarray(width, float))
            mem = mem + np.where(b >= FLOAT_BITS, 0, FLOAT_BITS * self.q_layers)
        return mem

    def max_width(self, budget_bits: float, bits, memory: str = "weights", cap: float = 1e7) -> float:
        """Largest real width whose memory fits the budget (0 when not even width 1 fits)."""
        lo, hi = 1.0, 2.0
        if self.memory_bits(lo, bits, memory) > budget_bits:
            return 0.0
        while hi < cap and self.memory_bits(hi, bits, memory) <= budget_bits:
            lo, hi = hi, hi * 2
        for _ in range(60):  # memory grows with width: bisection
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.memory_bits(mid, bits, memory) <= budget_bits else (lo, mid)
        return lo


def _exact_poly(w: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    """Lowest-degree (<= 2) polynomial through all (w, y) pairs; ValueError if none is exact."""
    n_unique = np.unique(w).size
    for deg in range(min(2, n_unique - 1) + 1):
        coef = np.polyfit(w, y, deg)
        if np.all(np.abs(np.polyval(coef, w) - y) <= 1e-6 * np.maximum(np.abs(y), 1.0)):
            return coef
    raise ValueError(f"{name} is not a polynomial of degree <= 2 in width on the trained widths")


def size_model(summary: pd.DataFrame) -> dict:
    """One :class:`SizeModel` per depth in the study table."""
    depth = summary["depth"] if "depth" in summary.columns else pd.Series(0, index=summary.index)
    out = {}
    for d, g in summary.groupby(depth, sort=True):
        out[d] = SizeModel(
            d,
            g["width"],
            g["n_weights"],
            g["n_biases"] if "n_biases" in g.columns else None,
            g["quantized_layers"] if "quantized_layers" in g.columns else None,
        )
    return out


# --------------------------------------------------------------------------
# Recommendation
# --------------------------------------------------------------------------


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} not found: run the study first (snakemake --cores all)")
    return read_table(path, "study table")


def _bits_name(b) -> str:
    return "float" if is_float_bits(b) else f"{int(b)} bit{'s' if int(b) != 1 else ''}"


def _design_name(method, width, bits) -> str:
    how = "" if is_float_bits(bits) else f" ({method})"
    return f"width {int(width)}, {_bits_name(bits)}{how}"


def _pct(x) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.2f}%"


def _pick_tied(df: pd.DataFrame, score: str, diff_se: np.ndarray) -> pd.DataFrame:
    """Mark the best row (lowest ``score``) and the rows tied with it (within
    TIE_Z x ``diff_se``); the named design is the tied one of least memory,
    then fewest bits. Returns ``df`` with ``tied`` and ``named`` columns."""
    best = df[score].idxmin()
    tied = (df[score] - df.loc[best, score]) <= TIE_Z * diff_se
    out = df.assign(tied=tied.to_numpy(bool), named=False)
    pick = out[out["tied"]].sort_values(["memory_bits", "bits", score], kind="stable").index[0]
    out.loc[pick, "named"] = True
    return out


@dataclass
class Recommendation:
    """Everything :func:`advise` found for one budget; tables with one row per design."""

    study: str
    budget_bits: float
    memory: str
    trained: pd.DataFrame
    designs: pd.DataFrame
    extrapolated: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def headline(self) -> pd.Series | None:
        """The design to train: the named law design, else the named trained cell."""
        for df in (self.designs, self.trained):
            if len(df) and df["named"].any():
                return df[df["named"]].iloc[0]
        return None


def _trained(summary: pd.DataFrame, budget: float, memory: str) -> pd.DataFrame:
    mem_col = MEMORY_COLUMNS[memory]
    df = with_method(summary)
    df = df[~flagged(df)]  # diverged or at chance level: no result, no advice
    g = (
        df.groupby(["method", "width", "bits"], sort=True)
        .agg(
            val=("val_error", "mean"),
            val_sd=("val_error", "std"),
            test=("test_error", "mean"),
            test_sd=("test_error", "std"),
            n=("seed", "count"),
            memory_bits=(mem_col, "mean"),
            n_weights=("n_weights", "mean"),
        )
        .reset_index()
    )
    g["val_se"] = (g["val_sd"] / np.sqrt(g["n"])).fillna(0.0)
    g["test_se"] = (g["test_sd"] / np.sqrt(g["n"])).fillna(0.0)
    g = g.drop(columns=["val_sd", "test_sd"])
    fits = g[g["memory_bits"] <= budget].reset_index(drop=True)
    if fits.empty:
        return fits.assign(tied=pd.Series(dtype=bool), named=pd.Series(dtype=bool))
    best = fits["val"].idxmin()
    diff_se = np.sqrt(fits["val_se"] ** 2 + fits.loc[best, "val_se"] ** 2).to_numpy()
    return _pick_tied(fits, "val", diff_se).sort_values(["val", "memory_bits"], kind="stable")


def _law_designs(law, model, sizes, budget, memory, bits_values, w_lo, w_hi):
    """(designs inside the trained widths and bits, extrapolations) of one law."""
    inside, outside = [], []
    for depth, sm in sizes.items():
        for b in bits_values:
            w_fit = math.floor(sm.max_width(budget, b, memory, cap=EXTRAPOLATION * w_hi * 4))
            kind = law.bits_kind(b)
            candidates = []
            if w_fit >= w_lo:
                candidates.append((min(w_fit, w_hi), kind in ("float", "trained")))
            if w_fit > w_hi:
                candidates.append((min(w_fit, int(EXTRAPOLATION * w_hi)), False))
            if 1 <= w_fit < w_lo and w_fit >= w_lo / EXTRAPOLATION:
                candidates.append((w_fit, False))
            for w, headline in candidates:
                n = float(sm.n_weights(w))
                pred = float(law.predict(n, b))
                pool = design_pool(law, n, b)
                lo, hi = model.interval(pred, pool)
                row = {
                    "method": "float" if is_float_bits(b) else law.method,
                    "depth": depth,
                    "width": int(w),
                    "bits": int(b),
                    "n_weights": n,
                    "memory_bits": float(sm.memory_bits(w, b, memory)),
                    "predicted": pred,
                    "lo": lo,
                    "hi": hi,
                    "pool": pool,
                    "bits_kind": kind,
                    "width_capped": bool(w_fit > w_hi and w == w_hi),
                }
                (inside if headline else outside).append(row)
    cols = ["method", "depth", "width", "bits", "n_weights", "memory_bits", "predicted", "lo", "hi", "pool"]
    inside = pd.DataFrame(inside, columns=[*cols, "bits_kind", "width_capped"])
    outside = pd.DataFrame(outside, columns=[*cols, "bits_kind", "width_capped"])
    return inside, outside


def advise(
    summary: pd.DataFrame,
    scaling: pd.DataFrame | None,
    budget_bits: float,
    memory: str = "weights",
    bits_values=range(1, 9),
) -> Recommendation:
    """The trained, law and extrapolated answers for one budget (see the module doc)."""
    if memory not in MEMORY_COLUMNS:
        raise ConfigError(f"memory must be 'weights' or 'total', got {memory!r}")
    need = ["width", "bits", "seed", "n_weights", "val_error", "test_error", MEMORY_COLUMNS[memory]]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise TableError(f"the study's summary lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if summary.empty:
        raise TableError("the study's summary is empty: no trained cell to advise from")
    cell_stats(summary, "val_error")  # one line for non-finite or out-of-range errors, or no float rows
    cell_stats(summary, "test_error")
    study = str(summary["study"].iloc[0]) if "study" in summary.columns else "study"
    rec = Recommendation(study, float(budget_bits), memory, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    rec.trained = _trained(summary, budget_bits, memory)
    if summary.groupby(["width", "bits"])["seed"].nunique().min() < 2:
        rec.notes.append("some cells have one seed: their spread is unknown, so ties among them cannot be judged")
    widths = sorted(int(w) for w in summary["width"].unique())
    w_lo, w_hi = widths[0], widths[-1]
    fitted = [] if scaling is None else fitted_methods(scaling)
    if not fitted:
        if scaling is None:
            reason = "scaling.parquet not given"
        else:
            notes = scaling.loc[scaling["kind"] == "status", "note"].dropna() if "note" in scaling.columns else []
            reason = notes.iloc[0] if len(notes) else "scaling.parquet holds no fitted law"
        rec.notes.append(f"no law: {reason}; only the trained answer")
        rec.designs = rec.extrapolated = pd.DataFrame()
        return rec
    sizes = size_model(summary)
    stats = cell_stats(with_method(summary), "val_error")
    tie_se = math.sqrt(2.0) * float(stats["se"].median())
    inside, outside = [], []
    for method in fitted:
        law, model = law_from_table(scaling, method)
        i, o = _law_designs(law, model, sizes, budget_bits, memory, [*bits_values, FLOAT_BITS], w_lo, w_hi)
        inside.append(i)
        outside.append(o)
    inside = pd.concat(inside, ignore_index=True)
    outside = pd.concat(outside, ignore_index=True)
    # a float design is the same network whatever the retraining method: keep the
    # primary method's law's prediction of it (the first fitted: fixed if fitted)
    inside = inside.drop_duplicates(subset=["method", "width", "bits", "depth"], keep="first")
    outside = outside.drop_duplicates(subset=["method", "width", "bits", "depth"], keep="first")
    if len(inside):
        inside = _pick_tied(inside.reset_index(drop=True), "predicted", np.full(len(inside), tie_se))
        rec.designs = inside.sort_values(["predicted", "memory_bits"], kind="stable")
    else:
        rec.designs = inside.assign(tied=pd.Series(dtype=bool), named=pd.Series(dtype=bool))
    rec.extrapolated = outside.sort_values(["predicted", "memory_bits"], kind="stable") if len(outside) else outside
    smallest = float(summary[MEMORY_COLUMNS[memory]].min())
    largest = float(summary[MEMORY_COLUMNS[memory]].max())
    if budget_bits < smallest:
        rec.notes.append(
            f"the budget is below every trained design (the smallest needs {format_bits(smallest)}): "
            "designs below the trained widths are extrapolations"
        )
    if len(inside) and inside["width_capped"].all():
        rec.notes.append(
            f"the budget fits the widest trained network ({w_hi}) at every word length "
            f"(the largest trained design needs {format_bits(largest)}): beyond the trained range the law "
            f"extrapolates, shown apart up to width {int(EXTRAPOLATION * w_hi)} and no further"
        )
    return rec


def _format(rec: Recommendation, level: float) -> str:
    lines = [f"Study {rec.study}: budget {format_bits(rec.budget_bits)} of {rec.memory} memory."]
    t = rec.trained
    if t.empty:
        lines.append("Trained: no trained cell fits.")
    else:
        c = t[t["named"]].iloc[0]
        spread = f" ± {100 * c['test_se']:.2f}" if c["n"] > 1 else ""
        lines.append(
            f"Trained: {_design_name(c['method'], c['width'], c['bits'])}: {_pct(c['test'])}{spread} test error "
            f"(mean{' ± SE' if spread else ''} of {int(c['n'])} seed{'s' if c['n'] != 1 else ''}; "
            f"chosen on validation error {_pct(c['val'])}), {format_bits(c['memory_bits'])}."
        )
        others = t[t["tied"] & ~t["named"]]
        if len(others):
            names = "; ".join(f"{_design_name(r.method, r.width, r.bits)} {_pct(r.val)}" for r in others.itertuples())
            lines.append(f"  tied on validation error (within {TIE_Z:g} SE): {names}; named: the smallest of them")
    d = rec.designs
    pct = f"{round(100 * level)}%"
    if len(d):
        c = d[d["named"]].iloc[0]
        lines.append(
            f"Design: {_design_name(c['method'], c['width'], c['bits'])}: predicted {_pct(c['predicted'])} "
            f"({pct} interval for its mean test error {_pct(c['lo'])}-{_pct(c['hi'])}), "
            f"{format_bits(c['memory_bits'])}."
        )
        others = d[d["tied"] & ~d["named"]]
        if len(others):
            names = "; ".join(
                f"{_design_name(r.method, r.width, r.bits)} {_pct(r.predicted)}" for r in others.itertuples()
            )
            lines.append(f"  tied (the law cannot tell them apart at the study's seed noise): {names}")
        lines.append("Per design (trained bits and widths; largest width that fits):")
        for r in d.sort_values(["method", "bits"]).itertuples():
            flag = "  <- named" if r.named else "  tied" if r.tied else ""
            lines.append(
                f"  {r.method:>8} {_bits_name(r.bits):>8}: width {r.width:>5}, {_pct(r.predicted)} "
                f"[{_pct(r.lo)}, {_pct(r.hi)}]{flag}"
            )
    x = rec.extrapolated
    if len(x):
        lines.append("Extrapolations (not trained; intervals carry the held-out-width / held-out-bits error):")
        for r in x.sort_values(["method", "bits", "width"]).itertuples():
            why = []
            if r.bits_kind in ("interpolated", "extrapolated"):
                why.append(f"{_bits_name(r.bits)} {r.bits_kind}")
            if r.pool == "width_end" or r.pool == "bits_end":
                why.append("beyond the trained widths" if r.pool == "width_end" else "beyond the trained bits")
            lines.append(
                f"  {r.method:>8} {_bits_name(r.bits):>8}: width {r.width:>5}, {_pct(r.predicted)} "
                f"[{_pct(r.lo)}, {_pct(r.hi)}]  * {', '.join(dict.fromkeys(why)) or 'extrapolated'}"
            )
    for n in rec.notes:
        lines.append(f"Note: {n}.")
    return "\n".join(lines)


def recommend(study_dir, budget_bits: int, memory: str = "weights", bits_values=range(1, 9)) -> str:
    """Text advice for one study under a memory budget (bits): reads
    ``summary.parquet`` and, when present, ``scaling.parquet`` of ``study_dir``
    (without it, or with a law that could not be fitted, only the trained
    answer is given; the law is never fitted here, so the advice is the
    pipeline's)."""
    study_dir = Path(study_dir)
    summary = _read(study_dir / "summary.parquet")
    path = study_dir / "scaling.parquet"
    scaling = read_table(path, "scaling table") if path.is_file() else None
    rec = advise(summary, scaling, budget_bits, memory, bits_values)
    level = 0.9
    if scaling is not None and "level" in scaling.columns and scaling["level"].notna().any():
        level = float(scaling["level"].dropna().iloc[0])
    return _format(rec, level)


def _tied_names(df: pd.DataFrame) -> str:
    """The designs tied with the named one (not it), "; "-separated."""
    others = df[df["tied"] & ~df["named"]]
    return "; ".join(_design_name(r.method, r.width, r.bits) for r in others.itertuples())


def recommendation_table(
    summary: pd.DataFrame, scaling: pd.DataFrame | None, budgets, memory: str = "weights"
) -> pd.DataFrame:
    """One row per budget: the named trained cell and the named law design, each
    with what it was chosen on (validation) and reported with (test, or the
    interval for a design not trained). The report's first page and the closed
    loop read it."""
    rows = []
    for budget in budgets:
        rec = advise(summary, scaling, budget, memory)
        row = {"budget_bits": float(budget), "memory": memory}
        if len(rec.trained):
            c = rec.trained[rec.trained["named"]].iloc[0]
            row.update(
                trained_method=c["method"],
                trained_width=int(c["width"]),
                trained_bits=int(c["bits"]),
                trained_memory_bits=float(c["memory_bits"]),
                trained_val_error=float(c["val"]),
                trained_test_error=float(c["test"]),
                trained_test_se=float(c["test_se"]),
                trained_n_seeds=int(c["n"]),
                trained_n_tied=int(rec.trained["tied"].sum()),
                trained_tied=_tied_names(rec.trained),
            )
        if len(rec.designs):
            c = rec.designs[rec.designs["named"]].iloc[0]
            row.update(
                design_method=c["method"],
                design_width=int(c["width"]),
                design_bits=int(c["bits"]),
                design_memory_bits=float(c["memory_bits"]),
                predicted=float(c["predicted"]),
                predicted_lo=float(c["lo"]),
                predicted_hi=float(c["hi"]),
                design_n_tied=int(rec.designs["tied"].sum()),
                design_tied=_tied_names(rec.designs),
            )
        row["notes"] = "; ".join(rec.notes)
        rows.append(row)
    return pd.DataFrame(rows)


def design_cells(designs: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(method, width, bits) of every design a recommendation table names
    (``recommendation_table``), once each: what the closed loop trains."""
    out = []
    for r in designs.dropna(subset=["design_width"]).itertuples():
        cell = (str(r.design_method), int(r.design_width), int(r.design_bits))
        if cell not in out:
            out.append(cell)
    return out


def closed_loop_table(designs: pd.DataFrame, measured: pd.DataFrame, grid_widths) -> pd.DataFrame:
    """The recommendations beside what their training measured: per budget the
    named design, its predicted validation error and interval for the mean
    test error of a new run, and the measured seed mean (and SE) of test and
    validation error over the cells trained for it; ``inside`` says whether
    the measured test mean falls in the interval. ``in_grid``: the design's
    width was trained in the study's grid, so the law had seen its cells (an
    in-sample check); a new width is a true out-of-sample one."""
    m = with_method(measured)
    rows = []
    for r in designs.itertuples():
        row = r._asdict()
        row.pop("Index", None)
        if not isinstance(getattr(r, "design_method", None), str):
            rows.append(row)
            continue
        cells = m[(m["method"] == r.design_method) & (m["width"] == r.design_width) & (m["bits"] == r.design_bits)]
        n = len(cells)
        test, val = cells["test_error"], cells["val_error"]
        row.update(
            measured_test_error=float(test.mean()) if n else math.nan,
            measured_test_se=float(test.std() / math.sqrt(n)) if n > 1 else math.nan,
            measured_val_error=float(val.mean()) if n else math.nan,
            measured_n_seeds=n,
            in_grid=int(r.design_width) in {int(w) for w in grid_widths},
        )
        row["inside"] = bool(n and r.predicted_lo <= row["measured_test_error"] <= r.predicted_hi)
        rows.append(row)
    return pd.DataFrame(rows)
