"""The learned steps' own optimizer settings (parameter groups in ``fit``),
the distillation loss and the ``distill`` / ``distill-fixed`` methods, and the
rule that a cell's spec carries only its own method's retraining keys."""

import math

import pytest
import torch
from torch.nn import functional as F

import qdesign.nn.train as qtrain
from qdesign.core.config import retraining_defaults, validate_config
from qdesign.core.errors import ConfigError
from qdesign.core.registry import DISTILL_KEYS, METHOD_KEYS, METHODS, STEP_KEYS
from qdesign.core.specs import quant_spec
from qdesign.nn.methods import distill_loss, get_method
from qdesign.nn.train import fit, param_groups
from qdesign.quantize import learned_step_parameters, quantized_layers, to_learned, to_quantized

from .conftest import tiny_study
from .toys import CFG, float_model, toy_data

NEUTRAL = {"step_lr_factor": 1.0, "step_weight_decay": 0.0, "step_warmup_epochs": 0.0}


def _fit(q, data, cfg, **kw):
    torch.manual_seed(0)
    return fit(q, data, cfg, seed=0, log=lambda _m: None, keep_start=True, **kw)


def _steps(q):
    return [float(layer.step.detach()) for _, layer in quantized_layers(q)]


# ----------------------------------------------------------------- parameter groups


def test_param_groups_split_the_learned_steps_only_when_asked():
    fixed = to_quantized(float_model(), 2)
    learned = to_learned(to_quantized(float_model(), 2))
    assert param_groups(fixed, {**CFG, **NEUTRAL}) == list(fixed.parameters())  # no steps to split
    assert param_groups(learned, CFG) == list(learned.parameters())  # no step keys: one group, as before
    groups = param_groups(learned, {**CFG, "step_lr_factor": 0.25, "step_weight_decay": 0.5})
    steps = learned_step_parameters(learned)
    assert len(steps) == len(quantized_layers(learned)) and groups[1]["params"] == steps
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in learned.parameters()} - {id(p) for p in steps}
    assert groups[1]["lr"] == pytest.approx(CFG["lr"] * 0.25) and groups[1]["weight_decay"] == 0.5
    # a missing key means the weights' setting
    only_lr = param_groups(learned, {**CFG, "weight_decay": 0.1, "step_lr_factor": 2.0})
    assert only_lr[1]["weight_decay"] == 0.1


def test_neutral_step_settings_are_todays_learned_bit_for_bit():
    """Two parameter groups with the weights' settings train exactly as one group."""
    data = toy_data()
    a = to_learned(to_quantized(float_model(), 2))
    b = to_learned(to_quantized(float_model(), 2))
    ra, rb = _fit(a, data, CFG), _fit(b, data, {**CFG, **NEUTRAL})
    assert [h["val_error"] for h in ra.history] == [h["val_error"] for h in rb.history]
    for k, v in ra.best_state.items():
        assert torch.equal(rb.best_state[k], v), k


def test_step_lr_factor_moves_only_the_steps_differently():
    data = toy_data()
    runs = {}
    for factor in (1.0, 0.1):
        q = to_learned(to_quantized(float_model(), 2))
        start = _steps(q)
        res = _fit(q, data, {**CFG, **NEUTRAL, "step_lr_factor": factor, "epochs": 1})
        q.load_state_dict(res.best_state)
        runs[factor] = [abs(math.log(s / s0)) for s, s0 in zip(_steps(q), start)]
    # under Adam a step's move scales with its learning rate: a tenth of it moves far less
    assert all(small < big for small, big in zip(runs[0.1], runs[1.0]))


