"""The forward pass used for evaluation: the model's own numbers, faster.

Exact shortcuts, each checked against the model's own modules:

* 2x2 max pooling is the maximum of four strided slices (PyTorch's CPU max
  pooling in NCHW layout took 60% of a quantized Fashion-MNIST CNN's
  evaluation when quantized CNNs ran NCHW; in channels-last the slices are
  as fast as its own pooling or faster). A maximum is exact, and the output is
  handed on in the memory layout pooling would have produced, so the next
  convolution runs exactly the kernel it ran before.
* A ReLU followed by 2x2 max pooling runs after the pooling, on a quarter of
  the values (they commute: ReLU is monotone).
* A run of NCHW convolutions, ReLUs and 2x2 max pools is computed on oneDNN's
  blocked tensors (``to_mkldnn``) instead of dense ones. For an NCHW
  convolution PyTorch calls the same oneDNN kernel on a blocked copy of its
  input and reorders the result back to NCHW; the reorders (15 of the 39 ms
  of a quantized width-32 CNN's batch of 128 when quantized CNNs ran NCHW,
  docs/performance.md, fourth pass) disappear when the blocked tensor is
  handed straight to the next layer. The cells' CNNs, float and quantized,
  run channels-last since the seventh pass and never take it; a network
  rebuilt in NCHW (export verification of a cell retrained before then) does.
  Whether oneDNN picks the same kernel both ways depends on the shapes, the
  ISA and the thread count (not always: batches of 1, some layers at 2
  threads), so each new case runs both ways once and the blocked path is used
  only where its logits were bit for bit the dense path's
  (:func:`blocked_path_verdicts`).

Gradients are never taken here: which of tied inputs a max-pool backward picks
is not reproduced, so training keeps ``nn.MaxPool2d``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module

from ..quantize.layers import QuantConv2d

# (segment signature, input shape, strides, dtype, threads) -> does the blocked
# path give the dense path's output bit for bit? Filled on first use, per process.
_VERDICTS: dict[tuple, bool] = {}
BLOCKED_CONVOLUTIONS = True  # False: dense modules only (the reference path)
# oneDNN pads channels to blocks of 16: a run whose widest convolution has fewer
# output channels than this is slower blocked (the CPU profile's width-2 CNN,
# 2 and 4 channels: 0.267 against 0.244 s per 10,240 images; width 4, 4 and 8
# channels: 0.31 against 0.39 s; Intel AVX-512, 1 thread, 2026-12-02)
BLOCKED_MIN_CHANNELS = 8


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
    """``F.max_pool2d(x, 2)`` (floor mode) as maxima of slices: the same
    values, in the layout max pooling would give them. Channels-last: the two
    rows of each window, then its two columns, each a maximum of runs of C
    contiguous values (1.6-3x faster than the four strided slices there)."""
    if x.dim() != 4 or x.shape[-2] < 2 or x.shape[-1] < 2:
        return F.max_pool2d(x, 2)  # its own checks and error message
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    if _layout_of(x) is torch.channels_last:
        n, c = x.shape[:2]
        nhwc = x.permute(0, 2, 3, 1)[:, :h, :w].reshape(n, h // 2, 2, w // 2, 2 * c)  # a view unless cropped
        rows = torch.maximum(nhwc[:, :, 0], nhwc[:, :, 1])  # (n, h/2, w/2, 2c): both columns of each window
        return torch.maximum(rows[..., :c], rows[..., c:]).permute(0, 3, 1, 2)  # channels-last (n, c, h/2, w/2)
    x2 = x[..., :h, :w]
    top = torch.maximum(x2[..., 0::2, 0::2], x2[..., 0::2, 1::2])
    bottom = torch.maximum(x2[..., 1::2, 0::2], x2[..., 1::2, 1::2])
    return torch.maximum(top, bottom).contiguous(memory_format=_layout_of(x))


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _plain_pool(module: nn.Module) -> bool:
    return type(module) is nn.MaxPool2d and _is_plain_2x2(module) and not _hooked(module)


def _dense(modules, x: torch.Tensor, caller: int) -> torch.Tensor:
    """The modules one by one (pooling by :func:`max_pool_2x2`, ReLU in place
    on intermediates: never on the storage ``caller`` of the pass's input).
    A ReLU followed by plain 2x2 max pooling runs after it, on a quarter of
    the values: ReLU is monotone, so ``max(relu(a), ...) = relu(max(a, ...))``,
    NaN included (both propagate it); at most the sign of a zero can differ,
    and -0.0 == 0.0 in every later sum, maximum and argmax."""
    i = 0
    while i < len(modules):
        module = modules[i]
        if type(module) is nn.ReLU and not _hooked(module) and i + 1 < len(modules) and _plain_pool(modules[i + 1]):
            x = torch.relu_(max_pool_2x2(x))  # the pooled tensor is this pass's own
            i += 2
            continue
        if isinstance(module, nn.MaxPool2d) and _is_plain_2x2(module):
            x = max_pool_2x2(x)
        elif isinstance(module, nn.ReLU) and x.untyped_storage().data_ptr() != caller:
            x = torch.relu_(x)  # the same values, without a fresh activation-sized buffer
        else:
            x = module(x)
        i += 1
    return x


def _conv_weight(conv: nn.Conv2d) -> torch.Tensor:
    return conv._forward_weight() if isinstance(conv, QuantConv2d) else conv.weight


def _blockable_conv(module: nn.Module) -> bool:
    """A convolution whose forward pass is the plain ``F.conv2d`` of its
    (quantized) weight, in NCHW (a channels-last weight runs another kernel)."""
    if type(module).forward not in (nn.Conv2d.forward, QuantConv2d.forward):
        return False
    if type(module)._conv_forward is not nn.Conv2d._conv_forward or _hooked(module):
        return False
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        return False
    return _is_nchw(module.weight) and module.weight.device.type == "cpu"


def _is_nchw(t: torch.Tensor) -> bool:
    """Dense float32 in NCHW order, strides included: a tensor with a channel
    dimension of 1 can be contiguous in both layouts, and PyTorch then goes
    by its strides."""
    strides, step = [], 1
    for size in reversed(t.shape):
        strides.append(step)
        step *= size
    return t.dtype == torch.float32 and t.stride() == tuple(reversed(strides))


def _blockable(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return _blockable_conv(module)
    if _hooked(module):
        return False
    if type(module) is nn.ReLU or type(module) is nn.Identity:
        return True
    if type(module) is nn.Dropout:
        return not module.training
    return type(module) is nn.MaxPool2d and _is_plain_2x2(module)


def _blocking_available() -> bool:
    """oneDNN is there and on, and no global module hooks expect calls."""
    return (
        BLOCKED_CONVOLUTIONS
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not (_module._global_forward_hooks or _module._global_forward_pre_hooks)
    )


def _segment_end(modules, start: int, x: torch.Tensor) -> int:
    """End of the run of blockable modules from ``start`` (``start`` itself if
    none: the run must begin with a convolution of an NCHW float32 CPU input,
    and be wide enough to gain, :data:`BLOCKED_MIN_CHANNELS`)."""
    if not (x.dim() == 4 and x.dtype == torch.float32 and x.is_cpu and x.is_contiguous()):
        return start
    end = start
    while end < len(modules) and _blockable(modules[end]):
        end += 1
    widest = max((m.out_channels for m in modules[start:end] if isinstance(m, nn.Conv2d)), default=0)
    return end if widest >= BLOCKED_MIN_CHANNELS else start


def _blocked(modules, x: torch.Tensor) -> torch.Tensor:
    """The modules on oneDNN blocked tensors, back to a dense NCHW tensor."""
    h = x.to_mkldnn()
    for module in modules:
        if isinstance(module, nn.Conv2d):
            h = torch.mkldnn_convolution(
                h, _conv_weight(module), module.bias, module.padding, module.stride, module.dilation, module.groups
            )
        elif isinstance(module, nn.ReLU):
            h = torch.relu_(h)  # a blocked tensor of this pass, never the caller's
        elif isinstance(module, nn.MaxPool2d):
            h = F.max_pool2d(h, 2)
        # Identity, Dropout in eval mode: nothing to do
    return h.to_dense()


def _signature(modules, x: torch.Tensor) -> tuple:
    parts = []
    for m in modules:
        if isinstance(m, nn.Conv2d):
            w = m.weight
            parts.append(("conv", tuple(w.shape), m.bias is not None, m.stride, m.padding, m.dilation, m.groups))
        else:
            parts.append(type(m).__name__)
    return (tuple(parts), tuple(x.shape), x.stride(), x.dtype, torch.get_num_threads())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


def blocked_path_verdicts() -> dict[tuple, bool]:
    """The cases checked so far in this process: signature -> blocked path used."""
    return dict(_VERDICTS)


def forget_blocked_path_verdicts() -> None:
    """Check every case afresh, as a new process would (benchmarks)."""
    _VERDICTS.clear()


def _run_segment(modules, x: torch.Tensor, caller: int) -> torch.Tensor:
    key = _signature(modules, x)
    verdict = _VERDICTS.get(key)
    if verdict is None:  # first time: both ways, keep the dense result
        ref = _dense(modules, x, caller)
        try:
            _VERDICTS[key] = _same(ref, _blocked(modules, x))  # NaN compares unequal: dense from then on
        except (RuntimeError, NotImplementedError):  # a oneDNN build without these blocked ops
            _VERDICTS[key] = False
        return ref
    return _blocked(modules, x) if verdict else _dense(modules, x, caller)


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` for inference (no gradients), the same numbers faster: an
    ``nn.Sequential`` (without hooks of its own) is run module by module with
    plain 2x2 max pooling replaced by :func:`max_pool_2x2`, ReLU applied in
    place on the pass's own intermediates, and runs of NCHW convolutions on
    blocked tensors where that was checked to be exact; anything else is called
    as it is."""
    if torch.is_grad_enabled():
        raise RuntimeError("qdesign.nn.inference.forward is for inference: call it under torch.no_grad/inference_mode")
    if not isinstance(model, nn.Sequential) or _hooked(model):
        return model(x)  # hooks on the container itself expect to be called: the plain path
    caller = x.untyped_storage().data_ptr()  # never written to
    modules = list(model)
    blocking = _blocking_available() and any(
        isinstance(m, nn.Conv2d) and m.out_channels >= BLOCKED_MIN_CHANNELS for m in modules
    )
    i = 0
    while i < len(modules):
        if blocking and isinstance(modules[i], nn.Conv2d):
            end = _segment_end(modules, i, x)
            if end > i:
                x = _run_segment(modules[i:end], x, caller)
                i = end
                continue
        # densely up to the next convolution that could start a blocked run
        end = i + 1
        while end < len(modules) and not (blocking and isinstance(modules[end], nn.Conv2d)):
            end += 1
        x = _dense(modules[i:end], x, caller)
        i = end
    return x
