"""The quantizer, defined once: integer codes and dequantization.

A b-bit weight is ``step * code`` with an integer ``code`` in ``-K..K``,
``K = 2**(b-1) - 1``: M = 2**b - 1 levels, symmetric around zero (b = 2 is
ternary, {-step, 0, step}). For b = 1 (binary) the codes are {-1, +1}, with
sign(0) = +1 and no zero level. Rounding is round-half-to-even
(``torch.round``), which keeps ``q(-w) == -q(w)`` away from ties.

:func:`quantize_codes` and :func:`dequantize` are the two primitives (in the
spirit of torchao's quantize/dequantize pair); :func:`quantize`, the STE layers,
:func:`~qdesign.quantize.layers.integer_codes`, ``bake`` and the benchmarks all
call them, so the rounding and clipping formula exists only here.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.constants import MAX_BITS, MIN_BITS


def check_bits(bits: int) -> int:
    """``bits`` as an int in MIN_BITS..MAX_BITS, or a TypeError/ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return int(bits)


def max_level(bits: int) -> int:
    """Largest integer code K = (M - 1) / 2 = 2**(b-1) - 1 of a b-bit quantizer.

    b = 2 gives K = 1 (ternary), b = 8 gives K = 127. For b = 1 (binary) the codes
    are {-1, +1}, so K = 1 as well, but there is no zero level.
    """
    bits = check_bits(bits)
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def quantize_codes(w: torch.Tensor, bits: int, step: torch.Tensor) -> torch.Tensor:
    """Integer codes ``clip(round(w / step), -K, K)`` (``sign(w)`` for b = 1), as a
    new tensor of ``w``'s float dtype. ``step`` must be a positive tensor on
    ``w``'s device (scalar, or broadcastable to ``w``); not checked here, since the
    STE forward pass calls this on every step. Computed in place on one fresh
    buffer: one allocation and three element-wise passes."""
    if bits == 1:
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
    k = max_level(bits)
    return torch.div(w, step).round_().clamp_(-k, k)


def dequantize(codes: torch.Tensor, step: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """Weights ``step * codes``. ``inplace`` reuses ``codes``' buffer (for a
    codes tensor that nothing else holds)."""
    return codes.mul_(step) if inplace else codes * step


def as_step(step, like: torch.Tensor) -> torch.Tensor:
    """``step`` as a tensor of ``like``'s dtype and device, checked to be > 0."""
    step_t = torch.as_tensor(step, dtype=like.dtype, device=like.device)
    if not bool((step_t > 0).all()):
        raise ValueError(f"step must be > 0, got {step_t.tolist()}")
    return step_t


def quantize(w: torch.Tensor, bits: int, step: float | torch.Tensor) -> torch.Tensor:
    """Symmetric uniform quantization ``step * clip(round(w / step), -K, K)``
    (``step * sign(w)`` for b = 1): the quantized weights, same shape and dtype."""
    bits = check_bits(bits)
    step_t = as_step(step, w)
    return dequantize(quantize_codes(w, bits, step_t), step_t, inplace=True)


def quantization_error(w: torch.Tensor, bits: int, step: float) -> float:
    """Sum of squared quantization errors, accumulated in float64."""
    w64 = w.detach().to(torch.float64)
    return float(((w64 - quantize(w64, bits, step)) ** 2).sum())
