"""The forward pass used for evaluation: the model's own modules, except that
2x2 max pooling is computed as the maximum of four strided slices.

Why: PyTorch's CPU max pooling in NCHW layout (the layout quantized CNNs run
in) took 60% of a Fashion-MNIST CNN's evaluation (25 ms of a 256-image batch
at width 32, against 4.5 ms for the slices). A maximum is exact, so the output
is bit for bit the pooling's, NaN included, and it is handed on in the memory
layout pooling would have produced, so the next convolution runs exactly the
kernel it ran before (tested against ``model(x)``). Gradients are never taken
here: which of tied inputs a max-pool backward picks is not reproduced, so
training keeps ``nn.MaxPool2d``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _is_plain_2x2(pool: nn.MaxPool2d) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (
        pair(pool.kernel_size) == (2, 2)
        and pair(pool.stride) == (2, 2)
        and pair(pool.padding) == (0, 0)
        and pair(pool.dilation) == (1, 1)
        and not pool.ceil_mode
        and not pool.return_indices
    )


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format ``max_pool2d`` gives its output for input ``x``."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` (floor mode) as the maximum of four strided slices:
    the same values, in the layout max pooling would give them."""
    if x.dim() != 4 or x.shape[-2] < 2 or x.shape[-1] < 2:
        return F.max_pool2d(x, 2)  # its own checks and error message
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x2 = x[..., :h, :w]
    top = torch.maximum(x2[..., 0::2, 0::2], x2[..., 0::2, 1::2])
    bottom = torch.maximum(x2[..., 1::2, 0::2], x2[..., 1::2, 1::2])
    return torch.maximum(top, bottom).contiguous(memory_format=_layout_of(x))


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` for inference (no gradients), the same numbers faster: an
    ``nn.Sequential`` (without hooks of its own) is run module by module with
    plain 2x2 max pooling replaced by :func:`max_pool_2x2` and ReLU applied in
    place on the pass's own intermediates; anything else is called as it is."""
    if torch.is_grad_enabled():
        raise RuntimeError("qdesign.inference.forward is for inference: call it under torch.no_grad/inference_mode")
    if not isinstance(model, nn.Sequential) or model._forward_hooks or model._forward_pre_hooks:
        return model(x)  # hooks on the container itself expect to be called: the plain path
    caller = x.untyped_storage().data_ptr()  # never written to
    for module in model:
        if isinstance(module, nn.MaxPool2d) and _is_plain_2x2(module):
            x = max_pool_2x2(x)
        elif isinstance(module, nn.ReLU) and x.untyped_storage().data_ptr() != caller:
            x = torch.relu_(x)  # the same values, without a fresh activation-sized buffer
        else:
            x = module(x)
    return x
