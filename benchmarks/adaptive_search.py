"""Adaptive design search replayed on the shipped reference tables, against a
random subset and a coarse grid of the same training cost.

A "training" returns the measured cell of ``reference/<profile>/<study>/
summary.parquet`` (its seeds' validation errors and recorded train_seconds);
the search sees validation error only (it keeps the columns
``qdesign.analysis.search.VISIBLE``; test columns are dropped before that) and
ranks cells by the pipeline's cost hint from the reference's recorded config.
For every study and budget it prints the searched design (with the seeds it
measured), the full grid's design (the best seed-mean validation error among
the designs that fit, all seeds), the validation regret (what the defaults
were tuned on), the test-error regret of the searched design against the
full grid's with its seed SE, and the share of the full grid's training
seconds the search spent. Two baselines get the same training seconds
(random_pp, coarse_pp) and, beside them, the same number of cells
(random_n_pp, coarse_n_pp):

* random: whole random designs (all seeds, float networks brought along)
  until the next would exceed the allowance; the mean over draws (numpy
  generator seeded 0: the same draws every run);
* coarse: every other width (from the smallest), all bits, seed by seed
  until the next cell would exceed the allowance.

Each answers a budget with its best measured design by validation error; a
budget it has no fitting design for gets the worst fitting design of the
grid (the regret of not knowing). ``--worlds N`` replays N other seed orders
(each width's seeds renamed at random); ``--fine`` takes every power of 2 KiB
as a budget. Exit status 1 with ``--check`` when a criterion of issue 25
fails (regret within one seed SE at every budget, at most 35% of the training
seconds, lower mean regret than both baselines at the same seconds).

    python benchmarks/adaptive_search.py [--profile cpu] [--draws 200] [--worlds 8] [--fine] [--check]
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import pandas as pd

from qdesign.analysis.recommend import parse_budget
from qdesign.analysis.search import (
    COST,
    Grid,
    Settings,
    default_initial_bits,
    default_initial_widths,
    replay,
)
from qdesign.core.config import load_config
from qdesign.core.constants import FLOAT_BITS
from qdesign.core.layout import REFERENCE_CONFIG, REPO_ROOT, reference_table
from qdesign.run.resources import search_cost_hint

BUDGETS = {
    # powers of 4 KiB over each study's quantized designs (fixed before the search was tuned)
    "mnist-fcdnn": ["16KiB", "64KiB", "256KiB", "1MiB"],
    "fashion-cnn": ["1KiB", "4KiB", "16KiB", "64KiB"],
}
FINE_BUDGETS = {
    # every power of 2 KiB between the smallest and the largest quantized design: a robustness check
    "mnist-fcdnn": [f"{2**i}KiB" for i in range(3, 12)],
    "fashion-cnn": [f"{2**i}KiB" for i in range(0, 6)],
}
MAX_SHARE = 0.35
HIDDEN = ("test_error", "direct_test_error", "direct_val_error")


def load(profile: str, study: str, relabel: int = 0) -> pd.DataFrame:
    """The reference summary; ``relabel`` > 0: the seeds renamed by a random
    permutation per width (float and quantized cells of a width keep sharing
    their float network), an equally likely world in which the search meets
    the seeds in another order."""
    df = pd.read_parquet(REPO_ROOT / reference_table("summary", profile, study))
    df["bits"] = np.minimum(df["bits"].to_numpy(int), FLOAT_BITS)
    if relabel:
        rng = np.random.default_rng(relabel)
        seeds = np.sort(df["seed"].unique())
        new = df["seed"].copy()
        for w in sorted(df["width"].unique()):
            perm = dict(zip(seeds, rng.permutation(seeds)))
            at = df["width"] == w
            new[at] = df.loc[at, "seed"].map(perm)
        df["seed"] = new.astype(int)
    return df


def cost_hint(profile: str, study: str, widths) -> dict | None:
    """The pipeline's cost hint (qdesign.run.resources.search_cost_hint) from the
    reference's recorded config, as a search of that study would rank cells."""
    path = REPO_ROOT / REFERENCE_CONFIG.format(profile=profile)
    return search_cost_hint(load_config(path), study, widths) if path.is_file() else None


