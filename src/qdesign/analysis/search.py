"""Adaptive design search: train only the cells that decide "the best design
under each memory budget".

A full study trains every width x bits x seed cell, although its question is
one answer per budget. A search answers the same question in rounds. Each
round fits the design law (:func:`qdesign.analysis.scaling.fit_study`) on the
*validation* errors of the cells measured so far and holds a belief about
every candidate design (width, bits) of the grid:

* a measured design: its seed-mean validation error, with the seed noise of a
  mean of that many seeds (:func:`seed_sd`, pooled over the measured designs);
* an unmeasured one: the law's prediction plus one residual of its
  cross-validation pool (:mod:`qdesign.analysis.intervals`: held-out widths or
  bits, inside or beyond the trained range), the same residuals the law's
  prediction intervals are made of.

The *answer* for a budget is the measured design that fits it with the lowest
seed-mean validation error, like the full grid's. Its *expected regret* is
E[X_answer - min_d X_d] over the designs that fit, X drawn from the beliefs
(Monte Carlo with fixed draws: deterministic). The next batch is chosen
greedily by risk removed per predicted training second (the grid's cost hint,
known before training, when it has one; else the measured seconds of the
trained cells, interpolated in network size): a candidate is the
next seed of one design (and its float network, if not trained), and the risk
it removes is the drop in the budgets' expected regret if that design were
measured at its present belief's centre. The search stops when every budget's
expected regret is below ``regret`` standard errors of its answer's
all-seed mean and no answer changed for ``patience`` rounds, or at a cap (cells,
training seconds, rounds), or when no cell left would lower the risk.

Only validation error is read (:data:`VISIBLE`); test error never enters a
choice, and flagged cells are left out. Torch-free:
Snakemake's rules and the replay benchmark call it alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.constants import FLOAT_BITS
from ..core.errors import ConfigError, TableError
from ..core.precision import is_float_bits
from .intervals import mixture_quantiles
from .recommend import format_bits, parse_budget
from .scaling import MIN_WIDTHS, design_pool, fit_study
from .tables import FLAG_COLUMNS, flagged

__all__ = [
    "Grid",
    "Settings",
    "expected_regret",
    "grid_from_study",
    "plan_round",
    "replay",
    "search_table",
    "seed_sd",
    "closing_summary",
    "visible_cells",
]

Design = tuple[int, int]
"""(width, bits); bits 32 is the float network."""
Cell = tuple[int, int, int]
"""(width, bits, seed)."""

TARGET = "val_error"
COST = "train_seconds"
"""What a cell costs: its recorded training seconds."""


# --------------------------------------------------------------------------
# What may be trained, and what is asked
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Grid:
    """The cells a search may train: candidate widths, quantized bits and the
    study's seeds, retrained with ``method``; ``memory`` (bits, per design,
    float included) sizes each design against the budgets."""

    widths: tuple[int, ...]
    bits: tuple[int, ...]
    seeds: tuple[int, ...]
    method: str
    memory: Mapping[Design, float]
    n_weights: Mapping[int, float]
    cost_hint: Mapping[tuple[int, bool], float] | None = None
    """Relative training cost of a cell per (width, float?), known before
    training (:func:`qdesign.run.resources.search_cost_hint`): the batches are
    ranked on it, so that a search's plan does not depend on how fast the
    machine happened to be (measured seconds only scale it, for the caps)."""

    def designs(self) -> list[Design]:
        return [(w, b) for w in self.widths for b in (*self.bits, FLOAT_BITS)]

    def fits(self, budget: float) -> list[Design]:
        return [d for d in self.designs() if self.memory[d] <= budget]

    def cells(self) -> list[Cell]:
        return [(w, b, s) for (w, b) in self.designs() for s in self.seeds]


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a search runs (config keys ``studies.NAME.search.*``, config/README.md)."""

    budgets: tuple[int, ...]
    initial_widths: tuple[int, ...]
    initial_bits: tuple[int, ...]
    initial_seeds: int = 1
    batch: int = 2
    patience: int = 1
    regret: float = 1.0
    """Stop when every budget's expected regret is below this many standard
    errors of its answer's all-seed mean: the full grid's own resolution (its
    choice among designs closer than that is the seeds' draw). Tuned on the
    replay's cost and validation regret, never on test regret
    (benchmarks/adaptive_search.py)."""
    max_cells: int | None = None
    max_seconds: float | None = None
    max_rounds: int = 60
    draws: int = 2000
    law_prior: bool = True
    scale: str = "seed"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_initial_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """The :data:`~qdesign.analysis.scaling.MIN_WIDTHS` smallest candidate
    widths (the law needs that many; the small ones are the cheap ones), or
    all of them when there are fewer."""
    return tuple(sorted(widths)[:MIN_WIDTHS])


