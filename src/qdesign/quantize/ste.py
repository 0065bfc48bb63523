"""Straight-through estimators: the quantizer in the forward pass, a chosen
gradient in the backward pass. Separate from the quantizer (primitives) and
from the layers that use them."""

from __future__ import annotations

import torch

from .primitives import check_bits, dequantize, quantize_codes


class _QuantizeSTE(torch.autograd.Function):
    """Quantize in the forward pass; pass the gradient through unchanged.

    The gradient computed with the quantized weights is applied to the float
    shadow weights as is (identity straight-through estimator, as in Hwang &
    Sung's retraining), clipped weights included. One allocation and four
    element-wise passes, so retraining costs little more than float training.
    """

    @staticmethod
    def forward(ctx, w, step, bits):  # noqa: D102
        return dequantize(quantize_codes(w, bits, step), step, inplace=True)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad, None, None


def quantize_ste(w: torch.Tensor, bits: int, step: torch.Tensor) -> torch.Tensor:
    """:func:`~qdesign.quantize.primitives.quantize` with a straight-through
    (identity) gradient w.r.t. ``w`` and none w.r.t. ``step``."""
    step_t = torch.as_tensor(step, dtype=w.dtype, device=w.device)
    return _QuantizeSTE.apply(w, step_t, check_bits(bits))