def grid_of(summary: pd.DataFrame, hint: dict | None = None) -> Grid:
    widths = tuple(sorted(int(w) for w in summary["width"].unique()))
    bits = tuple(sorted(int(b) for b in summary["bits"].unique() if b < FLOAT_BITS))
    seeds = tuple(sorted(int(s) for s in summary["seed"].unique()))
    first = summary.groupby(["width", "bits"]).first()
    memory = {(int(w), int(b)): float(r.memory_bits_weights) for (w, b), r in first.iterrows()}
    n_weights = {int(w): float(n) for w, n in summary.groupby("width")["n_weights"].first().items()}
    return Grid(widths, bits, seeds, "fixed", memory, n_weights, hint)


def settings_for(grid: Grid, budgets, **kw) -> Settings:
    return Settings(
        budgets=tuple(parse_budget(b) for b in budgets),
        initial_widths=kw.pop("initial_widths", default_initial_widths(grid.widths)),
        initial_bits=kw.pop("initial_bits", default_initial_bits(grid.bits)),
        **kw,
    )


def trainer(summary: pd.DataFrame, log: list):
    index = summary.set_index(["width", "bits", "seed"]).sort_index()

    def train(cells):
        rows = []
        for w, b, s in cells:
            r = index.loc[(w, b, s)]
            rows.append({"width": w, "bits": b, "seed": s, **r.drop(list(HIDDEN), errors="ignore").to_dict()})
            log.append((w, b, s))
        return pd.DataFrame(rows)

    return train


def design_stats(summary: pd.DataFrame) -> pd.DataFrame:
    g = summary.groupby(["width", "bits"])
    out = g.agg(
        val=("val_error", "mean"), test=("test_error", "mean"), test_sd=("test_error", "std"), n=("seed", "count")
    )
    out["test_se"] = (out["test_sd"] / np.sqrt(out["n"])).fillna(0.0)
    return out


def best_on_val(summary: pd.DataFrame, cells, grid: Grid, budget: float):
    """The best measured design (seed-mean validation error over the measured seeds) that fits."""
    sub = summary.set_index(["width", "bits", "seed"]).loc[sorted(cells)].reset_index()
    means = sub.groupby(["width", "bits"])["val_error"].mean()
    fits = [(d, v) for d, v in means.items() if grid.memory[d] <= budget]
    if not fits:
        return None
    return min(fits, key=lambda dv: (dv[1], grid.memory[dv[0]], dv[0][1], dv[0][0]))[0]


def with_parents(cells):
    out = set(cells)
    out |= {(w, FLOAT_BITS, s) for w, b, s in cells}
    return out


def seconds(summary: pd.DataFrame, cells, col=COST) -> float:
    idx = summary.set_index(["width", "bits", "seed"])[col]
    return float(sum(idx.loc[c] for c in cells))


def regret_of(stats, grid, budget, design, full):
    if design is None:  # no fitting design measured: the worst that fits
        design = max((d for d in grid.fits(budget)), key=lambda d: stats.loc[d, "val"])
    r = stats.loc[design, "test"] - stats.loc[full, "test"]
    se = 0.0 if design == full else math.hypot(stats.loc[design, "test_se"], stats.loc[full, "test_se"])
    return float(r), float(se)


def val_regret(stats, design, full) -> float:
    """What the search's settings were tuned on: the validation (not test)
    regret against the full grid's choice, all seeds."""
    return float(stats.loc[design, "val"] - stats.loc[full, "val"]) if design is not None else math.nan


