"""The two model families of the study, built from (config, width).

* FCDNN: ``depth`` hidden layers of ``width`` ReLU units.
* CNN: blocks of ``convs_per_block`` same-padded convolutions with
  ``width * channel_multipliers[i]`` feature maps, each block followed by 2x2
  pooling; then an optional hidden fully-connected layer and the classifier.

Every weight layer is an ``nn.Linear`` or ``nn.Conv2d`` (with bias), which is
what :mod:`qdesign.quantize` converts.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn


def build_model(model_cfg: Mapping, width: int, input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """Build the float network of one width. ``input_shape`` is (C, H, W)."""
    kind = model_cfg["type"]
    dropout = float(model_cfg.get("dropout", 0.0))

    def act():
        return [nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])

    layers: list[nn.Module] = []
    if kind == "fcdnn":
        n_in = 1
        for d in input_shape:
            n_in *= d
        layers.append(nn.Flatten())
        for _ in range(int(model_cfg["depth"])):
            layers += [nn.Linear(n_in, width), *act()]
            n_in = width
        layers.append(nn.Linear(n_in, n_classes))
    elif kind == "cnn":
        c, h, w = input_shape
        k = int(model_cfg["kernel_size"])
        pool = nn.MaxPool2d if model_cfg["pool"] == "max" else nn.AvgPool2d
        for mult in model_cfg["channel_multipliers"]:
            out = width * int(mult)
            for _ in range(int(model_cfg["convs_per_block"])):
                layers += [nn.Conv2d(c, out, k, padding=k // 2), nn.ReLU()]
                c = out
            layers.append(pool(2))
            h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"too many pooling stages for input {input_shape}")
        layers.append(nn.Flatten())
        n_in = c * h * w
        fc = int(model_cfg.get("fc_units", 0))
        if fc > 0:
            layers += [nn.Linear(n_in, fc), *act()]
            n_in = fc
        layers.append(nn.Linear(n_in, n_classes))
    else:
        raise ValueError(f"unknown model type {kind!r}")
    return nn.Sequential(*layers)


def weight_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every weight layer (Linear or Conv2d, quantized ones
    included: they subclass them), in definition (= forward) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def weight_layers(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, n_weights, n_biases) of every weight layer, in order."""
    return [(n, m.weight.numel(), 0 if m.bias is None else m.bias.numel()) for n, m in weight_modules(model)]


def count_weights(model: nn.Module) -> tuple[int, int]:
    """(n_weights, n_biases) over all weight layers."""
    layers = weight_layers(model)
    return sum(w for _, w, _ in layers), sum(b for _, _, b in layers)

