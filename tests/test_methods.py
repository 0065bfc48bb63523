"""Tests of the learned step (LSQ) and of the retraining-method registry.

LSQ gradients are checked against values computed by hand from the paper's
formulas (Esser et al. 2019, eq. 3 and section 2.2); ``fixed`` and ``epoch``
against the code path that ``cells.run_quantized`` used before the registry.
"""

import math

import pytest
import torch
from torch import nn

from qdesign.nn.methods import DEFAULT_METHOD, METHODS, get_method
from qdesign.nn.train import fit
from qdesign.quantize import (
    LearnedQuantConv2d,
    LearnedQuantLinear,
    QuantLinear,
    bake,
    integer_codes,
    lsq_grad_scale,
    max_level,
    quantize,
    quantize_lsq,
    quantized_layers,
    to_learned,
    to_quantized,
    update_steps,
)

from .toys import CFG, float_model, toy_data

# ----------------------------------------------------------------- LSQ gradients


@pytest.mark.parametrize(
    "case",
    [
        # bits, weights, step, upstream gradient, expected d/dw, expected sum(grad * dq/ds) before the scale
        # b=2 (K=1): w/s = .25, -1.3, 2, -3.5, .6 -> inside, clipped, clipped, clipped, inside
        (
            2,
            [0.05, -0.26, 0.4, -0.7, 0.12],
            0.2,
            [1.0, 2.0, 3.0, 4.0, 5.0],
            [1.0, 0.0, 0.0, 0.0, 5.0],
            1 * (0 - 0.25) + 2 * (-1) + 3 * 1 + 4 * (-1) + 5 * (1 - 0.6),
        ),
        # b=3 (K=3): w/s = 2.5 (rounds to 2, half to even), -4.5 (clipped to -3), 0.1
        (3, [0.5, -0.9, 0.02], 0.2, [2.0, -1.0, 0.5], [2.0, 0.0, 0.5], 2 * (2 - 2.5) + (-1) * (-3) + 0.5 * (0 - 0.1)),
    ],
)
def test_lsq_gradients_match_hand_computed_values(case):
    bits, w, step, up, want_w, want_s = case
    w = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(step, dtype=torch.float64, requires_grad=True)
    q = quantize_lsq(w, bits, s)
    assert torch.equal(q.detach(), quantize(w.detach(), bits, step))
    q.backward(torch.tensor(up, dtype=torch.float64))
    assert torch.allclose(w.grad, torch.tensor(want_w, dtype=torch.float64))
    g = 1.0 / math.sqrt(w.numel() * max_level(bits))
    assert lsq_grad_scale(w.numel(), bits) == pytest.approx(g)
    assert float(s.grad) == pytest.approx(g * want_s, rel=1e-12)


def lsq_reference(w, s, bits, g):
    """The paper's own pseudo-code (Esser et al. 2019, appendix): gradscale, clamp, roundpass."""
    k = max_level(bits)
    s = (s - s * g).detach() + s * g
    v = torch.clamp(w / s, -k, k)
    return ((v.round() - v).detach() + v) * s


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_lsq_gradients_match_the_papers_pseudo_code(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(40, 7, dtype=torch.float64, generator=g)
    up = torch.randn(40, 7, dtype=torch.float64, generator=g)
    grads = []
    for fn in (
        lambda w, s: quantize_lsq(w, bits, s),
        lambda w, s: lsq_reference(w, s, bits, lsq_grad_scale(280, bits)),
    ):
        wl = w.clone().requires_grad_(True)
        s = torch.tensor(1.5 / max_level(bits), dtype=torch.float64, requires_grad=True)  # clip at |w| > 1.5
        (fn(wl, s) * up).sum().backward()
        grads.append((wl.grad, s.grad))
    assert (grads[0][0] == 0).any() and (grads[0][0] != 0).any()  # some weights clipped, some not
    assert torch.equal(grads[0][0] == 0, grads[1][0] == 0)
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-14, atol=0)
    assert float(grads[0][1]) == pytest.approx(float(grads[1][1]), rel=1e-10)


def test_lsq_identity_ste_variant_keeps_the_step_gradient_and_passes_the_weight_gradient():
    """clip_grad=False: d/dw is the upstream gradient everywhere (clipped weights included);
    the step's gradient is LSQ's, as with the clip mask."""
    bits, w, step, up = 2, [0.05, -0.26, 0.4, -0.7, 0.12], 0.2, [1.0, 2.0, 3.0, 4.0, 5.0]
    want_s = 1 * (0 - 0.25) + 2 * (-1) + 3 * 1 + 4 * (-1) + 5 * (1 - 0.6)  # as in the hand-computed case
    grads = []
    for clip in (True, False):
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        s = torch.tensor(step, dtype=torch.float64, requires_grad=True)
        quantize_lsq(wt, bits, s, clip_grad=clip).backward(torch.tensor(up, dtype=torch.float64))
        grads.append((wt.grad, float(s.grad)))
    assert torch.equal(grads[1][0], torch.tensor(up, dtype=torch.float64))
    assert grads[0][1] == grads[1][1] == pytest.approx(lsq_grad_scale(5, bits) * want_s, rel=1e-12)
    layer = to_learned(to_quantized(nn.Sequential(nn.Linear(8, 4)), 2), clip_grad=False)[0]
    assert not layer.clip_grad and "identity STE" in repr(layer)
    x = torch.randn(16, 8)
    layer(x).sum().backward()
    with torch.no_grad():
        assert torch.equal(layer.weight.grad, torch.ones(4, 16) @ x)


