"""The two model families of the study as torch modules, built from the one
torch-free description in :mod:`qdesign.core.architecture` (see there for the
families; resources are sized from the same description).

Every weight layer is an ``nn.Linear`` or ``nn.Conv2d`` (with bias), which is
what :mod:`qdesign.quantize` converts.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..core.architecture import LayerSpec, layer_specs
from ..quantize.layers import weight_modules


def build_model(model_cfg: Mapping, width: int, input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """Build the float network of one width. ``input_shape`` is (C, H, W)."""
    return nn.Sequential(*(_module(s) for s in layer_specs(model_cfg, width, input_shape, n_classes)))


def _module(spec: LayerSpec) -> nn.Module:
    """The torch module of one entry of :func:`qdesign.core.architecture.layer_specs`."""
    if spec.kind == "linear":
        return nn.Linear(spec.n_in, spec.n_out)
    if spec.kind == "conv":
        return nn.Conv2d(spec.n_in, spec.n_out, spec.kernel, padding=spec.padding)
    if spec.kind == "relu":
        return nn.ReLU()
    if spec.kind == "dropout":
        return nn.Dropout(spec.p)
    if spec.kind == "maxpool":
        return nn.MaxPool2d(spec.kernel)
    if spec.kind == "avgpool":
        return nn.AvgPool2d(spec.kernel)
    if spec.kind == "flatten":
        return nn.Flatten()
    raise ValueError(f"unknown layer kind {spec.kind!r}")


def weight_layers(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, n_weights, n_biases) of every weight layer, in order."""
    return [(n, m.weight.numel(), 0 if m.bias is None else m.bias.numel()) for n, m in weight_modules(model)]


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(n_weights, n_biases) over all weight layers."""
    layers = weight_layers(model)
    return sum(w for _, w, _ in layers), sum(b for _, _, b in layers)