def test_warm_up_ramps_the_steps_learning_rate_per_update(monkeypatch):
    """The step group's lr during warm-up is base x schedule x min(1, update / warm-up updates);
    the weights' lr follows the schedule alone, and the hook stops once warm-up is over."""
    data = toy_data()  # 128 training examples, batch 32: 4 updates per epoch
    seen = []
    original = qtrain.train_epoch

    def spy(model, opt, x, y, bs, gen, **kw):
        hook = kw.get("before_update")
        if hook is not None:

            def recording():
                hook()
                seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))

            kw["before_update"] = recording
        return original(model, opt, x, y, bs, gen, **kw)

    monkeypatch.setattr(qtrain, "train_epoch", spy)
    q = to_learned(to_quantized(float_model(), 2))
    cfg = {**CFG, **NEUTRAL, "step_lr_factor": 2.0, "step_warmup_epochs": 1.5, "epochs": 3, "schedule": "constant"}
    _fit(q, data, cfg)
    lr = CFG["lr"]
    # 1.5 epochs = 6 updates; the hook runs until the 6th (epochs 1 and 2), not in epoch 3
    assert [w for w, _ in seen] == [lr] * 8
    assert [s for _, s in seen] == pytest.approx([2 * lr * min(1.0, u / 6) for u in range(1, 9)])


def test_a_long_warm_up_keeps_the_steps_near_their_start():
    data = toy_data()
    q = to_learned(to_quantized(float_model(), 2))
    start = _steps(q)
    res = _fit(q, data, {**CFG, **NEUTRAL, "step_warmup_epochs": 1e4})
    q.load_state_dict(res.best_state)
    assert _steps(q) != start  # the step still learns, slowly
    assert all(abs(s / s0 - 1) < 1e-3 for s, s0 in zip(_steps(q), start))


# ----------------------------------------------------------------- the distillation loss


@pytest.mark.parametrize(("t", "a"), [(3.0, 0.7), (1.0, 0.5), (0.5, 0.2), (2.0, 1.0)])
def test_distill_loss_matches_its_formula(t, a):
    """Value and gradient of the one-node loss equal autograd's through the textbook formula."""
    g = torch.Generator().manual_seed(0)
    teacher, out = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g, requires_grad=True)
    labels, idx = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([5, 3, 1, 0, 2, 4])
    got = distill_loss(teacher, t, a)(out, labels, idx)
    kl = F.kl_div(
        F.log_softmax(out / t, dim=1), F.log_softmax(teacher[idx] / t, dim=1), reduction="sum", log_target=True
    )
    want = (1 - a) * F.cross_entropy(out, labels) + a * t * t * kl / out.shape[0]
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    (g1,) = torch.autograd.grad(got, out)
    (g2,) = torch.autograd.grad(want, out)
    assert torch.allclose(g1, g2, atol=1e-6)
    assert torch.autograd.gradcheck(
        lambda z: distill_loss(teacher.double(), t, a)(z, labels, idx), out.detach().double().requires_grad_()
    )


def test_distill_loss_limits():
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(4, 3, generator=g)
    labels, idx = torch.tensor([0, 1, 2, 0]), torch.arange(4)
    # a student equal to its teacher has no distillation loss, only (1 - a) x CE
    assert float(distill_loss(teacher, 2.0, 0.4)(teacher, labels, idx)) == pytest.approx(
        0.6 * float(F.cross_entropy(teacher, labels)), rel=1e-5
    )
    assert float(distill_loss(teacher, 2.0, 1.0)(teacher, labels, idx)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(teacher, 5.0, 0.0)(teacher * 3, labels, idx)) == float(
        F.cross_entropy(teacher * 3, labels)
    )
    for t, a in ((0.0, 0.5), (2.0, 1.5), (2.0, -0.1), (float("nan"), 0.5)):
        with pytest.raises(ValueError, match="temperature > 0 and 0 <= weight <= 1"):
            distill_loss(teacher, t, a)


# ----------------------------------------------------------------- the methods


def test_distill_with_weight_zero_is_its_base_method_bit_for_bit():
    """The distillation term switched off: distill trains exactly as learned, distill-fixed as fixed."""
    data = toy_data()
    fmodel = float_model()
    for name, base in (("distill", "learned"), ("distill-fixed", "fixed")):
        cfg = {**CFG, **NEUTRAL, "distill_temperature": 2.0, "distill_weight": 0.0}
        m, b = get_method(name), get_method(base)
        qa, qb = m.prepare(to_quantized(fmodel, 2)), b.prepare(to_quantized(fmodel, 2))
        ra = _fit(qa, data, cfg, loss=m.loss(fmodel, data, cfg))
        rb = _fit(qb, data, cfg if base == "learned" else CFG, loss=b.loss(fmodel, data, cfg))
        assert b.loss(fmodel, data, cfg) is None
        for k, v in rb.best_state.items():
            assert torch.equal(ra.best_state[k], v), (name, k)


