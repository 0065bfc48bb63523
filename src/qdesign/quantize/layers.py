"""Layers for retraining with quantized weights, and the way back out.

:func:`to_quantized` turns a float model into one whose Linear/Conv2d weights
are quantized in the forward pass with a straight-through estimator, so that
retraining updates float shadow weights ("retrain-based quantization");
:func:`bake` and :func:`integer_codes` turn it back into a plain model and into
integer codes for export.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..core.precision import Precision
from .primitives import check_bits, dequantize, quantize, quantize_codes
from .ste import quantize_ste
from .step_search import l2_optimal_step


def weight_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every weight layer (Linear or Conv2d, quantized ones
    included: they subclass them), in definition (= forward) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


class _QuantWeight:
    """Mixin: the ``weight`` parameter is the float shadow; the forward pass sees
    ``quantize(weight, bits, step)``. ``step`` is a buffer (saved in state_dict)."""

    bits: int
    step: torch.Tensor
    _frozen_weight: torch.Tensor | None = None  # set by frozen_weights()

    def _init_quant(self, bits: int, init_step: bool) -> None:
        self.bits = check_bits(bits)
        self.register_buffer("step", torch.ones((), dtype=self.weight.dtype, device=self.weight.device))
        if init_step:
            self.update_step()

    def update_step(self) -> float:
        """Re-estimate the L2-optimal step from the current float weights."""
        value = l2_optimal_step(self.weight.detach().cpu(), self.bits)
        self.set_step(value)
        return value

    @torch.no_grad()
    def set_step(self, value: float) -> None:
        """Set the step (a learned-step layer restarts its learning from it)."""
        self.step.fill_(value)

    def quantized_weight(self) -> torch.Tensor:
        return quantize_ste(self.weight, self.bits, self.step)

    def _forward_weight(self) -> torch.Tensor:
        """The weight the forward pass uses: quantized afresh, or once for a
        stretch of inference (:func:`frozen_weights`), the same values either way."""
        return self.quantized_weight() if self._frozen_weight is None else self._frozen_weight

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, step={float(self.step.detach()):.6g}"


class QuantLinear(_QuantWeight, nn.Linear):
    """``nn.Linear`` whose forward pass uses b-bit weights (float bias)."""

    def __init__(
        self, in_features, out_features, bias=True, *, bits: int, init_step: bool = True, device=None, dtype=None
    ):
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_quant(bits, init_step)

    def forward(self, x):  # noqa: D102
        return F.linear(x, self._forward_weight(), self.bias)


class QuantConv2d(_QuantWeight, nn.Conv2d):
    """``nn.Conv2d`` whose forward pass uses b-bit weights (float bias)."""

    def __init__(self, *args, bits: int, init_step: bool = True, **kwargs):
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_quant(bits, init_step)

    def forward(self, x):  # noqa: D102
        return self._conv_forward(x, self._forward_weight(), self.bias)


def clone_layer(layer: nn.Module, linear_cls, conv_cls, weight: torch.Tensor | None = None, **kwargs) -> nn.Module:
    """A new ``linear_cls`` or ``conv_cls`` with ``layer``'s geometry, device,
    dtype and weight memory layout (strides: a channels-last convolution stays
    channels-last, so that it runs the kernels of the network it came from),
    its bias and ``weight`` (default: ``layer.weight``) copied in. ``kwargs`` go
    to the constructor (e.g. ``bits=``). One place for what the quantized,
    learned and baked versions of a layer share."""
    common = dict(device=layer.weight.device, dtype=layer.weight.dtype, **kwargs)
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        new = linear_cls(layer.in_features, layer.out_features, has_bias, **common)
    else:
        new = conv_cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            has_bias,
            layer.padding_mode,
            **common,
        )
    with torch.no_grad():
        new.weight.data = torch.empty_like(layer.weight, dtype=new.weight.dtype, device=new.weight.device)
        new.weight.copy_(layer.weight if weight is None else weight)
        if has_bias:
            new.bias.copy_(layer.bias)
    return new


def _quant_clone(layer: nn.Module, bits: int) -> nn.Module:
    return clone_layer(layer, QuantLinear, QuantConv2d, bits=bits, init_step=False)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def layer_bits_for(n_layers: int, bits, *, float_first: bool = False, float_last: bool = False) -> list[int | None]:
    """Per weight layer, its word length (None = float): ``bits`` is one int for
    every layer (uniform precision), a sequence with one entry per layer
    (mixed precision, first to last; None keeps a layer float), or a
    :class:`~qdesign.core.precision.Precision`. ``float_first``/``float_last`` keep the
    first/last layer in float."""
    if isinstance(bits, Precision):
        return bits.layer_bits(n_layers, float_first=float_first, float_last=float_last)
    if isinstance(bits, (list, tuple)):
        if len(bits) != n_layers:
            raise ValueError(f"{len(bits)} per-layer bits given for {n_layers} weight layers")
        out = [None if b is None else check_bits(b) for b in bits]
    else:
        out = [check_bits(bits)] * n_layers
    if float_first:
        out[0] = None
    if float_last:
        out[-1] = None
    return out


def to_quantized(model: nn.Module, bits, *, float_first: bool = False, float_last: bool = False) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv2d weights are quantized in the
    forward pass (straight-through gradient to float shadow weights).

    ``bits``: one int for every weight layer, or one entry per layer (None keeps
    that layer float); see :func:`layer_bits_for`. Steps are set per layer to
    :func:`l2_optimal_step` of the float weights. Biases always stay float. The
    input model is not modified; every layer keeps its weight's memory layout
    (:func:`clone_layer`), so a channels-last CNN gives a channels-last
    quantized CNN that trains and evaluates with the float network's kernels.
    """
    qmodel = copy.deepcopy(model)
    layers = weight_modules(qmodel)
    if not layers:
        raise ValueError("model has no Linear or Conv2d layer to quantize")
    per_layer = layer_bits_for(len(layers), bits, float_first=float_first, float_last=float_last)
    for (name, layer), b in zip(layers, per_layer):
        if b is not None:
            _set_submodule(qmodel, name, _quant_clone(layer, b))
    update_steps(qmodel)
    return qmodel