def cell_costs(summary, grid, unit: str) -> dict:
    """What a baseline's allowance counts: each cell's train_seconds, or 1 per cell."""
    return {c: (seconds(summary, [c]) if unit == "seconds" else 1.0) for c in grid.cells()}


def random_baseline(summary, grid, budgets, spend, rng, unit="seconds"):
    cost = cell_costs(summary, grid, unit)
    order = [grid.designs()[i] for i in rng.permutation(len(grid.designs()))]
    cells, total = set(), 0.0
    for w, b in order:
        new = with_parents({(w, b, s) for s in grid.seeds}) - cells
        extra = sum(cost[c] for c in new)
        if total + extra > spend:
            continue
        cells |= new
        total += extra
    return cells, total


def coarse_baseline(summary, grid, spend, unit="seconds"):
    widths = grid.widths[::2]
    cost = cell_costs(summary, grid, unit)
    cells, total = set(), 0.0
    for s in grid.seeds:
        for w in widths:
            for b in (FLOAT_BITS, *grid.bits):
                if total + cost[(w, b, s)] > spend:
                    continue
                if b != FLOAT_BITS and (w, FLOAT_BITS, s) not in cells:
                    continue
                cells.add((w, b, s))
                total += cost[(w, b, s)]
    return cells, total


def study_report(profile, study, budgets, draws, settings_kw, relabel=0, measured_cost=False):
    summary = load(profile, study, relabel)
    widths = sorted(int(w) for w in summary["width"].unique())
    grid = grid_of(summary, None if measured_cost else cost_hint(profile, study, widths))
    stats = design_stats(summary)
    settings = settings_for(grid, budgets, **settings_kw)
    log: list = []
    rounds = replay(grid, settings, trainer(summary, log))
    trained = set(log)
    total_train = float(summary[COST].sum())
    total_job = float(summary["job_seconds"].sum())
    spend = seconds(summary, trained)
    rng = np.random.default_rng(0)
    rand_sets = [random_baseline(summary, grid, settings.budgets, spend, rng) for _ in range(draws)]
    coarse, coarse_spend = coarse_baseline(summary, grid, spend)
    # the same number of cells instead of the same seconds
    rand_n = [random_baseline(summary, grid, settings.budgets, len(trained), rng, "cells") for _ in range(draws)]
    coarse_n, _ = coarse_baseline(summary, grid, len(trained), "cells")
    answers = {a["budget_bits"]: a for a in rounds[-1]["answers"]}
    rows = []
    for text, budget in zip(budgets, settings.budgets):
        full = best_on_val(summary, grid.cells(), grid, budget)
        a = answers[float(budget)]
        found = None if a["width"] is None else (a["width"], a["bits"])
        reg, se = regret_of(stats, grid, budget, found, full)
        rand = [regret_of(stats, grid, budget, best_on_val(summary, c, grid, budget), full)[0] for c, _ in rand_sets]
        co = regret_of(stats, grid, budget, best_on_val(summary, coarse, grid, budget), full)[0]
        rand_c = [regret_of(stats, grid, budget, best_on_val(summary, c, grid, budget), full)[0] for c, _ in rand_n]
        co_c = regret_of(stats, grid, budget, best_on_val(summary, coarse_n, grid, budget), full)[0]
        rows.append(
            {
                "study": study,
                "budget": text,
                "search": f"w{found[0]} b{found[1]} ({a['n_seeds']}s)" if found else "none",
                "full grid": f"w{full[0]} b{full[1]}",
                "val_regret_pp": 100 * val_regret(stats, found, full),
                "regret_pp": 100 * reg,
                "se_pp": 100 * se,
                "grid_se_pp": 100 * stats.loc[full, "test_se"],
                "random_pp": 100 * float(np.mean(rand)),
                "coarse_pp": 100 * co,
                "random_n_pp": 100 * float(np.mean(rand_c)),
                "coarse_n_pp": 100 * co_c,
            }
        )
    info = {
        "study": study,
        "rounds": len(rounds) - 1,
        "cells": len(trained),
        "grid_cells": len(summary),
        "train_share": spend / total_train,
        "job_share": seconds(summary, trained, "job_seconds") / total_job,
        "random_share": float(np.mean([s for _, s in rand_sets])) / total_train,
        "coarse_share": coarse_spend / total_train,
        "stop": rounds[-1]["stop"],
    }
    return pd.DataFrame(rows), info


