"""Mixed precision: bit allocation, layer sensitivity, config checks, the
workflow's mixed cells next to unchanged uniform cells."""

import random
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from qdesign.analysis.allocation import allocate, brute_force, greedy, knapsack
from qdesign.core.config import ConfigError, validate_config
from qdesign.core.specs import budget_spec, mixed_cells, quant_spec, study_cells
from qdesign.nn.models import build_model
from qdesign.nn.sensitivity import costs_from_table, layer_sensitivity, loss_and_error
from qdesign.nn.train import evaluate
from qdesign.quantize import to_quantized

from .conftest import tiny_study
from .snakemake_runs import job_counts, smk, write_config

# ------------------------------------------------------------------ allocation


def random_case(rng):
    n_layers = rng.randint(1, 5)
    cand = sorted(rng.sample([1, 2, 3, 4, 5, 6, 8], rng.randint(1, 4)))
    costs = [{b: rng.random() * (9 - b) ** 2 for b in cand} for _ in range(n_layers)]
    n = [rng.randint(1, 400) for _ in range(n_layers)]
    lo, hi = sum(x * cand[0] for x in n), sum(x * cand[-1] for x in n)
    return costs, n, rng.uniform(lo, hi)


@pytest.mark.parametrize("seed", range(40))
def test_knapsack_is_the_brute_force_optimum(seed):
    costs, n, budget = random_case(random.Random(seed))
    exact, best = knapsack(costs, n, budget), brute_force(costs, n, budget)
    assert exact.pattern == best.pattern
    assert exact.memory_bits <= budget
    assert exact.cost == pytest.approx(best.cost, abs=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_greedy_meets_the_budget_and_is_never_better_than_the_optimum(seed):
    costs, n, budget = random_case(random.Random(seed))
    g = greedy(costs, n, budget)
    assert g.memory_bits <= budget
    assert g.cost >= brute_force(costs, n, budget).cost - 1e-12


def test_greedy_can_be_worse_than_the_exact_allocation():
    # lowering the big layer is cheapest per bit saved (1.0 / 200 < 0.3 / 20) but
    # saves far more than needed; the exact answer lowers the small layer instead
    costs = [{2: 1.0, 4: 0.0}, {2: 0.3, 4: 0.0}]
    n = [100, 10]
    budget = 4 * 100 + 2 * 10
    assert knapsack(costs, n, budget).pattern == (4, 2)
    g = greedy(costs, n, budget)
    assert g.pattern == (2, 4) and g.cost == 1.0 > knapsack(costs, n, budget).cost == 0.3


def test_budget_below_the_smallest_network_is_one_clear_error():
    with pytest.raises(ConfigError, match="below the smallest possible network"):
        allocate([{2: 0.1, 4: 0.0}], [100], 1.5)


def test_allocation_of_a_uniform_budget_is_uniform_when_costs_fall_with_bits():
    costs = [{2: 1.0, 3: 0.5, 4: 0.1}] * 3
    assert allocate(costs, [10, 10, 10], 3.0).pattern == (3, 3, 3)


# ------------------------------------------------------------------ sensitivity


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    model = build_model({"type": "fcdnn", "depth": 2, "dropout": 0.0}, 12, (1, 8, 8), 10).eval()
    g = torch.Generator().manual_seed(1)
    data = SimpleNamespace(
        x_val=torch.randn(200, 1, 8, 8, generator=g),
        y_val=torch.randint(0, 10, (200,), generator=g),
        x_test=torch.randn(300, 1, 8, 8, generator=g),
        y_test=torch.randint(0, 10, (300,), generator=g),
    )
    return model, data


def test_sensitivity_equals_quantizing_that_layer_by_hand(tiny_net):
    model, data = tiny_net
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = layer_sensitivity(model, data, [2, 4])
    assert len(table) == 3 * 2
    # the model is restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    base_loss, base_err = loss_and_error(model, data.x_val, data.y_val)
    for row in table.itertuples():
        pattern = [None] * 3
        pattern[row.layer] = row.bits
        q = to_quantized(model, pattern).eval()
        assert row.val_error == evaluate(q, data.x_val, data.y_val)
        assert row.test_error == evaluate(q, data.x_test, data.y_test)
        loss, _ = loss_and_error(q, data.x_val, data.y_val)
        assert row.val_loss == pytest.approx(loss, rel=1e-6)
        assert row.d_val_loss == pytest.approx(loss - base_loss, rel=1e-6, abs=1e-9)
        assert row.d_val_error == pytest.approx(row.val_error - base_err)


def test_costs_from_table_refuses_a_missing_bits_value(tiny_net):
    model, data = tiny_net
    table = layer_sensitivity(model, data, [2, 4])
    costs, n = costs_from_table(table, [2, 4])
    assert len(costs) == 3 and n == [64 * 12, 12 * 12, 12 * 10]
    with pytest.raises(ValueError, match="lacks layer 0 at \\[3\\] bits"):
        costs_from_table(table, [2, 3])
    broken = table.copy()
    broken.loc[(broken["layer"] == 1) & (broken["bits"] == 2), "d_val_loss"] = float("nan")
    with pytest.raises(ValueError, match="non-finite loss increase for layer 1 at \\[2\\] bits"):
        costs_from_table(broken, [2, 4])


# ------------------------------------------------------------------ config


def mixed_config(**mixed):
    return {"studies": {"s": tiny_study(mixed=mixed)}}


@pytest.mark.parametrize(
    "mixed, message",
    [
        ({"patterns": [[4, 2]]}, "mixed.patterns.0: 2 word lengths for a network of 3 weight layers"),
        ({"patterns": [[4, 2, 17]]}, "studies.s.mixed.patterns.0.2"),
        ({"patterns": [[4, 0, 4]]}, "studies.s.mixed.patterns.0.1"),
        ({"mean_bits": [1.5]}, "mixed.mean_bits.0: a budget of 1.5 bits per weight is below the smallest possible"),
        ({"mean_bits": [4]}, "fits every layer at 4 bits"),
        ({}, "give at least one of patterns or mean_bits"),
        ({"patterns": [[4, 4, 4]]}, "is the uniform 4-bit cell of bits"),
        ({"patterns": [[4, 2, 4], [4, 2, 4]]}, "is listed twice"),
        ({"mean_bits": [3], "allocation": "best"}, "studies.s.mixed.allocation"),
    ],
)
def test_bad_mixed_config_is_one_clear_error(mixed, message):
    with pytest.raises(ConfigError, match=None) as err:
        validate_config(mixed_config(**mixed))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_mixed_and_float_first_do_not_combine():
    cfg = mixed_config(mean_bits=[3])
    cfg["studies"]["s"]["retraining"]["float_first"] = True
    with pytest.raises(ConfigError, match="cannot be combined with retraining.float_first"):
        validate_config(cfg)


def test_uniform_cells_and_their_specs_are_unchanged_by_a_mixed_section():
    plain = validate_config({"studies": {"s": tiny_study()}})
    mixed = validate_config(mixed_config(patterns=[[4, 2, 4]], mean_bits=[3]))
    assert study_cells(plain, "s") == study_cells(mixed, "s")
    for c in study_cells(plain, "s"):
        if not c.is_float:
            assert (
                quant_spec(plain, "s", c.width, c.bits, c.seed).key
                == quant_spec(mixed, "s", c.width, c.bits, c.seed).key
            )
            assert "budget" not in quant_spec(mixed, "s", c.width, c.bits, c.seed).to_dict()
    assert mixed_cells(plain, "s") == []
    cells = mixed_cells(mixed, "s")
    assert len(cells) == 2 * 1 * 2  # widths x seeds x (1 pattern + 1 budget)
    spec = budget_spec(mixed, "s", 8, 3, 0)
    fields = spec.to_dict()
    assert fields["bits"] is None and fields["budget"] == {
        "mean_bits": 3.0,
        "allocation": "knapsack",
        "candidate_bits": [2, 4],
    }
    assert not spec.precision.is_allocated and spec.precision.mean_bits == 3.0


# ------------------------------------------------------------------ workflow


@pytest.mark.slow
def test_mixed_cells_reuse_the_float_networks(tmp_path):
    study = tiny_study(seeds=[0, 1], mixed={"patterns": [[4, 2, 4], [2, 4, 2]], "mean_bits": [2.5, 3]})
    counts = job_counts(
        smk(tmp_path, "-n", "--configfile", str(write_config(tmp_path / "c.yaml", {"s": study}))).stdout
    )
    assert counts["train_float"] == 2 * 2  # widths x seeds, as without mixed
    assert counts["sensitivity"] == 2 * 2  # one per float network
    assert counts["retrain"] == 2 * 2 * (2 + 2)  # widths x seeds x (bits + patterns)
    assert counts["retrain_budget"] == 2 * 2 * 2  # widths x seeds x budgets
    assert counts["aggregate_mixed"] == counts["mixed_figures"] == 1


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("mixed")
    study = tiny_study(seeds=[0, 1], mixed={"patterns": [[4, 2, 4]], "mean_bits": [3]})
    cfg = write_config(work / "c.yaml", {"s": study}, plots={"formats": ["png"]})
    res = smk(work, "--cores", "2", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    return work


@pytest.mark.slow
def test_mixed_run_tables(mixed_run):
    res = mixed_run / "results" / "s"
    mixed = pd.read_parquet(res / "mixed.parquet")
    assert len(mixed) == 2 * 2 * 2
    assert (mixed["bits"] == 0).all()
    pattern = mixed[mixed["precision"] == "4-2-4"]
    assert all(list(lb) == [4, 2, 4] for lb in pattern["layer_bits"])
    budget = mixed[mixed["precision"] == "m3"]
    assert (budget["memory_bits_weights"] <= 3 * budget["n_weights"]).all()
    assert (budget["allocation"] == "knapsack").all() and budget["predicted_cost"].notna().all()
    # the allocation is the knapsack optimum of that network's own sensitivity table
    for row in budget.itertuples():
        sens = pd.read_parquet(res / "sensitivity" / f"w{row.width}-s{row.seed}.parquet")
        costs, n = costs_from_table(sens, [2, 4])
        assert "-".join(map(str, allocate(costs, n, 3.0).pattern)) == row.pattern
    summary = pd.read_parquet(res / "summary.parquet")
    assert set(summary["bits"]) == {2, 4, 32}  # uniform tables hold no mixed cell
    comparison = pd.read_parquet(res / "mixed_vs_uniform.parquet")
    assert set(comparison["winner"]) <= {"mixed", "uniform", "tie", "no mixed design fits"}
    fits = comparison.dropna(subset=["mixed_error"])
    assert (fits["mixed_memory_bits"] <= fits["budget_bits"]).all()
    assert (fits["uniform_memory_bits"] <= fits["budget_bits"]).all()
    for name in ("sensitivity", "mixed_frontier"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 10_000
    page = (res / "report" / "mixed.html").read_text()
    assert "Best uniform vs best mixed design per memory budget" in page
    assert all(w in page for w in comparison["winner"])


@pytest.mark.slow
def test_a_stale_sensitivity_table_is_refused(mixed_run):
    res = mixed_run / "results" / "s"
    other = pd.read_parquet(res / "sensitivity" / "w16-s0.parquet")
    other.to_parquet(res / "sensitivity" / "w8-s0.parquet")  # another network's table in its place
    from qdesign.core.errors import CheckpointError
    from qdesign.core.specs import float_spec
    from qdesign.nn.sensitivity import read_sensitivity

    cfg = validate_config(
        {"studies": {"s": tiny_study(seeds=[0, 1], mixed={"patterns": [[4, 2, 4]], "mean_bits": [3]})}}
    )
    with pytest.raises(CheckpointError, match="another float network"):
        read_sensitivity(res / "sensitivity" / "w8-s0.parquet", float_spec(cfg, "s", 8, 0).key)


@pytest.mark.slow
def test_a_mixed_cell_exports_exactly(mixed_run, tmp_path):
    from qdesign.export import export_cell
    from qdesign.export.verify import check_export

    for cell in (
        mixed_run / "results" / "s" / "fixed" / "b4-2-4" / "w16-s0",
        mixed_run / "results" / "s" / "fixed" / "m3" / "w16-s0",
    ):
        for fmt, name in (("packed", "m.qdq"), ("onnx", "m.onnx")):
            out = export_cell(cell, fmt, tmp_path / f"{cell.parent.name}-{name}")  # a new file each
            check = check_export(cell, out, mixed_run / "results" / "data" / "digits.pt", fmt)
            assert check.ok and check.n_differ == 0, check