def quantized_layers(model: nn.Module) -> list[tuple[str, _QuantWeight]]:
    """The quantized layers of a model made by :func:`to_quantized`, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QuantWeight)]


@contextmanager
def frozen_weights(model: nn.Module):
    """Quantize every layer's weights once for a stretch of inference (an
    evaluation pass over many batches) instead of once per batch: the forward
    pass sees the same tensors, so the outputs are bit for bit the same. The
    weights must not change inside the block; the cache is dropped on exit."""
    layers = [layer for _, layer in quantized_layers(model)]
    try:
        with torch.no_grad():
            for layer in layers:
                layer._frozen_weight = layer.quantized_weight()
        yield model
    finally:
        for layer in layers:
            layer._frozen_weight = None


def update_steps(model: nn.Module) -> dict[str, float]:
    """Re-estimate every quantized layer's step from its float shadow weights
    (at conversion, and before each epoch with the ``epoch`` retraining method). Layers are
    searched in parallel threads (NumPy's sort and searches release the GIL),
    as many as torch's intra-op threads. Returns {layer name: step}."""
    layers = quantized_layers(model)
    weights = [layer.weight.detach().cpu() for _, layer in layers]
    bits = [layer.bits for _, layer in layers]
    workers = max(1, min(torch.get_num_threads(), len(layers)))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            steps = list(pool.map(l2_optimal_step, weights, bits))
    else:
        steps = [l2_optimal_step(w, b) for w, b in zip(weights, bits)]
    for (_, layer), step in zip(layers, steps):
        layer.set_step(step)
    return {name: step for (name, _), step in zip(layers, steps)}


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes and the step that turn them back into weights: w = step * codes."""

    codes: torch.Tensor
    step: float
    bits: int

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.codes.to(torch.float32), torch.tensor(self.step, dtype=torch.float32))


def integer_codes(model: nn.Module) -> dict[str, QuantizedTensor]:
    """Integer codes of every quantized layer (``{layer name: QuantizedTensor}``).

    Codes are int8 up to 8 bits and int16 above; for b = 1 they are {-1, +1}.
    """
    out = {}
    for name, layer in quantized_layers(model):
        step = float(layer.step.detach())
        with torch.no_grad():
            codes = quantize_codes(layer.weight.detach(), layer.bits, layer.step)
        dtype = torch.int8 if layer.bits <= 8 else torch.int16
        # in logical (NCHW) order whatever the layer's memory layout: the checkpoint's format
        out[name] = QuantizedTensor(codes.to(dtype).cpu().contiguous(), step, layer.bits)
    return out


def bake(model: nn.Module) -> nn.Module:
    """A plain float model (nn.Linear/nn.Conv2d) whose weights are the quantized
    weights of ``model``: the network that is evaluated and exported."""
    plain = copy.deepcopy(model)
    for name, layer in quantized_layers(plain):
        with torch.no_grad():
            new = clone_layer(layer, nn.Linear, nn.Conv2d, weight=quantize(layer.weight, layer.bits, layer.step))
        _set_submodule(plain, name, new)
    return plain
