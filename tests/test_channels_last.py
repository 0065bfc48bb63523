"""Quantized CNNs in channels-last (issue 28): a quantized or learned-step
convolution keeps its float layer's memory layout, so retraining and
evaluation run the float network's kernels; the learned step's gradient is
computed in that layout; checkpoints and export verification know which
layout a cell evaluated in."""

import pytest
import torch
from torch import nn

from qdesign.nn.data import Splits
from qdesign.nn.models import build_model
from qdesign.nn.train import evaluation_layout, nchw_layers, use_channels_last
from qdesign.quantize import bake, integer_codes, l2_optimal_step, quantize_lsq, to_learned, to_quantized
from qdesign.quantize.lsq import _QuantizeLSQ

CNN = {"type": "cnn", "channel_multipliers": [1, 2], "convs_per_block": 1, "kernel_size": 3, "pool": "max"}


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _cell_cnn(width=8, shape=(1, 28, 28)):
    torch.manual_seed(0)
    model = build_model(CNN, width, shape, 10)
    x = torch.randn(16, *shape)
    y = torch.randint(0, 10, (16,))
    data = use_channels_last(model, Splits(x, y, x, y, x, y, 10))
    return model, data


@pytest.mark.parametrize("bits", [1, 2, 8])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 12, 12)])
def test_quantized_and_learned_convolutions_keep_the_float_layout(bits, shape):
    model, _ = _cell_cnn(shape=shape)
    qmodel = to_quantized(model, bits)
    for model_ in (qmodel, to_learned(to_quantized(model, bits))):
        for f, q in zip(_convs(model), _convs(model_)):
            assert q.weight.stride() == f.weight.stride()  # strides: one input channel is "contiguous" either way
            assert q.quantized_weight().stride() == f.weight.stride()  # what the convolution sees
            assert torch.equal(q.weight, f.weight)
    assert nchw_layers(qmodel) == []
    # an NCHW network stays NCHW
    nchw = build_model(CNN, 8, shape, 10)
    assert [q.weight.stride() for q in _convs(to_quantized(nchw, bits))] == [f.weight.stride() for f in _convs(nchw)]
    assert nchw_layers(to_quantized(nchw, bits)) == ["0", "3"]


def test_codes_and_steps_do_not_depend_on_the_layout():
    """The checkpoint's codes stay in NCHW order and the steps are the NCHW
    network's bit for bit (1 bit: a mean, taken in logical order)."""
    model, _ = _cell_cnn()
    nchw = build_model(CNN, 8, (1, 28, 28), 10)
    nchw.load_state_dict(model.state_dict())
    for bits in (1, 2, 5):
        a, b = to_quantized(model, bits), to_quantized(nchw, bits)
        ca, cb = integer_codes(a), integer_codes(b)
        for name in ca:
            assert ca[name].codes.is_contiguous() and torch.equal(ca[name].codes, cb[name].codes)
            assert ca[name].step == cb[name].step
        for (ka, va), (kb, vb) in zip(bake(a).state_dict().items(), bake(b).state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    w = model[3].weight
    assert l2_optimal_step(w, 1) == l2_optimal_step(w.contiguous(), 1)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_lsq_gradients_in_channels_last_are_the_nchw_ones(bits):
    """The weight gradient is elementwise (bit for bit); the step gradient is a
    sum over the layer, taken in memory order (the last bits may differ)."""
    torch.manual_seed(bits)
    w = torch.randn(16, 8, 3, 3) * 0.1
    g = torch.randn(16, 8, 3, 3)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        wf = w.clone(memory_format=fmt).requires_grad_()
        step = torch.tensor(0.05, requires_grad=True)
        out = quantize_lsq(wf, bits, step)
        assert out.stride() == wf.stride()
        out.backward(g.contiguous(memory_format=fmt))
        assert wf.grad.stride() == wf.stride()
        grads.append((wf.grad, step.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-5, atol=0)
    # the same with a gradient arriving in the other layout
    wf = w.clone(memory_format=torch.channels_last).requires_grad_()
    step = torch.tensor(0.05, requires_grad=True)
    _QuantizeLSQ.apply(wf, step, bits, 0.1, True).backward(g)
    assert torch.equal(wf.grad, grads[0][0])


def test_learned_cnn_trains_in_channels_last():
    model, data = _cell_cnn()
    qmodel = to_learned(to_quantized(model, 3))
    loss = nn.functional.cross_entropy(qmodel(data.x_train), data.y_train)
    loss.backward()
    for conv in _convs(qmodel):
        assert conv.weight.grad.is_contiguous(memory_format=torch.channels_last)  # strides of ic=1 may differ
        assert conv.log_step.grad is not None and torch.isfinite(conv.log_step.grad)


def test_evaluation_layout_rebuilds_either_layout():
    """A network rebuilt from a checkpoint gets the layout its cell evaluated
    in: channels-last throughout, or NCHW for the layers the checkpoint names."""
    model, _ = _cell_cnn()
    rebuilt = evaluation_layout(build_model(CNN, 8, (1, 28, 28), 10))
    assert [c.weight.stride() for c in _convs(rebuilt)] == [c.weight.stride() for c in _convs(model)]
    assert nchw_layers(rebuilt) == []
    old = evaluation_layout(build_model(CNN, 8, (1, 28, 28), 10), ["0", "3"])
    assert nchw_layers(old) == ["0", "3"]
    fresh = build_model(CNN, 8, (1, 28, 28), 10)
    assert [c.weight.stride() for c in _convs(old)] == [c.weight.stride() for c in _convs(fresh)]
