"""Learned step size (LSQ, Esser et al. 2019, arXiv 1902.08153): the step of
each quantized layer is trained jointly with its float shadow weights.

The forward values are the project's quantizer (:func:`quantize_codes` then
:func:`dequantize`), so :func:`~qdesign.quantize.layers.integer_codes` and
:func:`~qdesign.quantize.layers.bake` of a learned layer reproduce its forward
pass exactly. Only the gradients differ from the fixed-step STE:

* weights: straight-through inside the clip range ``|w| < K step``, zero for
  clipped weights (``clip_grad=False``: straight-through everywhere, the
  identity STE of the ``fixed`` method; a measured variant, not the default);
* step: ``dq/ds = round(w/s) - w/s`` inside the range and ``±K`` outside (the
  integer code minus ``w/s`` where not clipped), summed over the layer and
  times the LSQ gradient scale ``g = 1 / sqrt(n_weights * K)``.

The step is kept positive by its parametrisation ``step = step0 * exp(rate * u)``
with a trainable ``u`` (0 at the start, so the initial step is exactly the
L2-optimal ``step0``): no clamp, and no hook in the training loop. Under Adam the
step then moves by about ``rate * lr`` relative per update, whatever its scale;
weight decay on ``u`` pulls the step back towards ``step0``, not towards 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import QuantConv2d, QuantLinear, _set_submodule, clone_layer, quantized_layers
from .primitives import check_bits, dequantize, max_level, quantize_codes

DEFAULT_RATE = 20.0
"""Relative speed of the step against the weights (``rate`` of the
parametrisation); chosen by measurement (10 before 2026-12-02), see docs/methods.md."""
MAX_LOG_FACTOR = 20.0
"""The learned step stays within step0 * exp(±20) (positive and finite in float32)."""


def _lsq_forward(ctx, w, step, bits, grad_scale, clip_grad):
    q = dequantize(quantize_codes(w, bits, step), step, inplace=True)
    ctx.save_for_backward(w, q, step)
    ctx.bits, ctx.grad_scale, ctx.clip_grad = bits, grad_scale, clip_grad
    return q


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 1-D view in memory order (a channels-last convolution's weight
    included); the tensors of one dot product share their layout."""
    if t.is_contiguous():
        return t.view(-1)
    return t.permute(0, 2, 3, 1).view(-1)  # channels-last: NHWC is its memory order


def _lsq_backward(ctx, grad):
    """(gradient for ``w``, ``s * sum(grad * dq/ds)``): one fused pass and two dot products,
    in the weight's memory layout (channels-last convolutions stay channels-last)."""
    w, q, step = ctx.saved_tensors
    layout = torch.contiguous_format if w.is_contiguous() else torch.channels_last
    grad = grad.contiguous(memory_format=layout)
    thr = max_level(ctx.bits) * float(step)
    # grad where -K s < w < K s, else 0, in one pass: hardtanh's backward kernel. Boolean masks,
    # torch.where and chains of in-place float ops were measured 2-20x slower on this CPU.
    inside = torch.ops.aten.hardtanh_backward(grad, w, -thr, thr)
    total = None
    if ctx.needs_input_grad[1]:
        # s * sum grad * (codes - inside * w / s) = <grad, q> - <grad * inside, w>
        total = torch.dot(_flat(grad), _flat(q))
        if ctx.bits > 1:  # binary: q = s sign(w), dq/ds = sign(w) = codes
            total = total - torch.dot(_flat(inside), _flat(w))
    grad_w = None
    if ctx.needs_input_grad[0]:
        grad_w = inside if ctx.clip_grad else grad
    return grad_w, total


class _QuantizeLSQ(torch.autograd.Function):
    """Quantize in the forward pass; LSQ gradients for the weights and the step.

    Saves its output (codes = output / step); the backward pass is one fused
    element-wise pass (the gradient masked to the clip range) and two dot
    products."""

    @staticmethod
    def forward(ctx, w, step, bits, grad_scale, clip_grad=True):
        return _lsq_forward(ctx, w, step, bits, grad_scale, clip_grad)

    @staticmethod
    def backward(ctx, grad):
        grad_w, total = _lsq_backward(ctx, grad)
        grad_s = None
        if total is not None:
            step = ctx.saved_tensors[2]
            grad_s = (total / step * ctx.grad_scale).reshape(step.shape)
        return grad_w, grad_s, None, None, None