# ----------------------------------------------------------------- learned layers


def test_to_learned_starts_at_the_l2_optimal_steps_and_keeps_the_forward_pass():
    data = toy_data()
    q = to_quantized(float_model(), 2)
    steps = [float(layer.step) for _, layer in quantized_layers(q)]
    out = q(data.x_val)
    to_learned(q)
    layers = quantized_layers(q)
    assert all(isinstance(layer, LearnedQuantLinear) for _, layer in layers)
    assert [float(layer.step.detach()) for _, layer in layers] == steps
    assert torch.equal(q(data.x_val), out)


def test_learned_step_gets_a_gradient_and_changes_in_training():
    data = toy_data()
    q = to_learned(to_quantized(float_model(), 2))
    q(data.x_train).logsumexp(dim=1).sum().backward()
    assert all(layer.log_step.grad is not None and float(layer.log_step.grad) != 0 for _, layer in quantized_layers(q))
    before = [float(layer.step.detach()) for _, layer in quantized_layers(q)]
    res = fit(q, data, CFG, seed=0, log=lambda _m: None)
    q.load_state_dict(res.best_state)  # fit keeps a snapshot; this must round-trip the learned steps
    after = [float(layer.step.detach()) for _, layer in quantized_layers(q)]
    assert all(a != b for a, b in zip(after, before))
    assert all(a > 0 for a in after)


def test_learned_step_stays_positive_under_a_loss_that_drives_it_to_zero():
    layer = to_learned(to_quantized(nn.Sequential(nn.Linear(8, 4)), 2))[0]
    opt = torch.optim.SGD(layer.parameters(), lr=1e3)
    x = torch.randn(16, 8)
    for _ in range(20):
        opt.zero_grad()
        (layer(x) ** 2).sum().backward()  # smaller step -> smaller output
        opt.step()
        assert float(layer.step.detach()) > 0 and math.isfinite(float(layer.step.detach()))
    assert float(layer.step.detach()) < float(layer.step0)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_learned_layers_export_exactly(bits):
    """integer_codes and bake of a trained learned model reproduce its forward pass bit for bit."""
    data = toy_data()
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    q = to_learned(to_quantized(cnn, bits))
    assert isinstance(q[0], LearnedQuantConv2d)
    fit(q, data, {**CFG, "epochs": 1}, seed=0, log=lambda _m: None)
    with torch.no_grad():
        assert torch.equal(bake(q)(data.x_val), q(data.x_val))
        k = max_level(bits)
        for name, qt in integer_codes(q).items():
            layer = q.get_submodule(name)
            assert int(qt.codes.abs().max()) <= k and torch.unique(qt.codes).numel() <= 2**bits - 1
            assert qt.step == float(layer.step)
            assert torch.equal(qt.dequantize(), layer.quantized_weight())


def test_update_steps_restarts_a_learned_step_at_the_l2_optimum():
    q = to_learned(to_quantized(float_model(), 2))
    with torch.no_grad():
        for _, layer in quantized_layers(q):
            layer.log_step.fill_(0.05)
            layer.weight.mul_(1.5)
    steps = update_steps(q)
    for name, layer in quantized_layers(q):
        assert float(layer.log_step.detach()) == 0.0
        assert float(layer.step.detach()) == pytest.approx(steps[name], rel=1e-6)


# ----------------------------------------------------------------- registry


def test_registry_names_and_unknown_method():
    assert {"fixed", "epoch", "learned"} <= set(METHODS) and DEFAULT_METHOD == "fixed"
    assert get_method("learned") is METHODS["learned"]
    with pytest.raises(ValueError, match="unknown retraining method 'nope'"):
        get_method("nope")


def _retrain(q, data, hook):
    torch.manual_seed(0)
    return fit(q, data, CFG, seed=0, log=lambda _m: None, epoch_start=hook, keep_start=True)


def test_fixed_is_todays_retraining_bit_for_bit():
    data = toy_data()
    ref = to_quantized(float_model(), 2)
    ref_res = _retrain(ref, data, None)
    m = METHODS["fixed"]
    q = m.prepare(to_quantized(float_model(), 2))
    assert all(type(layer) is QuantLinear for _, layer in quantized_layers(q))
    res = _retrain(q, data, m.hook(q))
    assert m.hook(q) is None
    assert [h["val_error"] for h in res.history] == [h["val_error"] for h in ref_res.history]
    for k, v in ref_res.best_state.items():
        assert torch.equal(res.best_state[k], v), k


def test_epoch_is_todays_per_epoch_update_bit_for_bit():
    data = toy_data()
    ref = to_quantized(float_model(), 2)
    calls = []

    def old_hook(epoch):  # the closure cells.run_quantized used for step_update: epoch
        calls.append(epoch)
        if epoch > 1:
            update_steps(ref)

    ref_res = _retrain(ref, data, old_hook)
    m = METHODS["epoch"]
    q = m.prepare(to_quantized(float_model(), 2))
    res = _retrain(q, data, m.hook(q))
    assert calls == [1, 2]
    for k, v in ref_res.best_state.items():
        assert torch.equal(res.best_state[k], v), k


def test_registry_names_match_the_implementations():
    from qdesign.core import registry  # noqa: PLC0415

    assert tuple(METHODS) == registry.METHODS