def worlds_line(profile, study, budgets, n, draws) -> str:
    """The replay in ``n`` seed orders other than the recorded one: how its
    cost and regret vary with the luck of the first seeds."""
    shares, within, beats, regrets = [], 0, 0, []
    for world in range(1, n + 1):
        table, info = study_report(profile, study, budgets, draws, {}, relabel=world)
        shares.append(info["train_share"])
        within += int((table["regret_pp"] <= table["se_pp"] + 1e-12).all())
        mean = table[["regret_pp", "random_pp", "coarse_pp"]].mean()
        beats += int(mean["regret_pp"] < min(mean["random_pp"], mean["coarse_pp"]))
        regrets.append(mean.to_numpy())
    m = np.mean(regrets, axis=0)
    return (
        f"{n} other seed orders: share of train_seconds mean {100 * np.mean(shares):.1f}% "
        f"(min {100 * min(shares):.1f}%, max {100 * max(shares):.1f}%); within one SE at every budget in "
        f"{within}/{n}; beats both baselines in {beats}/{n}; mean regret (pp) search {m[0]:.3f}, "
        f"random {m[1]:.3f}, coarse {m[2]:.3f}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--draws", type=int, default=200, help="random-subset draws per study")
    ap.add_argument("--fine", action="store_true", help="every power of 2 KiB instead of every power of 4")
    ap.add_argument("--check", action="store_true", help="exit 1 when a criterion of issue 25 fails")
    ap.add_argument(
        "--worlds",
        type=int,
        default=0,
        help="also replay N worlds in which each width's seeds are met in another order (robustness)",
    )
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    ok = True
    for study, budgets in (FINE_BUDGETS if args.fine else BUDGETS).items():
        if not (REPO_ROOT / reference_table("summary", args.profile, study)).is_file():
            print(f"{study}: no reference table under reference/{args.profile}; skipped")
            continue
        table, info = study_report(args.profile, study, budgets, args.draws, {})
        print(
            f"\n{study}: {info['rounds']} rounds, {info['cells']} of {info['grid_cells']} cells, "
            f"{100 * info['train_share']:.1f}% of the grid's train_seconds ({100 * info['job_share']:.1f}% of its "
            f"job_seconds); stop: {info['stop']}. Baselines' spend: random {100 * info['random_share']:.1f}%, "
            f"coarse {100 * info['coarse_share']:.1f}%"
        )
        print(table.drop(columns="study").to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        within = bool((table["regret_pp"] <= table["se_pp"] + 1e-12).all())
        mean = table[["regret_pp", "random_pp", "coarse_pp", "random_n_pp", "coarse_n_pp"]].mean()
        beats = mean["regret_pp"] < min(mean["random_pp"], mean["coarse_pp"])
        cheap = info["train_share"] <= MAX_SHARE
        print(
            f"mean regret (pp): search {mean['regret_pp']:.3f}, random {mean['random_pp']:.3f}, "
            f"coarse {mean['coarse_pp']:.3f} (same number of cells: random {mean['random_n_pp']:.3f}, "
            f"coarse {mean['coarse_n_pp']:.3f}); within one SE at every budget: {within}; "
            f"<= {MAX_SHARE:.0%} of the seconds: {cheap}; beats both baselines: {beats}"
        )
        ok &= within and cheap and beats
        if args.worlds:
            print(worlds_line(args.profile, study, budgets, args.worlds, min(args.draws, 50)))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
