"""Symmetric uniform weight quantizer, its L2-optimal step, and retraining support.

What a "b-bit network" means in this project lives here:

* :func:`quantize` maps a weight tensor onto M = 2**b - 1 symmetric levels
  ``step * {-(M-1)/2, ..., 0, ..., (M-1)/2}`` (b >= 2), or onto ``{-step, +step}``
  for b = 1 (binary).
* :func:`l2_optimal_step` finds the step that minimises the squared quantization
  error of one tensor *globally* (branch and bound over the step axis with
  prefix sums; see ``docs/method.md`` for the algorithm and its guarantee).
* :func:`to_quantized` turns a float model into one whose Linear/Conv weights are
  quantized in the forward pass with a straight-through estimator, so that
  retraining updates float shadow weights ("retrain-based quantization").
  :func:`bake` and :func:`integer_codes` turn it back into a plain model and into
  integer codes for export.

Nothing here knows about data, training loops or Snakemake.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "QuantConv2d",
    "QuantLinear",
    "QuantizedTensor",
    "bake",
    "integer_codes",
    "l2_optimal_step",
    "max_level",
    "quantization_error",
    "quantize",
    "quantize_ste",
    "quantized_layers",
    "to_quantized",
    "update_steps",
]

_MIN_BITS, _MAX_BITS = 1, 16


# --------------------------------------------------------------------- quantizer


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    if not _MIN_BITS <= bits <= _MAX_BITS:
        raise ValueError(f"bits must be in {_MIN_BITS}..{_MAX_BITS}, got {bits}")
    return int(bits)


def max_level(bits: int) -> int:
    """Largest integer code K = (M - 1) / 2 = 2**(b-1) - 1 of a b-bit quantizer.

    b = 2 gives K = 1 (ternary), b = 8 gives K = 127. For b = 1 (binary) the codes
    are {-1, +1}, so K = 1 as well, but there is no zero level.
    """
    bits = _check_bits(bits)
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def quantize(w: torch.Tensor, bits: int, step: float | torch.Tensor) -> torch.Tensor:
    """Symmetric uniform quantization: ``step * clip(round(w / step), -K, K)``.

    ``K = 2**(bits-1) - 1``, so there are M = 2**bits - 1 levels, symmetric around
    zero (b = 2: {-step, 0, step}). For ``bits == 1`` the result is
    ``step * sign(w)`` with sign(0) = +1 (two levels, no zero). Rounding is
    round-half-to-even (``torch.round``), which keeps ``q(-w) == -q(w)``.
    """
    bits = _check_bits(bits)
    step_t = torch.as_tensor(step, dtype=w.dtype, device=w.device)
    if not bool(step_t > 0):
        raise ValueError(f"step must be > 0, got {float(step_t)}")
    if bits == 1:
        return torch.where(w >= 0, step_t, -step_t)
    k = max_level(bits)
    return torch.clamp(torch.round(w / step_t), -k, k) * step_t


def quantization_error(w: torch.Tensor, bits: int, step: float) -> float:
    """Sum of squared quantization errors, accumulated in float64."""
    w64 = w.detach().to(torch.float64)
    return float(((w64 - quantize(w64, bits, step)) ** 2).sum())


# ------------------------------------------------------------ optimal step search


class _SortedMagnitudes:
    """|w| sorted ascending, with prefix sums, so that the squared error of any
    step, and a lower bound of it over a whole interval of steps, costs
    O(K log N) instead of O(N)."""

    def __init__(self, w: torch.Tensor):
        flat = w.detach().reshape(-1).abs().cpu()
        if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.to(torch.float64 if not flat.is_floating_point() else torch.float32)
        # sort in the tensor's own precision (NumPy's vectorised float32 sort is
        # about 3x faster than torch.sort here), then widen for the prefix sums
        a64 = np.sort(flat.numpy()).astype(np.float64)
        self.a = a64
        self.n = a64.size
        self.p1 = np.concatenate(([0.0], np.cumsum(a64)))
        self.p2 = np.concatenate(([0.0], np.cumsum(a64 * a64)))
        self.total_sq = float(self.p2[-1])
        self.max = float(a64[-1]) if self.n else 0.0

    def _range_sq(self, lo, hi, center):
        """sum over sorted indices [lo, hi) of (a - center)**2, clipped at 0."""
        s2 = self.p2[hi] - self.p2[lo]
        s1 = self.p1[hi] - self.p1[lo]
        cnt = hi - lo
        return np.maximum(s2 - 2.0 * center * s1 + center * center * cnt, 0.0)

    def sums(self, steps: np.ndarray, k: int):
        """For each step: S1 = sum |w| z and S2 = sum z**2, with z the integer
        codes in 0..k that nearest-level rounding assigns to |w|."""
        half = np.arange(k, dtype=np.float64) + 0.5
        thr = steps[:, None] * half[None, :]
        # idx[:, j] = number of magnitudes below (j + 1/2) * step, i.e. at codes <= j
        idx = np.searchsorted(self.a, thr.ravel(), side="left").reshape(thr.shape)
        # summation by parts: sum_z z (c_z - c_{z-1}) = K c_K - sum_{z<K} c_z
        s1 = k * self.p1[self.n] - self.p1[idx].sum(axis=1)
        s2 = float(k * k * self.n) - (idx * (2.0 * np.arange(k) + 1.0)[None, :]).sum(axis=1)
        return s1, s2

    def evaluate(self, steps: np.ndarray, k: int):
        """(E, S1, S2) of each step: the exact error and the sums of a Lloyd update."""
        s1, s2 = self.sums(steps, k)
        return np.maximum(self.total_sq - 2.0 * steps * s1 + steps * steps * s2, 0.0), s1, s2

    def errors(self, steps: np.ndarray, k: int) -> np.ndarray:
        """Exact squared quantization error E(step) for each step."""
        return self.evaluate(steps, k)[0]

    def lower_bounds(self, lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
        """A lower bound of E(step) over each interval of steps [lo, hi].

        A magnitude outside every rounding band [(j+1/2) lo, (j+1/2) hi] gets the
        same code z for every step of the interval, so the error of all those
        "fixed" magnitudes is one quadratic in the step, minimised exactly over
        [lo, hi]. A magnitude inside band j is at least its distance from the
        level intervals [j lo, j hi] and [(j+1) lo, (j+1) hi] away from any
        level. The sum of both parts is a valid bound whose slack shrinks with the
        square of the interval width, which keeps the branch and bound small.
        """
        j = np.arange(k, dtype=np.float64)[None, :]
        lo2, hi2 = lo[:, None], hi[:, None]
        shape = (lo.size, k)

        def idx(values):
            return np.searchsorted(self.a, values.ravel(), side="left").reshape(shape)

        band_lo, band_hi = idx((j + 0.5) * lo2), idx((j + 0.5) * hi2)
        # fixed magnitudes at code j: indices [band_hi[j-1], band_lo[j]); code k: [band_hi[k-1], n)
        start = np.concatenate([np.zeros((lo.size, 1), dtype=band_hi.dtype), band_hi], axis=1)
        stop = np.concatenate([band_lo, np.full((lo.size, 1), self.n, dtype=band_lo.dtype)], axis=1)
        stop = np.maximum(stop, start)
        codes = np.arange(k + 1, dtype=np.float64)[None, :]
        cnt = stop - start
        qa = (self.p2[stop] - self.p2[start]).sum(axis=1)
        qb = (codes * (self.p1[stop] - self.p1[start])).sum(axis=1)
        qc = (codes * codes * cnt).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.clip(np.where(qc > 0, qb / qc, lo), lo, hi)
        fixed = np.maximum(qa - 2.0 * s * qb + s * s * qc, 0.0)

        # band magnitudes: distance to the nearest level interval, taken only
        # where the band lies in the gap between level intervals j and j+1
        g_lo = np.maximum((j + 0.5) * lo2, j * hi2)
        g_hi = np.maximum(np.minimum((j + 0.5) * hi2, (j + 1.0) * lo2), g_lo)
        mid = np.clip(0.5 * (j * hi2 + (j + 1.0) * lo2), g_lo, g_hi)
        i_mid = idx(mid)
        if np.all((k - 0.5) * (hi - lo) <= 0.5 * lo):
            # narrow intervals: every band lies inside its gap, nothing to clip
            i_lo, i_hi = band_lo, band_hi
        else:
            i_lo, i_hi = idx(g_lo), idx(g_hi)
        band = (self._range_sq(i_lo, i_mid, j * hi2) + self._range_sq(i_mid, i_hi, (j + 1.0) * lo2)).sum(axis=1)
        return fixed + band


def _lloyd_polish(sm, step: float, k: int, max_iter: int = 100):
    """Alternate (assign levels, set step = S1/S2) from a good start, one
    evaluation per iteration; the error never increases, and the fixed point
    is a local optimum. A quick way to a good incumbent: the branch and bound,
    not this polish, guarantees optimality."""
    err, s1, s2 = (float(v[0]) for v in sm.evaluate(np.array([step]), k))
    for _ in range(max_iter):
        if s2 <= 0 or s1 <= 0:
            break
        new = s1 / s2
        new_err, n1, n2 = (float(v[0]) for v in sm.evaluate(np.array([new]), k))
        if not new_err < err or new == step:
            break
        step, err, s1, s2 = new, new_err, n1, n2
    return step, err


def _branch_and_bound(sm, k: int, rtol: float, max_rounds: int) -> tuple[float, bool]:
    """Global minimisation of E(step) over step > 0 (see :func:`l2_optimal_step`).
    Returns the best step and whether the (1 + rtol) certificate was reached."""
    atol = 1e-13 * sm.total_sq
    # Beyond 2 max|w| every weight rounds to 0 (error = sum w**2, the worst), so
    # the optimum lies in (0, 2 max|w|). Start from a geometric grid plus [0, s0].
    pts = np.geomspace(sm.max / (k + 0.5) * 1e-3, 2.0 * sm.max, 65)
    errs = sm.errors(pts, k)
    order = np.argsort(errs)
    best_step, best_err = float(pts[order[0]]), float(errs[order[0]])
    for i in order[:4]:
        s, e = _lloyd_polish(sm, float(pts[i]), k)
        if e < best_err:
            best_step, best_err = s, e
    lo = np.concatenate(([0.0], pts[:-1]))
    hi = pts.copy()
    frac = np.array([0.25, 0.5, 0.75])
    for _ in range(max_rounds):
        lb = sm.lower_bounds(lo, hi, k)
        keep = lb * (1.0 + rtol) + atol < best_err
        lo, hi = lo[keep], hi[keep]
        if lo.size == 0:
            return best_step, True
        # split every surviving interval in 4 and evaluate the new points
        inner = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
        cand = inner.ravel()
        cerr = sm.errors(cand, k)
        i = int(np.argmin(cerr))
        if cerr[i] < best_err:
            best_step, best_err = _lloyd_polish(sm, float(cand[i]), k)
        edges = np.concatenate([lo[:, None], inner, hi[:, None]], axis=1)
        lo, hi = edges[:, :-1].ravel(), edges[:, 1:].ravel()
    return best_step, False


def l2_optimal_step(
    w: torch.Tensor,
    bits: int,
    *,
    rtol: float = 1e-5,
    max_rounds: int = 200,
) -> float:
    """Step size that minimises ``sum((w - quantize(w, bits, step))**2)`` globally.

    Branch and bound on the step axis: the exact error of a step and a lower
    bound of the error over a whole interval of steps both cost O(K log N) on the
    sorted magnitudes with prefix sums. Intervals whose lower bound cannot beat
    the best error found (within ``rtol``) are discarded; the others are split
    until none is left, and new best candidates are polished by the
    alternating (Lloyd) iteration. On return the error of the step is within a
    factor ``1 + rtol`` of the global minimum over all steps > 0 (unless
    ``max_rounds`` is exhausted, which has not been observed).

    b = 1 (binary, ``step * sign(w)``) has the closed form ``mean(|w|)``.
    An all-zero tensor returns 1.0 (every step gives zero error).
    """
    bits = _check_bits(bits)
    if w.numel() == 0:
        raise ValueError("cannot choose a step for an empty tensor")
    if bits == 1:
        m = float(w.detach().abs().to(torch.float64).mean())
        if not math.isfinite(m):
            raise ValueError("weights contain NaN or Inf")
        return m if m > 0 else 1.0
    sm = _SortedMagnitudes(w)
    if not math.isfinite(sm.max):  # NaN and Inf sort last
        raise ValueError("weights contain NaN or Inf")
    if sm.max == 0.0:
        return 1.0
    return _branch_and_bound(sm, max_level(bits), rtol, max_rounds)[0]


# ------------------------------------------------------------------ retraining


class _QuantizeSTE(torch.autograd.Function):
    """Quantize in the forward pass; pass the gradient through unchanged.

    The gradient computed with the quantized weights is applied to the float
    shadow weights as is (identity straight-through estimator, as in Hwang &
    Sung's retraining). Computed in place on one buffer: one allocation and four
    element-wise passes, so retraining costs little more than float training.
    """

    @staticmethod
    def forward(ctx, w, step, bits):  # noqa: D102
        if bits == 1:
            return torch.where(w >= 0, step, -step)
        k = max_level(bits)
        q = torch.div(w, step)
        q.round_().clamp_(-k, k).mul_(step)
        return q

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad, None, None


def quantize_ste(w: torch.Tensor, bits: int, step: torch.Tensor) -> torch.Tensor:
    """:func:`quantize` with a straight-through (identity) gradient w.r.t. ``w``."""
    step_t = torch.as_tensor(step, dtype=w.dtype, device=w.device)
    return _QuantizeSTE.apply(w, step_t, _check_bits(bits))


class _QuantWeight:
    """Mixin: the ``weight`` parameter is the float shadow; the forward pass sees
    ``quantize(weight, bits, step)``. ``step`` is a buffer (saved in state_dict)."""

    bits: int
    step: torch.Tensor

    def _init_quant(self, bits: int, init_step: bool) -> None:
        self.bits = _check_bits(bits)
        self.register_buffer("step", torch.ones((), dtype=self.weight.dtype, device=self.weight.device))
        if init_step:
            self.update_step()

    def update_step(self) -> float:
        """Re-estimate the L2-optimal step from the current float weights."""
        value = l2_optimal_step(self.weight.detach().cpu(), self.bits)
        self.step.fill_(value)
        return value

    def quantized_weight(self) -> torch.Tensor:
        return quantize_ste(self.weight, self.bits, self.step)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, step={float(self.step):.6g}"


class QuantLinear(_QuantWeight, nn.Linear):
    """``nn.Linear`` whose forward pass uses b-bit weights (float bias)."""

    def __init__(self, in_features, out_features, bias=True, *, bits: int, init_step: bool = True,
                 device=None, dtype=None):
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_quant(bits, init_step)

    def forward(self, x):  # noqa: D102
        return F.linear(x, self.quantized_weight(), self.bias)


class QuantConv2d(_QuantWeight, nn.Conv2d):
    """``nn.Conv2d`` whose forward pass uses b-bit weights (float bias)."""

    def __init__(self, *args, bits: int, init_step: bool = True, **kwargs):
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_quant(bits, init_step)

    def forward(self, x):  # noqa: D102
        return self._conv_forward(x, self.quantized_weight(), self.bias)


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and Conv2d layers in definition (= forward, for our models) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _quant_clone(layer: nn.Module, bits: int) -> nn.Module:
    if isinstance(layer, nn.Linear):
        q = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None, bits=bits,
                        init_step=False, device=layer.weight.device, dtype=layer.weight.dtype)
    else:
        q = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                        layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                        layer.padding_mode, bits=bits, init_step=False, device=layer.weight.device,
                        dtype=layer.weight.dtype)
    with torch.no_grad():
        q.weight.copy_(layer.weight)
        if layer.bias is not None:
            q.bias.copy_(layer.bias)
    return q


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def to_quantized(model: nn.Module, bits: int, *, float_first: bool = False,
                 float_last: bool = False) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv2d weights are quantized to ``bits``
    in the forward pass (straight-through gradient to float shadow weights).

    Steps are set per layer to :func:`l2_optimal_step` of the float weights.
    ``float_first`` / ``float_last`` leave the first / last weight layer in float.
    Biases always stay float. The input model is not modified.
    """
    bits = _check_bits(bits)
    qmodel = copy.deepcopy(model)
    layers = _weight_layers(qmodel)
    if not layers:
        raise ValueError("model has no Linear or Conv2d layer to quantize")
    for i, (name, layer) in enumerate(layers):
        if (float_first and i == 0) or (float_last and i == len(layers) - 1):
            continue
        _set_submodule(qmodel, name, _quant_clone(layer, bits))
    update_steps(qmodel)
    return qmodel


def quantized_layers(model: nn.Module) -> list[tuple[str, _QuantWeight]]:
    """The quantized layers of a model made by :func:`to_quantized`, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QuantWeight)]


def update_steps(model: nn.Module) -> dict[str, float]:
    """Re-estimate every quantized layer's step from its float shadow weights
    (at conversion, and at each epoch with ``step_update: epoch``). Layers are
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
        layer.step.fill_(step)
    return {name: step for (name, _), step in zip(layers, steps)}


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes and the step that turn them back into weights: w = step * codes."""

    codes: torch.Tensor
    step: float
    bits: int

    def dequantize(self) -> torch.Tensor:
        return self.codes.to(torch.float32) * self.step


def integer_codes(model: nn.Module) -> dict[str, QuantizedTensor]:
    """Integer codes of every quantized layer (``{layer name: QuantizedTensor}``).

    Codes are int8 up to 8 bits and int16 above; for b = 1 they are {-1, +1}.
    """
    out = {}
    for name, layer in quantized_layers(model):
        step = float(layer.step)
        with torch.no_grad():
            q = quantize(layer.weight.detach(), layer.bits, layer.step)
            codes = torch.round(q / layer.step)
        dtype = torch.int8 if layer.bits <= 8 else torch.int16
        out[name] = QuantizedTensor(codes.to(dtype).cpu(), step, layer.bits)
    return out


def bake(model: nn.Module) -> nn.Module:
    """A plain float model (nn.Linear/nn.Conv2d) whose weights are the quantized
    weights of ``model``: the network that is evaluated and exported."""
    plain = copy.deepcopy(model)
    for name, layer in quantized_layers(plain):
        if isinstance(layer, nn.Linear):
            new = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None,
                            device=layer.weight.device, dtype=layer.weight.dtype)
        else:
            new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                            layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                            layer.padding_mode, device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(quantize(layer.weight, layer.bits, layer.step))
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        _set_submodule(plain, name, new)
    return plain
