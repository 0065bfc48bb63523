"""The evaluation forward pass (qdesign.nn.inference) gives the model's own
numbers bit for bit: every recorded error is computed through it."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from qdesign.nn.data import Splits
from qdesign.nn.inference import forward, max_pool_2x2
from qdesign.nn.models import build_model
from qdesign.nn.train import evaluate, evaluation_layout, use_channels_last
from qdesign.quantize import to_quantized

CNN_CPU = {
    "type": "cnn",
    "channel_multipliers": [1, 2],
    "convs_per_block": 1,
    "kernel_size": 3,
    "pool": "max",
    "fc_units": 0,
    "dropout": 0.0,
}
CNN_PAPER = {**CNN_CPU, "channel_multipliers": [1, 2, 4], "convs_per_block": 2, "fc_units": 16, "dropout": 0.5}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


@pytest.mark.parametrize("shape", [(3, 5, 28, 28), (2, 4, 7, 7), (2, 3, 6, 9), (1, 1, 2, 2), (2, 2, 3, 2)])
def test_max_pool_2x2_equals_max_pool2d(shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    x[0, 0, 0, 0] = float("nan")
    x.view(-1)[1::7] = 0.5  # ties
    for xi in (x, x.contiguous(memory_format=torch.channels_last)):
        ref, got = F.max_pool2d(xi, 2), max_pool_2x2(xi)
        assert _same(got, ref)
        # handed on in pooling's layout, so that the next convolution runs the same kernel
        for fmt in (torch.contiguous_format, torch.channels_last):
            assert got.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt)


def test_max_pool_2x2_refuses_what_max_pool2d_refuses():
    with pytest.raises(RuntimeError, match="too small"):
        max_pool_2x2(torch.ones(2, 2, 1, 5))


@pytest.mark.parametrize("model_cfg,width,quantized", [(CNN_CPU, 32, True), (CNN_CPU, 8, False), (CNN_PAPER, 4, True)])
def test_forward_equals_the_model_bit_for_bit(model_cfg, width, quantized):
    """Width 32 of the CPU profile's CNN: its 32->64 convolution rounds
    differently in channels-last, so a pass that changed a layout would show."""
    torch.manual_seed(1)
    model = build_model(model_cfg, width, (1, 28, 28), 10)
    x = torch.randn(64, 1, 28, 28)
    data = use_channels_last(model, Splits(x, x[:, 0, 0, 0].long(), x, x, x, x, 10))  # as the cells run it
    if quantized:
        model = to_quantized(model, 3)
    model.eval()
    before = data.x_train.clone()
    with torch.inference_mode():
        assert _same(forward(model, data.x_train), model(data.x_train))
    assert torch.equal(data.x_train, before)  # the caller's input is never written to


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_relu_runs_after_the_pooling_it_precedes_with_the_same_numbers(layout):
    """ReLU then 2x2 max pooling is computed as pooling then ReLU (a quarter of
    the values): NaN, ties, negative windows and signed zeros give the model's
    values (==, which treats -0.0 and 0.0 alike, as every later layer does),
    the layout the next convolution expects, and a hooked ReLU is still called."""
    torch.manual_seed(4)
    x = torch.randn(4, 6, 8, 10)
    x[0, 0, :2, :2] = float("nan")
    x[0, 1, :2, :2] = -1.0  # an all-negative window
    x[1, 0, :2, :2] = torch.tensor([[-0.0, 0.0], [-2.0, 0.0]])
    x.view(-1)[3::11] = 0.25  # ties
    x = x.contiguous(memory_format=layout)
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model.to(memory_format=layout).eval()
    before = x.clone()
    with torch.inference_mode():
        want, got = model(x), forward(model, x)
        assert _same(got, want) and got.stride() == want.stride()
        assert _same(forward(model[:2], x), model[:2](x))
    assert _same(x, before)  # the ReLU ran on the pooled copy, not on the input
    seen = []
    model[0].register_forward_hook(lambda _m, _a, out: seen.append(out.shape))
    with torch.inference_mode():
        assert _same(forward(model, x), want)
    assert seen == [x.shape]


def test_forward_never_writes_its_input():
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.ReLU(), nn.Linear(4, 2), nn.ReLU())
    x = torch.randn(3, 1, 2, 2)
    before = x.clone()
    with torch.no_grad():
        out = forward(model, x)
        assert _same(out, model(x))
    assert torch.equal(x, before)


def test_forward_honours_hooks_on_the_model():
    model = nn.Sequential(nn.Linear(3, 2))
    seen = []
    model.register_forward_hook(lambda _m, _a, out: seen.append(out.shape))
    with torch.no_grad():
        forward(model, torch.ones(4, 3))
    assert seen == [(4, 2)]


def test_forward_refuses_gradients():
    with pytest.raises(RuntimeError, match="inference"):
        forward(nn.Sequential(nn.ReLU()), torch.ones(1, requires_grad=True))


def test_evaluate_counts_what_the_model_predicts():
    """An independent count with the model's own forward pass."""
    torch.manual_seed(2)
    model = to_quantized(build_model(CNN_CPU, 4, (1, 28, 28), 10), 2).eval()
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    with torch.no_grad():
        want = float((model(x).argmax(1) != y).sum()) / 300
    assert evaluate(model, x, y, batch_size=256) == want


