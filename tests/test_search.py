"""Adaptive design search (qdesign.analysis.search): rounds planned the same way
twice, chosen on validation error only, stopped by its rules and caps, and a
bad search section refused in one line."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from qdesign.analysis.search import (
    Grid,
    Settings,
    check_rounds,
    grid_from_study,
    plan_round,
    replay,
    search_table,
    visible_cells,
)
from qdesign.core.config import validate_config
from qdesign.core.constants import FLOAT_BITS
from qdesign.core.errors import ConfigError, TableError
from qdesign.run.cli import run

WIDTHS = (16, 32, 64, 128, 256)
BITS = (2, 3, 4, 8)
SEEDS = (0, 1, 2)
EXCESS = {2: 0.05, 3: 0.015, 4: 0.006, 8: 0.001, FLOAT_BITS: 0.0}


def n_weights(width: int) -> int:
    return 784 * width + width * width + 10 * width


def world(seed: int = 0) -> pd.DataFrame:
    """Every cell of a synthetic grid: validation and test error of a smooth
    law plus seed noise, training seconds in proportion to the weights."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in WIDTHS:
        for b in (*BITS, FLOAT_BITS):
            for s in SEEDS:
                err = 0.015 + 0.4 / w**0.7 + EXCESS[b] * (64 / w) ** 0.5
                rows.append(
                    {
                        "width": w,
                        "bits": b,
                        "seed": s,
                        "method": None if b == FLOAT_BITS else "fixed",
                        "val_error": err + rng.normal(0, 0.0015),
                        "test_error": err + rng.normal(0, 0.0015),
                        "train_seconds": n_weights(w) / 2e4 * (2.5 if b == FLOAT_BITS else 1.0),
                        "n_val": 5000,
                        "n_weights": n_weights(w),
                    }
                )
    return pd.DataFrame(rows)


def grid() -> Grid:
    memory = {(w, b): float(n_weights(w) * b) for w in WIDTHS for b in (*BITS, FLOAT_BITS)}
    return Grid(WIDTHS, BITS, SEEDS, "fixed", memory, {w: float(n_weights(w)) for w in WIDTHS})


def settings(**kw) -> Settings:
    base = {
        "budgets": (n_weights(32) * 3, n_weights(128) * 3, n_weights(256) * 8),
        "initial_widths": (16, 32, 64, 128),
        "initial_bits": (2, 4, 8),
        "draws": 300,
    }
    return Settings(**{**base, **kw})


def trainer(cells: pd.DataFrame, log: list | None = None):
    index = cells.set_index(["width", "bits", "seed"]).sort_index()

    def train(batch):
        if log is not None:
            log.extend(batch)
        return pd.DataFrame([{"width": w, "bits": b, "seed": s, **index.loc[(w, b, s)].to_dict()} for w, b, s in batch])

    return train


def choices(rounds) -> list:
    return [(r["batch"], [(a["width"], a["bits"]) for a in r["answers"]], r["stop"]) for r in rounds]


@pytest.fixture(scope="module")
def searched():
    cells = world()
    log: list = []
    return cells, replay(grid(), settings(), trainer(cells, log)), log


