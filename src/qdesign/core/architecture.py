"""The one description of the two model families, without torch.

:func:`layer_specs` lists every module of the network in order (weight layers,
activations, pooling, flatten, dropout) with its shapes and costs.
:func:`qdesign.nn.models.build_model` turns that list into ``nn`` modules one for
one, and :mod:`qdesign.run.resources` sizes cluster jobs from the same list, so
parameter counts, multiply-accumulates and activation sizes cannot drift
apart from the network that is trained.

* FCDNN: ``depth`` hidden layers of ``width`` ReLU units.
* CNN: blocks of ``convs_per_block`` same-padded convolutions with
  ``width * channel_multipliers[i]`` feature maps, each block followed by 2x2
  pooling; then an optional hidden fully-connected layer and the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .registry import DATASETS

WEIGHT_KINDS = ("linear", "conv")

TRAIN_PARAM_COPIES = 7
"""float32 copies of every parameter alive while a cell trains: weights, grads,
2 Adam moments, best-epoch snapshot, quantized copy, checkpoint buffer
(calibrated on measured jobs, docs/slurm.md). The config refuses a width whose
copies exceed the machine's memory; the cluster request is sized with it."""


@dataclass(frozen=True)
class LayerSpec:
    """One module. ``out_shape`` is the per-example output shape ((C, H, W) or
    (N,)); ``activations`` its number of elements; ``macs`` the multiply-
    accumulates of one forward pass of one example."""

    kind: str  # linear | conv | relu | dropout | maxpool | avgpool | flatten
    n_in: int  # input features (linear) or channels (conv); elements otherwise
    n_out: int  # output features or channels; elements otherwise
    out_shape: tuple[int, ...]
    kernel: int = 0
    padding: int = 0
    p: float = 0.0  # dropout probability
    n_weights: int = 0
    n_biases: int = 0
    macs: int = 0

    @property
    def activations(self) -> int:
        return math.prod(self.out_shape)

    @property
    def n_params(self) -> int:
        return self.n_weights + self.n_biases


def layer_specs(model_cfg: Mapping, width: int, input_shape: tuple[int, ...], n_classes: int) -> list[LayerSpec]:
    """Every module of the float network of one width, in order. ``input_shape`` is (C, H, W)."""
    kind = model_cfg["type"]
    dropout = float(model_cfg.get("dropout", 0.0))
    width = int(width)
    layers: list[LayerSpec] = []

    def elementwise(kind_: str, shape: tuple[int, ...], p: float = 0.0) -> LayerSpec:
        n = math.prod(shape)
        return LayerSpec(kind_, n, n, shape, p=p)

    def linear(n_in: int, n_out: int) -> LayerSpec:
        return LayerSpec("linear", n_in, n_out, (n_out,), n_weights=n_in * n_out, n_biases=n_out, macs=n_in * n_out)

    def act(shape: tuple[int, ...]) -> list[LayerSpec]:
        return [elementwise("relu", shape)] + ([elementwise("dropout", shape, dropout)] if dropout > 0 else [])

    if kind == "fcdnn":
        n_in = math.prod(input_shape)
        layers.append(elementwise("flatten", (n_in,)))
        for _ in range(int(model_cfg["depth"])):
            layers += [linear(n_in, width), *act((width,))]
            n_in = width
        layers.append(linear(n_in, n_classes))
    elif kind == "cnn":
        c, h, w = input_shape
        k = int(model_cfg["kernel_size"])
        pool = "maxpool" if model_cfg["pool"] == "max" else "avgpool"
        for mult in model_cfg["channel_multipliers"]:
            out = width * int(mult)
            for _ in range(int(model_cfg["convs_per_block"])):
                # same padding for odd kernels: the output keeps H x W
                ho, wo = h + 2 * (k // 2) - k + 1, w + 2 * (k // 2) - k + 1
                layers += [
                    LayerSpec(
                        "conv",
                        c,
                        out,
                        (out, ho, wo),
                        kernel=k,
                        padding=k // 2,
                        n_weights=c * out * k * k,
                        n_biases=out,
                        macs=c * out * k * k * ho * wo,
                    ),
                    elementwise("relu", (out, ho, wo)),
                ]
                c, h, w = out, ho, wo
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"too many pooling stages for input {tuple(input_shape)}")
            layers.append(LayerSpec(pool, c, c, (c, h, w), kernel=2))
        n_in = c * h * w
        layers.append(elementwise("flatten", (n_in,)))
        fc = int(model_cfg.get("fc_units", 0))
        if fc > 0:
            layers += [linear(n_in, fc), *act((fc,))]
            n_in = fc
        layers.append(linear(n_in, n_classes))
    else:
        raise ValueError(f"unknown model type {kind!r}")
    return layers


def study_layer_specs(study: Mapping, width: int) -> list[LayerSpec]:
    """:func:`layer_specs` of a study's network at ``width``, with its
    dataset's input shape and class count (:data:`qdesign.core.registry.DATASETS`)."""
    info = DATASETS[study["dataset"]]
    return layer_specs(study["model"], int(width), info.input_shape, info.n_classes)


def weight_specs(specs: list[LayerSpec]) -> list[LayerSpec]:
    """The Linear/Conv2d layers only, in order (what quantization converts)."""
    return [s for s in specs if s.kind in WEIGHT_KINDS]


def n_params(specs: list[LayerSpec]) -> int:
    return sum(s.n_params for s in specs)


def forward_macs(specs: list[LayerSpec]) -> int:
    """Multiply-accumulates of one forward pass of one example."""
    return sum(s.macs for s in specs)


def training_flops_per_example(
    model_cfg: Mapping, width: int, input_shape: tuple[int, ...], n_classes: int = 10
) -> float:
    """MACs x 2 FLOPs x 3 (forward + two backward matmuls) per example."""
    return 6.0 * forward_macs(layer_specs(model_cfg, width, input_shape, n_classes))