@pytest.mark.parametrize("width", [2, 4, 8, 16, 32])
def test_cnn_logits_do_not_depend_on_the_evaluation_batch(width):
    """What lets EVAL_BATCH["conv"] change without changing a recorded error:
    batches of 64 or more give bit-identical logits (the CPU profile's CNN,
    quantized and float), and 6,000 or 10,000 images leave the same last
    partial batch at 128 as at 256."""
    torch.manual_seed(width)
    model = build_model(CNN_CPU, width, (1, 28, 28), 10)
    x = torch.randn(600, 1, 28, 28)
    data = use_channels_last(model, Splits(x, x, x, x, x, x, 10))
    for m in (model, to_quantized(model, 4)):
        m.eval()
        with torch.inference_mode():
            ref = torch.cat([forward(m, data.x_val[i : i + 256]) for i in range(0, 512, 256)])
            for bs in (64, 128):
                assert torch.equal(ref, torch.cat([forward(m, data.x_val[i : i + bs]) for i in range(0, 512, bs)]))
    for n in (6000, 10000):
        assert n % 128 == n % 256


# ------------------------------------------------- convolutions on blocked tensors


def _cell_model(cfg, width, bits, shape=(1, 28, 28), n=300, nchw_quantized=False):
    """A model and input laid out as a cell runs them (channels-last, the
    quantized copy too), in eval mode. ``nchw_quantized``: the quantized
    convolutions in NCHW instead, as cells retrained before quantized CNNs went
    channels-last ran them and as export verification rebuilds those
    (:func:`evaluation_layout`): the blocked path's candidates."""
    torch.manual_seed(width)
    model = build_model(cfg, width, shape, 10)
    x = torch.randn(n, *shape)
    data = use_channels_last(model, Splits(x, x, x, x, x, x, 10))
    if bits is not None:
        model = to_quantized(model, bits)
        if nchw_quantized:
            evaluation_layout(model, [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)])
    return model.eval(), data.x_train


@pytest.mark.parametrize("nchw_quantized", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "cfg,shape,widths",
    [(CNN_CPU, (1, 28, 28), [2, 8, 32]), (CNN_PAPER, (1, 28, 28), [4, 16]), (CNN_PAPER, (3, 32, 32), [16])],
)
def test_forward_is_exact_whichever_path_it_takes(cfg, shape, widths, threads, nchw_quantized, monkeypatch):
    """Each case is checked once and then runs the path its check chose: the
    second pass of every batch size (the last partial batches of the splits,
    and a single image, which oneDNN computes with another kernel) must equal
    the model's own forward pass bit for bit, on whichever path it took."""
    from qdesign.nn import inference
    from qdesign.quantize.layers import frozen_weights

    monkeypatch.setattr(inference, "_VERDICTS", {})
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for width in widths:
            for bits in (None, 2, 8):
                model, x = _cell_model(cfg, width, bits, shape, nchw_quantized=nchw_quantized)
                with torch.inference_mode(), frozen_weights(model):
                    for bs in (128, 112, 16, 1):
                        want = model(x[:bs])
                        for _ in range(2):  # checked, then decided
                            assert _same(forward(model, x[:bs]), want), (width, bits, bs)
    finally:
        torch.set_num_threads(before)
    # NCHW quantized convolutions of one input channel: candidates; three: their
    # channels-last input keeps them in channels-last; a cell's channels-last
    # CNN: nothing to block
    assert bool(inference.blocked_path_verdicts()) == (shape[0] == 1 and nchw_quantized)