def test_distill_learns_from_the_float_network():
    """With the labels' weight at 0 the quantized network learns only from its
    teacher: trained on random labels it still follows the float network's
    predictions after the last epoch, and the same training without the teacher does not."""
    data = toy_data(n=512)
    fmodel = float_model(width=32)
    fmodel.load_state_dict(fit(fmodel, data, {**CFG, "epochs": 20}, seed=0, log=lambda _m: None).best_state)
    noise = torch.randint(0, 3, data.y_train.shape, generator=torch.Generator().manual_seed(9))
    shuffled = type(data)(data.x_train, noise, data.x_val, data.y_val, data.x_test, data.y_test, 3)
    cfg = {**CFG, **NEUTRAL, "epochs": 10, "distill_temperature": 1.0, "distill_weight": 1.0}
    agree = {}
    for name in ("distill-fixed", "fixed"):
        m = get_method(name)
        q = m.prepare(to_quantized(fmodel, 4))
        _fit(q, shuffled, cfg, loss=m.loss(fmodel, shuffled, cfg))  # q: the last epoch's state
        with torch.no_grad():
            agree[name] = float((q(data.x_val).argmax(1) == fmodel(data.x_val).argmax(1)).float().mean())
    assert agree["distill-fixed"] > 0.9 and agree["fixed"] < agree["distill-fixed"] - 0.1


def test_method_keys_cover_the_methods_and_the_schema():
    defaults = retraining_defaults()
    assert set(METHOD_KEYS) == set(METHODS)
    assert set(STEP_KEYS + DISTILL_KEYS) <= set(defaults)
    assert METHOD_KEYS["fixed"] == METHOD_KEYS["epoch"] == ()


def test_a_cells_spec_holds_only_its_methods_keys():
    """Editing a method's own key reruns that method's cells and no other: a
    fixed cell's spec (and hash) does not see the learned steps' settings."""
    base = tiny_study(retraining={"methods": list(METHODS)})
    edited = tiny_study(retraining={"methods": list(METHODS), "step_lr_factor": 0.3, "distill_weight": 0.9})
    a = validate_config({"device": "cpu", "studies": {"s": base}})
    b = validate_config({"device": "cpu", "studies": {"s": edited}})
    for method in METHODS:
        sa, sb = quant_spec(a, "s", 8, 2, 0, method), quant_spec(b, "s", 8, 2, 0, method)
        assert set(sa.retraining) - {"float_first", "float_last"} >= set(METHOD_KEYS[method])
        assert not (set(sa.retraining) & (set(STEP_KEYS + DISTILL_KEYS) - set(METHOD_KEYS[method])))
        assert "methods" not in sa.retraining
        assert (sa.key == sb.key) == (method in ("fixed", "epoch"))