def test_a_search_is_the_same_twice(searched):
    cells, rounds, _ = searched
    again = replay(grid(), settings(), trainer(cells))
    assert json.dumps(rounds, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_round_zero_is_the_initial_design_floats_first():
    rec = plan_round(grid(), settings(), pd.DataFrame(), [], 0)
    batch = [tuple(c) for c in rec["batch"]]
    assert batch[:4] == [(w, FLOAT_BITS, 0) for w in (16, 32, 64, 128)]
    assert set(batch[4:]) == {(w, b, 0) for w in (16, 32, 64, 128) for b in (2, 4, 8)}
    assert rec["stop"] is None and rec["answers"] == []


def test_it_stops_converged_with_fewer_cells_than_the_grid(searched):
    cells, rounds, log = searched
    assert rounds[-1]["stop"].startswith("converged")
    assert len(set(log)) == len(log) < len(cells)
    for a in rounds[-1]["answers"]:
        assert a["regret"] <= a["threshold"]
        assert a["memory_bits"] <= a["budget_bits"]
    if rounds[-1]["stop"] == "converged":  # else: no cell left would lower the risk
        # the answers did not change in the round before (patience 1)
        assert [(a["width"], a["bits"]) for a in rounds[-2]["answers"]] == [
            (a["width"], a["bits"]) for a in rounds[-1]["answers"]
        ]


def test_choices_read_validation_error_only(searched):
    """Permuting test_error (or dropping it) changes no batch, answer or stop."""
    cells, rounds, _ = searched
    shuffled = cells.copy()
    shuffled["test_error"] = np.random.default_rng(1).permutation(shuffled["test_error"].to_numpy())
    assert choices(replay(grid(), settings(), trainer(shuffled))) == choices(rounds)
    # and validation error does decide: permuting it changes the search
    moved = cells.copy()
    moved["val_error"] = np.random.default_rng(1).permutation(moved["val_error"].to_numpy())
    assert choices(replay(grid(), settings(), trainer(moved))) != choices(rounds)


def test_a_flagged_cell_is_not_an_answer_and_not_trained_again(searched):
    """With fail_on_divergence false a diverged cell is recorded, flagged: the
    search must neither believe its (here impossibly good) validation error nor
    ask for it again."""
    cells, rounds, _ = searched
    first = [tuple(c) for c in rounds[0]["batch"]]
    bad = (32, 2, 0)
    measured = cells.set_index(["width", "bits", "seed"]).loc[first].reset_index()
    measured["diverged"] = [c == bad for c in first]
    measured.loc[measured["diverged"], "val_error"] = 0.0
    rec = plan_round(grid(), settings(), visible_cells(measured), rounds[:1], 1)
    assert all((a["width"], a["bits"]) != bad[:2] or a["n_seeds"] == 0 for a in rec["answers"])
    assert bad not in [tuple(c) for c in rec["batch"]]
    trusting = plan_round(grid(), settings(), visible_cells(measured.drop(columns="diverged")), rounds[:1], 1)
    assert (32, 2) in [(a["width"], a["bits"]) for a in trusting["answers"]]  # the flag is what keeps it out


def test_visible_cells_drop_every_test_column():
    cells = world().assign(direct_test_error=0.5)
    seen = visible_cells(cells)
    assert not [c for c in seen.columns if "test" in c]
    allowed = {"width", "bits", "seed", "method", "val_error", "train_seconds", "n_val", "n_weights"}
    assert set(seen.columns) <= allowed | {"diverged", "chance_level"}


@pytest.mark.parametrize("cap", [10, 16, 18, 20])
def test_max_cells_is_never_exceeded(cap):
    log: list = []
    rounds = replay(grid(), settings(max_cells=cap), trainer(world(), log))
    assert rounds[-1]["stop"].startswith("cap") or rounds[-1]["stop"] == "no cell left within the caps lowers the risk"
    initial = len(plan_round(grid(), settings(), pd.DataFrame(), [], 0)["batch"])
    assert len(log) <= max(cap, initial)  # the first round is the initial design, whole
    for r in rounds[1:]:
        assert r["cells"] <= max(cap, initial)


def test_max_seconds_and_max_rounds_stop_it():
    cells = world()
    log: list = []
    rounds = replay(grid(), settings(max_seconds=60.0), trainer(cells, log))
    spent = cells.set_index(["width", "bits", "seed"]).loc[log, "train_seconds"].sum()
    assert rounds[-1]["stop"].startswith("cap")
    assert spent <= 60.0 or len(rounds) == 2  # only the initial design may overshoot
    rounds = replay(grid(), settings(max_rounds=2), trainer(cells))
    assert len(rounds) == 3 and rounds[-1]["stop"] == "cap: 2 rounds (max_rounds 2)"


def test_a_stricter_threshold_trains_more(searched):
    _, _, log = searched
    strict: list = []
    replay(grid(), settings(regret=0.1), trainer(world(), strict))
    assert len(strict) > len(log)


def test_a_round_without_its_cells_or_history_is_refused(searched):
    cells, rounds, log = searched
    first = cells.set_index(["width", "bits", "seed"]).loc[[tuple(c) for c in rounds[0]["batch"][:-1]]].reset_index()
    with pytest.raises(TableError, match="were not measured"):
        plan_round(grid(), settings(), first, rounds[:1], 1)
    with pytest.raises(TableError, match="needs the 2 earlier rounds"):
        plan_round(grid(), settings(), first, rounds[:1], 2)
    with pytest.raises(TableError, match="round 1: not the record of round 1"):
        check_rounds([rounds[0], rounds[2]])
    with pytest.raises(TableError, match="stopped"):
        check_rounds([*rounds, {**rounds[-1], "round": len(rounds)}])


def test_search_table_has_a_row_per_round_and_budget(searched):
    _, rounds, _ = searched
    table = search_table(rounds, "synthetic")
    assert len(table) == 1 + 3 * (len(rounds) - 1)  # round 0 has no answers yet
    last = table[table["round"] == table["round"].max()]
    assert last["stop"].str.startswith("converged").all() and table["stop"].iloc[:-3].isna().all()
    assert last["threshold"].notna().all() and (last["regret"] <= last["threshold"]).all()
    assert table["cells"].is_monotonic_increasing and table["seconds"].is_monotonic_increasing


def test_the_page_and_the_figure_show_each_budgets_answer(searched, tmp_path):
    from qdesign.figures.catalog import write_figures  # noqa: PLC0415
    from qdesign.figures.search import search_html  # noqa: PLC0415

    _, rounds, _ = searched
    table = search_table(rounds, "synthetic")
    page = search_html(table, "synthetic")
    for a in rounds[-1]["answers"]:
        assert f"w{a['width']} {a['bits']}b" in page
    assert rounds[-1]["stop"] in page
    (png,) = write_figures(["search_progress"], {"search": table}, tmp_path, ("png",), 50)
    assert png.stat().st_size > 1000


# ----------------------------------------------------------------- the config


def study(**search) -> dict:
    return {
        "dataset": "digits",
        "model": {"type": "fcdnn", "depth": 2, "widths": [8, 16, 32, 64]},
        "bits": [2, 4],
        "seeds": [0, 1],
        "search": {"budgets": [3000, "4KiB"], **search},
    }


def checked(**search):
    cfg = validate_config({"studies": {"s": study(**search)}})
    return grid_from_study(cfg, "s")


def test_the_search_section_fills_its_defaults():
    g, s = checked()
    assert g.widths == (8, 16, 32, 64) and g.bits == (2, 4) and g.method == "fixed"
    assert s.budgets == (3000, 32768) and s.initial_widths == (8, 16, 32, 64) and s.initial_bits == (2, 4)
    assert (s.batch, s.regret, s.patience, s.max_cells, s.max_seconds) == (2, 1.0, 1, None, None)
    assert g.memory[(8, 2)] == 2 * (64 * 8 + 8 * 8 + 8 * 10)  # weights only, as the cells record it


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"budgets": ["12 parsecs"]}, "studies.s.search.budgets.0: budget '12 parsecs' is not a memory size"),
        (
            {"budgets": [100]},
            "studies.s.search.budgets.0: 100 fits no design of the search grid: "
            "the smallest needs 1,312 bits (164 B) of weights memory",
        ),
        ({"initial": {"widths": [8, 16, 32, 128]}}, "studies.s.search.initial.widths: [128] not among"),
        ({"initial": {"widths": [8, 16]}}, "studies.s.search.initial.widths: 2 widths; the law needs at least 4"),
        ({"widths": [8, 16, 32]}, "widths"),
        ({"method": "learned"}, "studies.s.search.method: 'learned' is not one of the study's retraining.methods"),
        ({"batch": 0}, "studies.s.search.batch"),
        ({"stop": {"regret": 0}}, "studies.s.search.stop.regret"),
        ({"stop": {"max_cell": 3}}, "unknown key 'studies.s.search.stop.max_cell' (did you mean 'max_cells'?)"),
        ({"budgets": []}, "studies.s.search.budgets: must not be empty"),
    ],
)
def test_a_bad_search_section_is_one_line(search, message):
    """The config's one line, before any job (common.smk raises it at parse time)."""
    with pytest.raises(ConfigError) as err:
        checked(**search)
    text = str(err.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        ({"mixed": {"mean_bits": [3]}, "bits": [2, 4]}, "mixed"),
        ({"recommend": {"budgets": ["1KiB"]}}, "recommend.budgets"),
    ],
)
def test_a_search_study_refuses_what_it_would_not_build(extra, what):
    cfg = validate_config({"studies": {"s": {**study(), **extra}}})
    with pytest.raises(
        ConfigError, match=f"studies.s.search: a search study trains only what its search asks for; remove {what}"
    ):
        grid_from_study(cfg, "s")