class _QuantizeLSQLog(torch.autograd.Function):
    """:class:`_QuantizeLSQ` with the step's parametrisation folded in
    (``step = step0 * exp(clamp(rate * u, -M, M))``): one autograd node per
    layer instead of four, which is most of the cost of small layers.
    ``d step / d u = rate * step``, so ``grad_u = rate * g * s * sum(grad * dq/ds)``."""

    @staticmethod
    def forward(ctx, w, u, step0, rate, bits, grad_scale, clip_grad=True):
        e = rate * u
        step = step0 * torch.exp(e.clamp(-MAX_LOG_FACTOR, MAX_LOG_FACTOR))
        ctx.rate, ctx.e_inside = rate, abs(float(e)) < MAX_LOG_FACTOR
        return _lsq_forward(ctx, w, step, bits, grad_scale, clip_grad)

    @staticmethod
    def backward(ctx, grad):
        grad_w, total = _lsq_backward(ctx, grad)
        grad_u = None
        if total is not None:
            grad_u = total * (ctx.rate * ctx.grad_scale) if ctx.e_inside else torch.zeros_like(total)
        return grad_w, grad_u, None, None, None, None, None


def lsq_grad_scale(n_weights: int, bits: int) -> float:
    """LSQ's step-gradient scale g = 1 / sqrt(n_weights * K) (K = Q_P, the largest code)."""
    return 1.0 / math.sqrt(n_weights * max_level(bits))


def quantize_lsq(
    w: torch.Tensor, bits: int, step: torch.Tensor, grad_scale: float | None = None, clip_grad: bool = True
) -> torch.Tensor:
    """``quantize(w, bits, step)`` with LSQ gradients w.r.t. ``w`` and the scalar
    tensor ``step`` (see the module docstring). ``grad_scale`` defaults to
    :func:`lsq_grad_scale` of ``w``; ``clip_grad=False`` passes the gradient to
    ``w`` through unchanged (identity STE, clipped weights included)."""
    bits = check_bits(bits)
    if grad_scale is None:
        grad_scale = lsq_grad_scale(w.numel(), bits)
    return _QuantizeLSQ.apply(w, step, bits, float(grad_scale), bool(clip_grad))


class _LearnedStep:
    """Mixin over QuantLinear/QuantConv2d: ``step`` is ``step0 * exp(rate * log_step)``
    with a trainable ``log_step``; ``step0`` (a buffer) is the L2-optimal start."""

    rate: float = DEFAULT_RATE
    clip_grad: bool = True

    def _init_quant(self, bits: int, init_step: bool) -> None:
        self.bits = check_bits(bits)
        self.register_buffer("step0", torch.ones((), dtype=self.weight.dtype, device=self.weight.device))
        self.log_step = nn.Parameter(torch.zeros((), dtype=self.weight.dtype, device=self.weight.device))
        if init_step:
            self.update_step()

    @property
    def step(self) -> torch.Tensor:
        # the exponent is bounded so that the step can neither underflow to 0 nor overflow
        return self.step0 * torch.exp((self.rate * self.log_step).clamp(-MAX_LOG_FACTOR, MAX_LOG_FACTOR))

    @torch.no_grad()
    def set_step(self, value: float) -> None:
        """Restart the learned step at ``value`` (``log_step`` back to 0)."""
        self.step0.fill_(value)
        self.log_step.zero_()

    def quantized_weight(self) -> torch.Tensor:
        return _QuantizeLSQLog.apply(
            self.weight,
            self.log_step,
            self.step0,
            self.rate,
            self.bits,
            lsq_grad_scale(self.weight.numel(), self.bits),
            self.clip_grad,
        )

    def extra_repr(self) -> str:
        clip = "" if self.clip_grad else ", identity STE"
        return f"{super().extra_repr()}, learned step, rate={self.rate:g}{clip}"


class LearnedQuantLinear(_LearnedStep, QuantLinear):
    """:class:`QuantLinear` with a learned step (LSQ)."""


class LearnedQuantConv2d(_LearnedStep, QuantConv2d):
    """:class:`QuantConv2d` with a learned step (LSQ)."""


def learned_step_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable step parameters (``log_step``) of ``model``'s learned
    layers, in layer order: what ``fit`` puts in the steps' own parameter group."""
    return [m.log_step for m in model.modules() if isinstance(m, _LearnedStep)]


def to_learned(qmodel: nn.Module, rate: float = DEFAULT_RATE, *, clip_grad: bool = True) -> nn.Module:
    """Give every quantized layer of ``qmodel`` (from :func:`to_quantized`) a
    learned step that starts at its current step. In place; returns ``qmodel``.

    ``clip_grad=False`` passes the weights' gradient straight through the clip
    too (the identity STE of ``fixed``); the step's gradient is LSQ's either way."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    for name, layer in quantized_layers(qmodel):
        if not isinstance(layer, _LearnedStep):
            new = clone_layer(layer, LearnedQuantLinear, LearnedQuantConv2d, bits=layer.bits, init_step=False)
            new.set_step(float(layer.step))
            _set_submodule(qmodel, name, new)
            layer = new
        layer.rate, layer.clip_grad = float(rate), bool(clip_grad)
    return qmodel