def test_the_blocked_path_is_used_only_where_it_was_exact(monkeypatch):
    """A blocked path that rounds differently (simulated: one logit nudged)
    is refused on its first check and never used; the numbers stay the dense
    path's."""
    from qdesign.nn import inference

    monkeypatch.setattr(inference, "_VERDICTS", {})
    real = inference._blocked
    calls = []

    def off_by_one_ulp(modules, x):
        calls.append(x.shape[0])
        out = real(modules, x)
        return torch.nextafter(out, torch.full_like(out, float("inf")))

    monkeypatch.setattr(inference, "_blocked", off_by_one_ulp)
    model, x = _cell_model(CNN_CPU, 8, 4, nchw_quantized=True)
    with torch.inference_mode():
        want = model(x[:128])
        for _ in range(3):
            assert _same(forward(model, x[:128]), want)
    assert calls == [128]  # the check only
    assert list(inference.blocked_path_verdicts().values()) == [False]


def test_blocked_path_skips_what_it_cannot_reproduce(monkeypatch):
    """Channels-last convolutions (the float CNN), hooked layers and
    convolutions that are not plain never run on blocked tensors."""
    from qdesign.nn import inference

    monkeypatch.setattr(inference, "_VERDICTS", {})
    model, x = _cell_model(CNN_CPU, 8, None)  # float: channels-last weights
    with torch.inference_mode():
        assert _same(forward(model, x[:64]), model(x[:64]))
    assert inference.blocked_path_verdicts() == {}

    qmodel, x = _cell_model(CNN_CPU, 8, 4, nchw_quantized=True)
    seen = []
    qmodel[0].register_forward_hook(lambda _m, _a, out: seen.append(out.shape))
    with torch.inference_mode():
        out = forward(qmodel, x[:64])
    assert seen == [(64, 8, 28, 28)]  # the hook ran: that layer took the plain path
    with torch.inference_mode():
        assert _same(out, qmodel(x[:64]))

    reflect = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU()).eval()
    monkeypatch.setattr(inference, "_VERDICTS", {})
    with torch.inference_mode():
        assert _same(forward(reflect, x[:8]), reflect(x[:8]))
    assert inference.blocked_path_verdicts() == {}  # a reflect-padded convolution: never blocked


def test_blocked_path_leaves_the_input_alone():
    model, x = _cell_model(CNN_PAPER, 4, 3, n=32, nchw_quantized=True)
    x = x.contiguous()  # NCHW: the first convolution is a candidate too
    before = x.clone()
    with torch.inference_mode():
        for _ in range(2):
            forward(model, x)
    assert torch.equal(x, before)


def test_a_network_with_nan_takes_the_dense_path(monkeypatch):
    """NaN logits never compare equal: the check refuses the blocked path and
    the NaN of the dense path comes out (a diverged network is reported, not hidden)."""
    from qdesign.nn import inference

    monkeypatch.setattr(inference, "_VERDICTS", {})
    model, x = _cell_model(CNN_CPU, 8, 4, nchw_quantized=True)
    with torch.no_grad():
        model[3].weight[0, 0, 0, 0] = float("nan")
    with torch.inference_mode():
        want = model(x[:128])
        got = forward(model, x[:128])
    assert torch.isnan(got).any() and _same(got, want)
    assert list(inference.blocked_path_verdicts().values()) == [False]


def test_a_platform_without_blocked_ops_takes_the_dense_path(monkeypatch):
    """Where oneDNN's blocked operations are missing (another CPU, another
    build), evaluation goes on densely instead of failing."""
    from qdesign.nn import inference

    monkeypatch.setattr(inference, "_VERDICTS", {})

    def unsupported(modules, x):
        raise RuntimeError("mkldnn_convolution: unsupported on this platform")

    monkeypatch.setattr(inference, "_blocked", unsupported)
    model, x = _cell_model(CNN_CPU, 8, 4, nchw_quantized=True)
    with torch.inference_mode():
        for _ in range(2):
            assert _same(forward(model, x[:128]), model(x[:128]))
    assert list(inference.blocked_path_verdicts().values()) == [False]