def test_search_round_command_refuses_a_broken_round_in_one_line(tmp_path, capsys):
    cfg = validate_config({"studies": {"s": study()}})
    bad = tmp_path / "round-0.json"
    bad.write_text("{not json")
    code = run(
        [
            "search-round",
            "--study",
            "s",
            "--config-json",
            json.dumps(cfg),
            "--round",
            "1",
            "--history",
            str(bad),
            "--out",
            str(tmp_path / "round-1.json"),
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("qdesign: error: cannot read the search round") and err.count("\n") == 1
    assert not (tmp_path / "round-1.json").exists()


def test_beliefs_of_a_fully_measured_grid_are_the_measurements():
    """With every cell measured, the answer is the full grid's choice on
    validation and its expected regret is zero."""
    cells = world()
    rounds = [plan_round(grid(), settings(), pd.DataFrame(), [], 0)]
    full = {**rounds[0], "batch": [list(c) for c in cells[["width", "bits", "seed"]].itertuples(index=False)]}
    rec = plan_round(grid(), settings(), cells.drop(columns="test_error"), [full], 1)
    means = cells.groupby(["width", "bits"])["val_error"].mean()
    for a in rec["answers"]:
        fits = means[[grid().memory[d] <= a["budget_bits"] for d in means.index]]
        assert (a["width"], a["bits"]) == fits.idxmin()
        assert a["regret"] == 0.0
    assert rec["stop"] is not None and math.isfinite(rec["answers"][0]["val_error"])


def test_settings_are_plain_data():
    assert dataclasses.asdict(settings())["budgets"] == settings().budgets