def default_initial_bits(bits: Sequence[int]) -> tuple[int, ...]:
    """The smallest, a middle and the largest candidate bits: the law's per-bits
    parameters are interpolated between them until more are trained."""
    b = sorted(bits)
    return tuple(sorted({b[0], b[len(b) // 2], b[-1]}))


def design_memory(layers, bits: int, float_first: bool = False, float_last: bool = False) -> tuple[int, int]:
    """(weights only, total) memory in bits of a network whose weight layers are
    ``layers`` (n_weights, n_biases) at ``bits`` (32: float), first or last
    layer left in float as the study says (:mod:`qdesign.core.memory`)."""
    from ..core.memory import network_memory_bits  # noqa: PLC0415

    last = len(layers) - 1
    per_layer = []
    for i, (n_w, n_b) in enumerate(layers):
        keep_float = is_float_bits(bits) or (float_first and i == 0) or (float_last and i == last)
        per_layer.append((n_w, n_b, None if keep_float else int(bits)))
    return network_memory_bits(per_layer)


def grid_from_study(config: Mapping, study: str) -> tuple[Grid, Settings]:
    """The grid and settings of a study in search mode (a validated config);
    a budget that no candidate design fits is refused here, before any job."""
    from ..core.architecture import study_layer_specs, weight_specs  # noqa: PLC0415

    s = config["studies"][study]
    sc = s.get("search")
    if sc is None:
        raise ConfigError(f"config: studies.{study} has no search section")
    where = f"config: studies.{study}.search"
    for other, used in (("mixed", s.get("mixed") is not None), ("recommend.budgets", s["recommend"]["budgets"])):
        if used:
            raise ConfigError(
                f"{where}: a search study trains only what its search asks for; remove {other} "
                "(or the search) from this study"
            )
    widths = tuple(sorted(sc["widths"] or s["model"]["widths"]))
    bits = tuple(sorted(sc["bits"] or s["bits"]))
    method = sc["method"] or s["retraining"]["methods"][0]
    if method not in s["retraining"]["methods"]:
        raise ConfigError(f"{where}.method: {method!r} is not one of the study's retraining.methods")
    memory_kind = sc["memory"]
    memory, n_weights = {}, {}
    rc = s["retraining"]
    for w in widths:
        layers = [(ls.n_weights, ls.n_biases) for ls in weight_specs(study_layer_specs(s, w))]
        n_weights[w] = float(sum(n for n, _ in layers))
        for b in (*bits, FLOAT_BITS):
            mem_w, mem_t = design_memory(layers, b, rc["float_first"], rc["float_last"])
            memory[(w, b)] = float(mem_w if memory_kind == "weights" else mem_t)
    grid = Grid(widths, bits, tuple(s["seeds"]), method, memory, n_weights)
    budgets = []
    for i, text in enumerate(sc["budgets"]):
        try:
            budget = parse_budget(text)
        except ConfigError as exc:
            raise ConfigError(f"{where}.budgets.{i}: {exc}") from None
        if not grid.fits(budget):
            smallest = min(memory.values())
            raise ConfigError(
                f"{where}.budgets.{i}: {text} fits no design of the search grid: "
                f"the smallest needs {format_bits(smallest)} of {memory_kind} memory"
            )
        budgets.append(budget)
    if len(set(budgets)) != len(budgets):
        raise ConfigError(f"{where}.budgets: a budget is listed twice")
    init_w = tuple(sorted(sc["initial"]["widths"] or default_initial_widths(widths)))
    init_b = tuple(sorted(sc["initial"]["bits"] or default_initial_bits(bits)))
    for name, got, allowed in (("widths", init_w, widths), ("bits", init_b, bits)):
        extra = sorted(set(got) - set(allowed))
        if extra:
            raise ConfigError(
                f"{where}.initial.{name}: {extra} not among the search's candidate {name} {list(allowed)}"
            )
    if len(init_w) < min(MIN_WIDTHS, len(widths)):
        raise ConfigError(
            f"{where}.initial.widths: {len(init_w)} widths; the law needs at least {MIN_WIDTHS} "
            "(leave-one-width-out), so the first round trains float networks at that many"
        )
    if len(widths) < MIN_WIDTHS:
        raise ConfigError(f"{where}.widths: {len(widths)} candidate widths; the law needs at least {MIN_WIDTHS}")
    seeds_n = min(int(sc["initial"]["seeds"]), len(grid.seeds))
    settings = Settings(
        budgets=tuple(budgets),
        initial_widths=init_w,
        initial_bits=init_b,
        initial_seeds=seeds_n,
        batch=int(sc["batch"]),
        patience=int(sc["stop"]["patience"]),
        regret=float(sc["stop"]["regret"]),
        max_cells=sc["stop"]["max_cells"],
        max_seconds=sc["stop"]["max_seconds"],
        max_rounds=int(sc["stop"]["max_rounds"]),
    )
    return grid, settings


# --------------------------------------------------------------------------
# Measured cells
# --------------------------------------------------------------------------


def measured_designs(cells: pd.DataFrame, grid: Grid) -> pd.DataFrame:
    """Per measured design of the grid: seeds, seed-mean and variance of the
    validation error. Refuses cells of another method, duplicates and
    non-finite errors (one line)."""
    need = ["width", "bits", "seed", TARGET]
    missing = [c for c in need if c not in cells.columns]
    if missing:
        raise TableError(f"the search's cells lack column(s) {', '.join(missing)}")
    df = cells.copy()
    df["bits"] = np.minimum(df["bits"].to_numpy(int), FLOAT_BITS)
    if "method" in df.columns:
        q = df["bits"] < FLOAT_BITS
        other = sorted(set(df.loc[q, "method"].dropna()) - {grid.method})
        if other:
            raise TableError(f"cells of method(s) {other} given to a search of method {grid.method!r}")
    if df.duplicated(["width", "bits", "seed"]).any():
        raise TableError("a cell is given twice to the search")
    if not np.all(np.isfinite(df[TARGET].to_numpy(float))):
        raise TableError(f"a cell's {TARGET} is not finite: rerun it")
    g = df.groupby(["width", "bits"], sort=True)[TARGET]
    out = pd.DataFrame({"k": g.count(), "mean": g.mean(), "var": g.var(ddof=1)}).reset_index()
    return out


def seed_sd(
    designs: pd.DataFrame, n_weights: Mapping[int, float], prior: float, prior_df: float = 4.0
) -> dict[int, float]:
    """Seed standard deviation of one network's validation error, per width.

    Two or three seeds per design make every single variance a guess, so they
    are pooled: over all designs measured with >= 2 seeds, on a log-linear
    trend in the number of weights (smaller networks vary more; the slope is
    fitted only from 3 widths and 8 degrees of freedom on, and kept within
    -0.5..0), shrunk towards ``prior`` with ``prior_df`` degrees of freedom;
    each width's own pooled variance then counts with its degrees of freedom
    against that trend's ``prior_df``."""
    multi = designs[designs["k"] >= 2]
    per_w = {}
    for w, g in multi.groupby("width"):
        df = float((g["k"] - 1).sum())
        per_w[int(w)] = (df, float(((g["k"] - 1) * g["var"]).sum() / df))
    widths = sorted(n_weights)
    log_n = {w: math.log(n_weights[w]) for w in widths}
    total_df = sum(d for d, _ in per_w.values())
    slope = 0.0
    if len(per_w) >= 3 and total_df >= 8:
        x = np.array([log_n[w] for w in per_w])
        y = 0.5 * np.log(np.maximum([v for _, v in per_w.values()], 1e-12))
        wt = np.array([d for d, _ in per_w.values()])
        slope = float(np.clip(np.polyfit(x, y, 1, w=np.sqrt(wt))[0], -0.5, 0.0))
    ref = float(np.mean(list(log_n.values())))
    # pooled variance at the reference size, on the trend, with the prior's weight
    scaled = sum(d * v * math.exp(-2 * slope * (log_n[w] - ref)) for w, (d, v) in per_w.items())
    var_ref = (scaled + prior_df * prior**2) / (total_df + prior_df)
    out = {}
    for w in widths:
        base = var_ref * math.exp(2 * slope * (log_n[w] - ref))
        d, v = per_w.get(w, (0.0, 0.0))
        out[w] = math.sqrt((d * v + prior_df * base) / (d + prior_df))
    return out


def val_noise(error: float, n_val: float) -> float:
    """Sampling SE of an error rate measured on ``n_val`` validation examples:
    differences below it are the validation set's draw, which no number of
    seeds resolves."""
    p = min(max(float(error), 1e-4), 0.5)
    return math.sqrt(p * (1 - p) / max(float(n_val), 1.0))


def _hinted_cost(cells: pd.DataFrame, grid: Grid) -> Callable[[int, bool], float]:
    """Predicted training seconds from the grid's cost hint, times one factor
    (measured over hinted seconds of the trained cells, geometric mean): one
    factor for every cell, so the ranking of cells by risk per second is the
    hint's, whatever the measured seconds."""
    hint = grid.cost_hint
    scale = 1.0
    if len(cells) and COST in cells.columns:
        t = cells[COST].to_numpy(float)
        h = np.array([hint[(int(w), int(b) >= FLOAT_BITS)] for w, b in zip(cells["width"], cells["bits"])])
        ok = np.isfinite(t) & (t > 0) & (h > 0)
        if ok.any():
            scale = float(np.exp(np.mean(np.log(t[ok] / h[ok]))))

    def cost(width: int, is_float: bool) -> float:
        return float(hint[(int(width), bool(is_float))] * scale)

    return cost


def _cost_model(cells: pd.DataFrame, grid: Grid) -> Callable[[int, bool], float]:
    """Predicted training seconds of a cell of a width, float or quantized:
    the mean of the measured cells of its kind at that width, else
    interpolated log-log in the number of weights between measured widths,
    and beyond them extrapolated with the slope of the nearest two (between
    0.3 and 2: a wider network never costs less)."""
    curves = {}
    for is_float in (True, False):
        c = cells[(cells["bits"] >= FLOAT_BITS) == is_float] if len(cells) else cells
        if COST not in c.columns or c.empty:
            curves[is_float] = None
            continue
        c = c[np.isfinite(c[COST].to_numpy(float)) & (c[COST].to_numpy(float) > 0)]
        per_w = c.groupby("width")[COST].apply(lambda t: float(np.mean(np.log(t))))
        per_w = per_w[[int(w) in grid.n_weights for w in per_w.index]]
        if per_w.empty:
            curves[is_float] = None
            continue
        x = np.log([grid.n_weights[int(w)] for w in per_w.index])
        order = np.argsort(x)
        curves[is_float] = (x[order], per_w.to_numpy(float)[order])

    def along(curve, xq: float) -> float:
        x, y = curve
        if x.size == 1:
            return float(y[0] + (xq - x[0]))
        if xq < x[0] or xq > x[-1]:
            i, j = (0, 1) if xq < x[0] else (-2, -1)
            slope = float(np.clip((y[j] - y[i]) / (x[j] - x[i]), 0.3, 2.0))
            return float(y[j] + slope * (xq - x[j])) if xq > x[-1] else float(y[i] + slope * (xq - x[i]))
        return float(np.interp(xq, x, y))

    def cost(width: int, is_float: bool) -> float:
        curve = curves[is_float] or curves[not is_float]
        if curve is None:
            return 1.0
        return float(math.exp(along(curve, math.log(grid.n_weights[width]))))

    return cost


# --------------------------------------------------------------------------
# Beliefs and the expected regret
# --------------------------------------------------------------------------


class Beliefs:
    """What the search believes about the seed-mean validation error over all
    the study's seeds (what the full grid would choose on) of every candidate
    design, as ``draws`` fixed joint draws (common random numbers, so that a
    change of the regret comes from a change of belief, not of dice).

    An unmeasured design: the law's prediction plus one residual of its
    cross-validation pool. A design measured with k of K seeds: its
    remaining seeds' mean is unknown around its true mean, whose estimate
    combines the k seeds' mean (noise sd / sqrt(k)) with the law's
    prediction as a prior (the spread of its residual pool), so that one
    seed of a network is read beside what its neighbours say; k = K: known."""

    def __init__(
        self,
        grid: Grid,
        designs: pd.DataFrame,
        law,
        model,
        sd: Mapping[int, float],
        draws: int,
        seed: int,
        law_prior: bool = True,
    ):
        self.grid = grid
        self.n_seeds = len(grid.seeds)
        self.designs = grid.designs()
        self.index = {d: i for i, d in enumerate(self.designs)}
        n = len(self.designs)
        rng = np.random.default_rng(seed)
        self.z = rng.standard_normal((n, draws))
        self.u = rng.random((n, draws))
        self.k = np.zeros(n, int)
        self.mean = np.full(n, np.nan)
        self.sd = np.array([sd[w] for w, _ in self.designs])
        self.pred = np.full(n, np.nan)
        self.pool: list[np.ndarray] = [np.zeros(1)] * n
        self.pool_name = [""] * n
        self.centre = np.full(n, np.nan)
        self.tau = np.full(n, np.inf)
        measured = {(int(r.width), int(r.bits)): r for r in designs.itertuples()}
        for i, (w, b) in enumerate(self.designs):
            if law is not None:
                n_w = self.grid.n_weights[w]
                self.pred[i] = float(law.predict(n_w, b))
                self.pool_name[i] = design_pool(law, n_w, b)
                self.pool[i] = np.sort(model.pool(self.pool_name[i]))
                if not self.pool[i].size:
                    self.pool[i] = np.zeros(1)
                self.centre[i] = self.pred[i] + float(np.median(self.pool[i]))
                if law_prior and self.pool[i].size >= 4:
                    q1, q3 = np.quantile(self.pool[i], [0.25, 0.75])
                    self.tau[i] = max(float(q3 - q1) / 1.349, 1e-5)
            if (w, b) in measured:
                r = measured[(w, b)]
                self.k[i], self.mean[i] = int(r.k), float(r.mean)
        if law is None:  # no law yet: unmeasured designs could be anything the measured ones span
            lo, hi = (np.nanmin(self.mean), np.nanmax(self.mean)) if np.isfinite(self.mean).any() else (0.0, 1.0)
            self.centre[:] = 0.5 * (lo + hi)
            self.pred[:] = self.centre
            span = np.linspace(lo - (hi - lo), hi + (hi - lo), 21) - self.centre[0]
            self.pool = [span] * n
        self.e = np.array([self.target(i, self.k[i], self.mean[i])[0] for i in range(n)])
        self.x = np.vstack([self._row(i) for i in range(n)])

    def target(self, i: int, k: int, mean: float) -> tuple[float, float]:
        """(expected value, sd) of design i's mean over all seeds, with k seeds measured at ``mean``."""
        n = self.n_seeds
        if k <= 0:
            return float(self.centre[i]), math.nan
        if k >= n:
            return float(mean), 0.0
        s2 = self.sd[i] ** 2
        prec = k / s2 + (1.0 / self.tau[i] ** 2 if math.isfinite(self.tau[i]) else 0.0)
        mu = (k * mean / s2 + (self.centre[i] / self.tau[i] ** 2 if math.isfinite(self.tau[i]) else 0.0)) / prec
        rest = (n - k) / n
        return float((k * mean + (n - k) * mu) / n), float(rest * math.sqrt(1.0 / prec + s2 / (n - k)))

    def posterior_mean(self, i: int, k: int, mean: float) -> float:
        """The estimate of design i's true mean (what one more seed is expected to show)."""
        if k <= 0:
            return float(self.centre[i])
        e, _ = self.target(i, k, mean)
        n = self.n_seeds
        return float(mean) if k >= n else float((n * e - k * mean) / (n - k))

    def _row(self, i: int, k: int | None = None, mean: float | None = None) -> np.ndarray:
        k = self.k[i] if k is None else k
        if k > 0:
            e, sd = self.target(i, k, self.mean[i] if mean is None else mean)
            return e + sd * self.z[i]
        pool = self.pool[i]
        return self.pred[i] + pool[np.minimum((self.u[i] * pool.size).astype(int), pool.size - 1)]

    def answer(self, budget: float, k=None, e=None) -> int | None:
        """The measured design that fits with the lowest expected seed-mean
        (ties: less memory, fewer bits); with every seed measured that is its
        measured mean, as in the full grid."""
        k = self.k if k is None else k
        e = self.e if e is None else e
        best, key = None, None
        for d in self.grid.fits(budget):
            i = self.index[d]
            if k[i] > 0:
                kk = (e[i], self.grid.memory[d], d[1], d[0])
                if key is None or kk < key:
                    best, key = i, kk
        return best

    def regret(self, budget: float, x: np.ndarray | None = None, k=None, e=None) -> float:
        """Expected regret (validation error) of the answer for ``budget``: inf
        when no design that fits is measured."""
        x = self.x if x is None else x
        a = self.answer(budget, k, e)
        if a is None:
            return math.inf
        idx = [self.index[d] for d in self.grid.fits(budget)]
        return float(np.mean(x[a] - x[idx].min(axis=0)))


def expected_regret(beliefs: Beliefs, budget: float) -> float:
    return beliefs.regret(budget)


# --------------------------------------------------------------------------
# A round
# --------------------------------------------------------------------------


def initial_cells(grid: Grid, settings: Settings) -> list[Cell]:
    """Round 0: float networks and the initial bits at the initial widths, the first seeds."""
    seeds = grid.seeds[: settings.initial_seeds]
    out = [(w, FLOAT_BITS, s) for w in settings.initial_widths for s in seeds]
    out += [(w, b, s) for w in settings.initial_widths for b in settings.initial_bits for s in seeds]
    return out


def _law(cells: pd.DataFrame, grid: Grid):
    """The law (and its interval model) on the measured cells' validation
    errors; (None, None, reason) when it cannot be fitted yet."""
    rows = cells.copy()
    for col, default in (("n_val", 1), ("n_test", 1)):
        if col not in rows.columns:
            rows[col] = default
    if "n_weights" not in rows.columns:
        rows["n_weights"] = [grid.n_weights[int(w)] for w in rows["width"]]
    rows = rows.drop(columns=[c for c in ("test_error", "direct_test_error") if c in rows.columns])
    try:
        law, model, _ = fit_study(rows, grid.method, n_boot=0)
    except TableError as exc:
        return None, None, str(exc)
    return law, model, ""


def _answers(beliefs: Beliefs, grid: Grid, settings: Settings, law, model, n_val: float | None) -> list[dict]:
    out = []
    n_seeds = len(grid.seeds)
    for budget in settings.budgets:
        a = beliefs.answer(budget)
        regret = beliefs.regret(budget)
        row = {"budget_bits": float(budget), "regret": regret}
        if a is None:
            row.update(width=None, bits=None, n_seeds=0, threshold=math.nan)
        else:
            w, b = beliefs.designs[a]
            if settings.scale == "val" and n_val:
                se = val_noise(beliefs.mean[a], n_val)
            else:
                se = beliefs.sd[a] / math.sqrt(n_seeds)
            row.update(
                width=int(w),
                bits=int(b),
                memory_bits=float(grid.memory[(w, b)]),
                n_seeds=int(beliefs.k[a]),
                val_error=float(beliefs.mean[a]),
                val_se=float(beliefs.sd[a] / math.sqrt(beliefs.k[a])),
                threshold=float(settings.regret * se),
            )
            if law is not None:
                pred = float(law.predict(grid.n_weights[w], b))
                lo, hi = model.interval(pred, design_pool(law, grid.n_weights[w], b))
                row.update(predicted=pred, lo=lo, hi=hi)
        out.append(row)
    return out


def _next_seed(grid: Grid, taken: set[Cell], d: Design) -> int | None:
    for s in grid.seeds:
        if (d[0], d[1], s) not in taken:
            return s
    return None


def choose_batch(
    beliefs: Beliefs,
    grid: Grid,
    settings: Settings,
    aims: Mapping[float, float],
    taken: set[Cell],
    cost: Callable[[int, bool], float],
    seconds_left: float,
    cells_left: float,
) -> list[tuple[Cell, float, float]]:
    """Up to ``settings.batch`` picks, greedily by expected regret removed per
    predicted second; each pick is (cell, risk removed, predicted seconds) and
    brings its float network along when that is not trained. A pick is
    assumed to land at its belief's centre for the next pick's sake."""
    x = beliefs.x.copy()
    k = beliefs.k.copy()
    mean = beliefs.mean.copy()
    e = beliefs.e.copy()
    taken = set(taken)
    budgets = settings.budgets
    fits = {bgt: [beliefs.index[d] for d in grid.fits(bgt)] for bgt in budgets}
    regret = {bgt: beliefs.regret(bgt, x, k, e) for bgt in budgets}
    picks: list[tuple[Cell, float, float]] = []
    while len(picks) < settings.batch:
        best = None
        for i, d in enumerate(beliefs.designs):
            s = _next_seed(grid, taken, d)
            if s is None:
                continue
            w, b = d
            new = [(i, (w, b, s))]
            c = cost(w, is_float_bits(b))
            if not is_float_bits(b) and (w, FLOAT_BITS, s) not in taken:
                new.append((beliefs.index[(w, FLOAT_BITS)], (w, FLOAT_BITS, s)))
                c += cost(w, True)
            if c > seconds_left or len(new) > cells_left:
                continue
            k2, mean2, e2, x2 = k.copy(), mean.copy(), e.copy(), x.copy()
            for j, _ in new:
                # one more seed, assumed to land where the belief expects it
                mu = beliefs.posterior_mean(j, k[j], mean[j])
                mean2[j] = mu if k[j] == 0 else (k[j] * mean[j] + mu) / (k[j] + 1)
                k2[j] = k[j] + 1
                e2[j] = beliefs.target(j, k2[j], mean2[j])[0]
                x2[j] = beliefs._row(j, k2[j], mean2[j])
            gain = 0.0
            for bgt in budgets:
                if i in fits[bgt] and regret[bgt] > aims[bgt]:
                    r2 = beliefs.regret(bgt, x2, k2, e2)
                    if math.isinf(regret[bgt]):
                        gain += 1.0 if math.isfinite(r2) else 0.0
                    else:
                        gain += max(regret[bgt] - max(r2, aims[bgt]), 0.0)
            score = gain / c
            if gain > 0 and (best is None or score > best[0]):
                best = (score, new, gain, c, k2, mean2, e2, x2)
        if best is None:
            break
        _, new, gain, c, k, mean, e, x = best
        for _, cell in new:
            taken.add(cell)
        seconds_left -= c
        cells_left -= len(new)
        regret = {bgt: beliefs.regret(bgt, x, k, e) for bgt in budgets}
        picks.append((new[0][1], gain, c))
        if len(new) > 1:
            picks.append((new[1][1], 0.0, 0.0))
    return picks


def plan_round(grid: Grid, settings: Settings, cells: pd.DataFrame, history: Sequence[Mapping], round_: int) -> dict:
    """One round of the search, as a JSON-able record: the answers and their
    expected regret on what is measured (``cells``: one row per trained
    cell, validation error only), the next ``batch`` of cells to train
    (floats first), and ``stop`` (the reason, or None)."""
    if round_ != len(history):
        raise TableError(f"round {round_} needs the {round_} earlier rounds' records, got {len(history)}")
    if round_ == 0:
        batch = initial_cells(grid, settings)
        return _record(0, [], batch, None, {}, 0, 0.0, [])
    cells = cells.copy()
    cells["bits"] = np.minimum(cells["bits"].to_numpy(int), FLOAT_BITS)
    planned = {tuple(c) for h in history for c in h["batch"]}
    have = set(zip(cells["width"].astype(int), cells["bits"].astype(int), cells["seed"].astype(int)))
    missing = sorted(planned - have)
    if missing:
        raise TableError(f"cells {missing[:3]} of earlier rounds were not measured: train them first")
    # a flagged cell (diverged, chance level: kept with fail_on_divergence false) is trained, and
    # not trained again, but says nothing about its design: out of the beliefs and the law
    usable = cells[~flagged(cells)]
    designs = measured_designs(usable, grid)
    law, model, why = _law(usable, grid)
    prior = _prior_sd(model, designs)
    sd = seed_sd(designs, grid.n_weights, prior)
    beliefs = Beliefs(grid, designs, law, model, sd, settings.draws, seed=round_, law_prior=settings.law_prior)
    n_val = float(cells["n_val"].median()) if "n_val" in cells.columns else None
    answers = _answers(beliefs, grid, settings, law, model, n_val)
    spent = float(cells[COST].sum()) if COST in cells.columns else 0.0
    n_cells = len(cells)
    lawinfo = {"form": law.form, "n_widths": int(cells["width"].nunique())} if law is not None else {"note": why}
    stop = _stop_reason(answers, history, settings, round_, n_cells, spent)
    batch, picks = [], []
    if stop is None:
        cost = _hinted_cost(cells, grid) if grid.cost_hint else _cost_model(cells, grid)
        seconds_left = math.inf if settings.max_seconds is None else settings.max_seconds - spent
        cells_left = math.inf if settings.max_cells is None else settings.max_cells - n_cells
        aims = _aims(answers)
        picks = choose_batch(beliefs, grid, settings, aims, have, cost, seconds_left, cells_left)
        if not picks:
            left = [c for c in grid.cells() if c not in have]
            if not left:
                stop = "grid exhausted"
            elif not _any_fits(left, cost, seconds_left, cells_left, have):
                stop = "cap: no cell left fits the caps"
            elif all(a["regret"] <= a["threshold"] for a in answers):
                stop = "converged: no cell lowers the risk further"
            elif settings.max_cells is None and settings.max_seconds is None:
                stop = "no cell left lowers the risk"
            else:
                stop = "no cell left within the caps lowers the risk"
        batch = [c for c, _, _ in picks]
    return _record(round_, answers, batch, stop, lawinfo, n_cells, spent, picks)


def _aims(answers: Sequence[Mapping]) -> dict[float, float]:
    """The expected regret each budget's picks work down to: its threshold
    while some budget is above its own; once all are below and only the
    answers' stability is pending, half of it (a round that confirms)."""

    def thr(a):
        t = a["threshold"]
        return 0.0 if t is None or not math.isfinite(t) else float(t)

    settled = all(a["width"] is not None and a["regret"] <= thr(a) for a in answers)
    return {a["budget_bits"]: thr(a) * (0.5 if settled else 1.0) for a in answers}


def _any_fits(left, cost, seconds_left, cells_left, have) -> bool:
    for w, b, s in left:
        alone = is_float_bits(b) or (w, FLOAT_BITS, s) in have  # else its float network comes along
        c = cost(w, is_float_bits(b)) + (0 if alone else cost(w, True))
        if c <= seconds_left and cells_left >= (1 if alone else 2):
            return True
    return False


def _prior_sd(model, designs: pd.DataFrame) -> float:
    """Seed sd before any design has two seeds: the spread of the law's
    held-out-width residuals (misfit and seed noise of one seed), else 10% of
    the typical measured error."""
    if model is not None:
        r = model.pool("width")
        if r.size >= 3:
            q = mixture_quantiles(r, 0.0, [0.25, 0.75])
            return max(float(q[1] - q[0]) / 1.349, 1e-4)
    m = designs["mean"].to_numpy(float)
    return max(0.1 * float(np.median(m)) if m.size else 0.01, 1e-4)


def _stop_reason(answers, history, settings: Settings, round_: int, n_cells: int, spent: float) -> str | None:
    pending = [a for a in answers if a["width"] is None or not a["regret"] <= a["threshold"]]
    if not pending and settings.patience >= 0:
        recent = [h for h in history if h["answers"]][-settings.patience :] if settings.patience else []
        if len(recent) == settings.patience and all(_same(h["answers"], answers) for h in recent):
            return "converged"
    if settings.max_cells is not None and n_cells >= settings.max_cells:
        return f"cap: {n_cells} cells (max_cells {settings.max_cells})"
    if settings.max_seconds is not None and spent >= settings.max_seconds:
        return f"cap: {spent:.0f} training seconds (max_seconds {settings.max_seconds:g})"
    if round_ >= settings.max_rounds:
        return f"cap: {round_} rounds (max_rounds {settings.max_rounds})"
    return None


def _same(a: Sequence[Mapping], b: Sequence[Mapping]) -> bool:
    return [(r["budget_bits"], r["width"], r["bits"]) for r in a] == [
        (r["budget_bits"], r["width"], r["bits"]) for r in b
    ]


def _record(round_, answers, batch, stop, lawinfo, n_cells, spent, picks) -> dict:
    order = sorted(batch, key=lambda c: (c[1] < FLOAT_BITS, c[0], c[1], c[2]))
    return {
        "round": int(round_),
        "cells": int(n_cells),
        "seconds": float(spent),
        "law": lawinfo,
        "answers": [_jsonable(a) for a in answers],
        "batch": [[int(w), int(b), int(s)] for w, b, s in order],
        "picks": [{"cell": [int(v) for v in c], "risk": float(g), "seconds": float(t)} for c, g, t in picks],
        "stop": stop,
    }


def _jsonable(row: Mapping) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, (np.floating, float)):
            v = float(v)
            out[k] = v if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------
# The loop (replay) and the table
# --------------------------------------------------------------------------


def replay(grid: Grid, settings: Settings, train: Callable[[Iterable[Cell]], pd.DataFrame]) -> list[dict]:
    """Run a whole search in one process: ``train(cells)`` returns one row per
    cell (width, bits, seed, val_error, train_seconds, ...; only
    :data:`VISIBLE` columns are kept). The Snakemake rules run the same rounds
    one checkpoint at a time."""
    history: list[dict] = []
    frames: list[pd.DataFrame] = []
    while True:
        cells = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        rec = plan_round(grid, settings, cells, history, len(history))
        history.append(rec)
        if rec["stop"] is not None:
            return history
        frames.append(visible_cells(train([tuple(c) for c in rec["batch"]])))


SEARCH_COLUMNS = [
    "round",
    "cells",
    "seconds",
    "budget_bits",
    "width",
    "bits",
    "memory_bits",
    "n_seeds",
    "val_error",
    "val_se",
    "predicted",
    "lo",
    "hi",
    "regret",
    "threshold",
    "batch",
    "stop",
]


VISIBLE = ("width", "bits", "seed", "method", TARGET, COST, "n_val", "n_weights", *FLAG_COLUMNS)
"""The columns of a cell's metrics row that a search may read: validation
error, cost and size; test error never reaches a choice."""


def visible_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Only :data:`VISIBLE` columns of the trained cells' metrics rows."""
    missing = [c for c in ("width", "bits", "seed", TARGET) if c not in cells.columns]
    if missing:
        raise TableError(f"the search's cells lack column(s) {', '.join(missing)}")
    out = cells[[c for c in VISIBLE if c in cells.columns]].copy()
    out["bits"] = np.minimum(out["bits"].to_numpy(int), FLOAT_BITS)
    return out.reset_index(drop=True)


def cells_of(rounds: Sequence[Mapping]) -> list[Cell]:
    """Every cell the rounds asked for, in order (no repeats)."""
    seen: dict[Cell, None] = {}
    for r in rounds:
        for c in r["batch"]:
            seen.setdefault((int(c[0]), int(c[1]), int(c[2])), None)
    return list(seen)


def check_rounds(rounds: Sequence[Mapping]) -> None:
    """Rounds 0, 1, ... in order, no round after a stop (one line otherwise)."""
    for i, r in enumerate(rounds):
        if not isinstance(r, Mapping) or r.get("round") != i or "batch" not in r or "answers" not in r:
            raise TableError(f"search round {i}: not the record of round {i} (rerun the search's rounds)")
        if r.get("stop") is not None and i != len(rounds) - 1:
            raise TableError(f"search round {i} stopped ({r['stop']}) but later rounds were given")


def search_table(rounds: Sequence[Mapping], study: str | None = None) -> pd.DataFrame:
    """``search.parquet``: one row per round and budget: the cells and training
    seconds measured when the round was planned, the best design for the
    budget (validation mean +- SE over its seeds, the law's prediction and
    interval for its mean test error), its expected regret and the
    threshold, the size of the batch the round asked for, and the stop
    reason (on the last round's rows)."""
    rows = []
    for r in rounds:
        for a in r["answers"] or [{}]:
            rows.append(
                {
                    "round": r["round"],
                    "cells": r["cells"],
                    "seconds": r["seconds"],
                    **{k: a.get(k) for k in SEARCH_COLUMNS[3:15]},
                    "batch": len(r["batch"]),
                    "stop": r["stop"],
                }
            )
    out = pd.DataFrame(rows, columns=SEARCH_COLUMNS)
    for c in ("round", "cells", "batch"):
        out[c] = out[c].astype(int)
    for c in SEARCH_COLUMNS[2:15]:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    out["stop"] = out["stop"].astype(object)
    if study is not None:
        out.insert(0, "study", study)
    return out


def closing_summary(studies: Iterable[str]) -> str:
    """What a finished run prints last for its search studies: why each search
    stopped, what it trained, and each budget's answer (chosen on validation)."""
    from ..core import layout  # noqa: PLC0415
    from .answer import KIB  # noqa: PLC0415

    lines = []
    for study in studies:
        path = layout.table_file(study, "search")
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError):
            continue
        last = table[table["round"] == table["round"].max()]
        first = last.iloc[0]
        picks = [
            f"{r.budget_bits / KIB:.4g} KiB: w{int(r.width)} "
            f"{'float' if r.bits >= FLOAT_BITS else f'{int(r.bits)}-bit'} "
            f"({int(r.n_seeds)} seed{'s' if r.n_seeds > 1 else ''}, val {100 * r.val_error:.2f}%)"
            for r in last.dropna(subset=["width"]).itertuples()
        ]
        lines.append(
            f"qdesign: {study}: search stopped after {int(first['round'])} rounds ({first['stop']}), "
            f"{int(first['cells'])} cells, {float(first['seconds']):,.0f} training seconds; best design per budget, "
            f"chosen on validation: {'; '.join(picks) or 'none'}. Table: {path}"
        )
    return "\n".join(lines)