def test_fixed_cells_keep_their_spec_hash():
    """The spec of a fixed cell is what it was before the step and distillation keys existed."""
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study()}})
    spec = quant_spec(cfg, "s", 8, 2, 0, "fixed")
    assert set(spec.retraining) == {
        "optimizer",
        "lr",
        "momentum",
        "schedule",
        "epochs",
        "batch_size",
        "weight_decay",
        "float_first",
        "float_last",
    }


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("distill_weight", 1.5, "distill_weight: 1.5 is greater than the maximum of 1"),
        ("distill_temperature", 0, "distill_temperature: 0 is less than or equal to the minimum of 0"),
        ("step_lr_factor", 0.0, "step_lr_factor: 0.0 is less than or equal to the minimum of 0"),
        ("step_warmup_epochs", -1, "step_warmup_epochs: -1 is less than the minimum of 0"),
        ("step_weight_decay", "x", "step_weight_decay: 'x' is not of type"),
        ("distill_temprature", 2, "did you mean 'distill_temperature'"),
    ],
)
def test_bad_method_settings_are_refused_in_one_line(key, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate_config({"device": "cpu", "studies": {"s": tiny_study(retraining={key: value})}})
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------- cells


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from qdesign.nn.data import prepare_dataset, write_prepared  # noqa: PLC0415

    path = tmp_path_factory.mktemp("data") / "digits.pt"
    write_prepared(prepare_dataset("digits"), path)
    return path


def test_distill_cells_run_end_to_end_and_export_exactly(digits, tmp_path):
    """A distill cell takes its teacher from the float checkpoint it is given
    (no other job), records its method, and exports exactly; with the
    distillation weight at 0 a distill-fixed cell is the fixed cell."""
    from qdesign.core.specs import float_spec  # noqa: PLC0415
    from qdesign.export import export_cell  # noqa: PLC0415
    from qdesign.export.verify import check_export  # noqa: PLC0415
    from qdesign.nn.cells import load_checkpoint, retrain, train_float  # noqa: PLC0415

    methods = ["fixed", "distill", "distill-fixed"]
    retraining = {"epochs": 2, "lr": 0.01, "batch_size": 64, "methods": methods}
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study(retraining=retraining)}})
    off = validate_config(
        {"device": "cpu", "studies": {"s": tiny_study(retraining={**retraining, "distill_weight": 0.0})}}
    )
    train_float(float_spec(cfg, "s", 16, 0), digits, tmp_path / "f")
    ckpt = tmp_path / "f" / "model.pt"
    rows = {m: retrain(quant_spec(cfg, "s", 16, 2, 0, m), digits, ckpt, tmp_path / m) for m in methods}
    plain = retrain(quant_spec(off, "s", 16, 2, 0, "distill-fixed"), digits, ckpt, tmp_path / "off")
    assert rows["distill"]["method"] == "distill"
    assert len({r["direct_test_error"] for r in rows.values()}) == 1  # the same start for every method
    spec = load_checkpoint(tmp_path / "distill" / "model.pt")["spec"]
    assert spec["retraining"]["distill_weight"] == retraining_defaults()["distill_weight"]
    assert "step_lr_factor" in spec["retraining"]
    assert "step_lr_factor" not in load_checkpoint(tmp_path / "distill-fixed" / "model.pt")["spec"]["retraining"]
    assert plain["steps"] == rows["fixed"]["steps"]
    assert (plain["test_error"], plain["val_error"]) == (rows["fixed"]["test_error"], rows["fixed"]["val_error"])
    a = load_checkpoint(tmp_path / "off" / "model.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "fixed" / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    out = export_cell(tmp_path / "distill", "packed", tmp_path / "d.qdpk", digits)
    check = check_export(tmp_path / "distill", out, digits, "packed")
    assert check.n_differ == 0 and check.export_error == rows["distill"]["test_error"]


def test_only_models_with_learned_steps_train_with_the_fused_adam(monkeypatch):
    """fixed and epoch keep the foreach kernels the golden study pins; learned steps
    (exact-zero gradients of clipped weights) get the fused kernel."""
    seen = []
    original = qtrain.make_optimizer

    def spy(params, cfg, fused=False):
        opt = original(params, cfg, fused=fused)
        seen.append((fused, opt.defaults.get("fused"), opt.defaults.get("foreach")))
        return opt

    monkeypatch.setattr(qtrain, "make_optimizer", spy)
    data = toy_data()
    _fit(to_quantized(float_model(), 2), data, {**CFG, "epochs": 1})
    _fit(to_learned(to_quantized(float_model(), 2)), data, {**CFG, **NEUTRAL, "epochs": 1})
    assert [s[0] for s in seen] == [False, True]
    assert seen[0][1] in (None, False) and seen[0][2] is True and seen[1][1] is True


def test_a_float_network_with_non_finite_outputs_is_refused_as_a_teacher():
    from qdesign.core.errors import DivergedError  # noqa: PLC0415

    data = toy_data()
    fmodel = float_model()
    with torch.no_grad():
        next(fmodel.parameters())[0, 0] = float("nan")
    cfg = {**CFG, "distill_temperature": 2.0, "distill_weight": 0.1}
    with pytest.raises(DivergedError, match="not finite: no teacher"):
        get_method("distill").loss(fmodel, data, cfg)
