"""Issue 13: work outside training and the speed of the step search, without
changing a single number: the step search returns the original steps bit for
bit, its exact counting matches a plain binary search, and a retraining cell
evaluates only what it reports."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from qdesign.core.config import validate_config
from qdesign.core.specs import float_spec, quant_spec
from qdesign.nn import cells
from qdesign.nn.cells import retrain, train_float
from qdesign.nn.data import prepare_dataset, write_prepared
from qdesign.quantize import l2_optimal_step
from qdesign.quantize.step_search import _SortedMagnitudes

from .conftest import REPO, tiny_study

STEPS = json.loads((REPO / "tests" / "golden" / "step_search_steps.json").read_text())


def _sample(dist, n, seed, dtype):
    """As tests/golden/step_search_steps.json was made (by the step search before issue 13;
    the ties / zeros / tiny cases by that same code, at 30e30e6, on 2026-12-02)."""
    g = torch.Generator().manual_seed(seed)
    if dist == "gaussian":
        w = torch.randn(n, generator=g)
    elif dist == "uniform":
        w = torch.rand(n, generator=g) * 2 - 1
    elif dist == "outlier":
        w = torch.randn(n, generator=g)
        w[0] = 40.0
    elif dist == "ties":  # a coarse grid of values: many equal magnitudes
        w = torch.round(torch.randn(n, generator=g) * 4) / 4
    elif dist == "zeros":  # half the weights exactly zero (pruned)
        w = torch.randn(n, generator=g)
        w[: n // 2] = 0.0
    elif dist == "tiny":  # magnitudes near float32's smallest normals
        w = torch.randn(n, generator=g) * 1e-36
    else:
        u = torch.rand(n, generator=g, dtype=torch.float64) - 0.5
        w = (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()
    return w.to(getattr(torch, dtype))


@pytest.mark.parametrize("case", STEPS, ids=lambda c: f"{c['dtype']}-{c['n']}-{c['dist']}-{c['bits']}")
def test_step_search_returns_the_original_steps_bit_for_bit(case):
    w = _sample(case["dist"], case["n"], case["seed"], case["dtype"])
    assert l2_optimal_step(w, case["bits"]).hex() == case["step"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_count_below_is_exactly_searchsorted(dtype):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(20000, generator=g, dtype=dtype)
    w[:50] = 0.25  # ties
    w[50] = 30.0  # an outlier stretches the bins
    sm = _SortedMagnitudes(w)
    a = sm.a.astype(np.float64)
    rng = np.random.default_rng(0)
    exact = rng.choice(a, 3000)  # magnitudes themselves and their float neighbours
    queries = np.concatenate(
        [
            exact,
            np.nextafter(exact, np.inf),
            np.nextafter(exact, -np.inf),
            np.nextafter(exact.astype(np.float32), np.float32(np.inf)).astype(np.float64),
            rng.uniform(0, 2 * sm.max, 3000),
            [0.0, sm.max, 2 * sm.max, 1e300],
        ]
    )
    np.testing.assert_array_equal(sm.count_below(queries), np.searchsorted(a, queries, side="left"))
    np.testing.assert_array_equal(sm.count_below(queries[:100]), np.searchsorted(a, queries[:100], side="left"))


def test_single_step_evaluation_matches_the_batched_one():
    w = torch.randn(50000, generator=torch.Generator().manual_seed(1))
    sm = _SortedMagnitudes(w)
    for k in (1, 3, 127):
        steps = np.geomspace(sm.max / (k + 0.5) * 1e-2, 2 * sm.max, 40)
        e, s1, s2 = sm.evaluate(steps, k)
        for i, step in enumerate(steps):
            assert sm.evaluate_one(float(step), k) == (e[i], s1[i], s2[i])


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    write_prepared(prepare_dataset("digits"), path)
    return path


@pytest.mark.parametrize("model", ["fcdnn", "cnn"])
def test_retrain_cell_evaluates_only_the_quantized_network(digits, tmp_path, monkeypatch, model):
    study = {} if model == "fcdnn" else {"model": {"type": "cnn", "widths": [2], "channel_multipliers": [1, 2]}}
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study(**study)}})
    width = 8 if model == "fcdnn" else 2
    float_row = train_float(float_spec(cfg, "s", width, 0), digits, tmp_path / "f")
    calls = []
    real = cells.evaluate

    def counting(model, x, y, *args, **kwargs):
        calls.append((model, x.shape[0]))
        return real(model, x, y, *args, **kwargs)

    monkeypatch.setattr(cells, "evaluate", counting)
    row = retrain(quant_spec(cfg, "s", width, 2, 0), digits, tmp_path / "f" / "model.pt", tmp_path / "q")
    # direct quantization (validation and test), then the retrained state's test
    # error unless the direct model stayed best; never the float network again
    n_val, n_test = row["n_val"], row["n_test"]
    expected = [n_val, n_test] + ([n_test] if row["best_epoch"] != 0 else [])
    assert [n for _, n in calls] == expected
    assert all(cells.quantized_layers(mod) for mod, _ in calls)  # each a quantized network
    log = pd.read_parquet(tmp_path / "q" / "metrics.parquet").iloc[0]
    assert log["test_error"] == row["test_error"]
    assert float_row["test_error"] == cells.load_checkpoint(tmp_path / "f" / "model.pt")["test_error"]


def test_metrics_split_adds_up_to_at_most_the_job(digits, tmp_path):
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study()}})
    rows = [train_float(float_spec(cfg, "s", 8, 0), digits, tmp_path / "f")]
    rows.append(retrain(quant_spec(cfg, "s", 8, 4, 0), digits, tmp_path / "f" / "model.pt", tmp_path / "q"))
    for row in rows:
        parts = [row[f"{k}_seconds"] for k in ("train", "evaluate", "load", "write")]
        assert all(p >= 0 and math.isfinite(p) for p in parts)
        assert sum(parts) <= row["job_seconds"]


@pytest.mark.parametrize("kind", ["fcdnn", "cnn"])
@pytest.mark.parametrize("learned", [False, True])
def test_frozen_weights_evaluate_bit_for_bit_and_are_dropped(kind, learned):
    """evaluate() quantizes each layer's weights once per pass (frozen_weights);
    the logits are the same as quantizing per batch, and the cache is gone after."""
    from qdesign.nn.models import build_model  # noqa: PLC0415
    from qdesign.nn.train import evaluate  # noqa: PLC0415
    from qdesign.quantize import quantized_layers, to_learned, to_quantized  # noqa: PLC0415
    from qdesign.quantize.layers import frozen_weights  # noqa: PLC0415

    torch.manual_seed(0)
    cfg = (
        {"type": "fcdnn", "depth": 2}
        if kind == "fcdnn"
        else {"type": "cnn", "channel_multipliers": [1, 2], "convs_per_block": 1, "kernel_size": 3, "pool": "max"}
    )
    qmodel = to_quantized(build_model(cfg, 8, (1, 8, 8), 10), 3)
    if learned:
        to_learned(qmodel)
        with torch.no_grad():
            for _, layer in quantized_layers(qmodel):
                layer.log_step.fill_(0.01)  # a step away from the start
    x = torch.randn(300, 1, 8, 8)
    y = torch.randint(0, 10, (300,))
    qmodel.eval()
    with torch.no_grad():
        fresh = qmodel(x)
        with frozen_weights(qmodel):
            assert all(layer._frozen_weight is not None for _, layer in quantized_layers(qmodel))
            frozen = qmodel(x)
    assert torch.equal(fresh, frozen)
    assert all(layer._frozen_weight is None for _, layer in quantized_layers(qmodel))
    wrong = int((fresh.argmax(1) != y).sum())
    assert evaluate(qmodel, x, y, batch_size=64) == wrong / 300
    assert all(layer._frozen_weight is None for _, layer in quantized_layers(qmodel))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_in_place_normalisation_is_the_out_of_place_expression(dtype):
    from qdesign.nn.data import _normalise  # noqa: PLC0415

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(50, 3, 5, 5, generator=g) * 255).to(dtype)
    before = x.clone()
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    assert torch.equal(_normalise(x, mean, std), (x.to(torch.float32) - m) / s)
    assert torch.equal(x, before)  # the payload is never modified
