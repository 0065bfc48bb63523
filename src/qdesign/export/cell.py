"""A cell directory as an exportable network: checkpoint, model and layer list.

This is the only export module that needs torch to read its input (the cell's
``model.pt``); the packed reader and the ONNX graph builder work from the
NumPy op list it produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.constants import CHECKPOINT_VERSION, FLOAT_BITS
from ..core.errors import CheckpointError, ExportError
from ..nn.torchio import torch_load_checked
from . import packed


@dataclass
class Cell:
    """What export needs from a cell directory."""

    path: Path
    checkpoint: dict
    metrics: dict

    @property
    def kind(self) -> str:
        return self.checkpoint["kind"]

    @property
    def quantized_bits(self) -> list[int]:
        """Word length of every quantized layer, first to last (several values
        for a mixed-precision cell; empty for a float network)."""
        return [int(entry["bits"]) for entry in self.checkpoint.get("codes", {}).values()]

    @property
    def model_spec(self) -> dict:
        """The float spec (model config and width) the network was built from."""
        return self.checkpoint["float_spec"] if self.kind == "quantized" else self.checkpoint["spec"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.checkpoint["input_shape"])

    @property
    def n_classes(self) -> int:
        return int(self.checkpoint["n_classes"])

    def model(self):
        """The baked float network (weights = step * codes), in eval mode."""
        from ..nn.models import build_model  # noqa: PLC0415

        fs = self.model_spec
        model = build_model(fs["model"], fs["width"], self.input_shape, self.n_classes)
        try:
            model.load_state_dict(self.checkpoint["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {self.path / 'model.pt'} does not fit its model: {str(exc).splitlines()[0]}"
            ) from None
        return model.eval()


def load_cell(cell_dir: str | Path) -> Cell:
    """Load a finished cell; a one-line CheckpointError if it is missing or corrupt."""
    cell_dir = Path(cell_dir)
    if not cell_dir.is_dir():
        raise CheckpointError(f"cell directory not found: {cell_dir}")
    metrics_path = cell_dir / "metrics.parquet"
    if not metrics_path.is_file():
        raise CheckpointError(f"cell {cell_dir} has no metrics.parquet (unfinished cell?)")
    ckpt = torch_load_checked(
        cell_dir / "model.pt",
        "checkpoint",
        CheckpointError,
        ("state_dict", "spec", "kind", "input_shape", "n_classes"),
        CHECKPOINT_VERSION,
    )
    if ckpt["kind"] not in ("float", "quantized") or (
        ckpt["kind"] == "quantized" and any(k not in ckpt for k in ("float_spec", "bits", "codes"))
    ):
        raise CheckpointError(f"corrupt checkpoint {cell_dir / 'model.pt'} (kind {ckpt['kind']!r} or its keys)")
    try:
        metrics = pd.read_parquet(metrics_path).iloc[0].to_dict()
    except Exception as exc:
        raise CheckpointError(f"corrupt {metrics_path} ({type(exc).__name__}); delete the cell and rerun") from None
    return Cell(cell_dir, ckpt, metrics)


def cell_ops(cell: Cell) -> list[packed.Op]:
    """The forward pass of a cell's network as packed ops, with NumPy weights.

    Quantized layers take their codes and step from the checkpoint and are
    checked against the baked weights; other weight layers are float (32 bits).
    Dropout is dropped (identity at inference).
    """
    from torch import nn  # noqa: PLC0415

    codes = cell.checkpoint.get("codes", {}) if cell.kind == "quantized" else {}
    ops: list[packed.Op] = []
    for name, m in cell.model().named_children():
        if isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1):
                raise ExportError(f"{cell.path}: layer {name} flattens dims {m.start_dim}..{m.end_dim}, not 1..-1")
            ops.append(packed.Op(packed.FLATTEN))
        elif isinstance(m, nn.ReLU):
            ops.append(packed.Op(packed.RELU))
        elif isinstance(m, nn.Dropout):
            continue
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            ops.append(_pool_op(cell, name, m))
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            ops.append(_weight_op(cell, name, m, codes.get(name)))
        else:
            raise ExportError(f"{cell.path}: layer {name} ({type(m).__name__}) has no export op")
    return ops


def _pool_op(cell: Cell, name: str, m) -> packed.Op:
    from torch import nn  # noqa: PLC0415

    def one(v):
        v = (v, v) if isinstance(v, int) else tuple(v)
        return v[0] if v[0] == v[1] else None

    k, s, p = one(m.kernel_size), one(m.stride), one(m.padding)
    extra = m.dilation != 1 if isinstance(m, nn.MaxPool2d) else not m.count_include_pad and p
    if k is None or s is None or p != 0 or m.ceil_mode or extra:
        raise ExportError(f"{cell.path}: pooling layer {name} is not square, unpadded and floor-mode")
    return packed.Op(packed.MAXPOOL if isinstance(m, nn.MaxPool2d) else packed.AVGPOOL, kernel=k, stride=s)


def _weight_op(cell: Cell, name: str, m, entry) -> packed.Op:
    from torch import nn  # noqa: PLC0415

    kind = packed.LINEAR if isinstance(m, nn.Linear) else packed.CONV2D
    padding = 0
    if kind == packed.CONV2D:
        if (
            m.stride != (1, 1)
            or m.dilation != (1, 1)
            or m.groups != 1
            or m.padding_mode != "zeros"
            or isinstance(m.padding, str)
            or m.padding[0] != m.padding[1]
        ):
            raise ExportError(f"{cell.path}: convolution {name} is not stride 1, square-padded and ungrouped")
        padding = m.padding[0]
    if m.bias is None:
        raise ExportError(f"{cell.path}: layer {name} has no bias")
    weight = m.weight.detach().cpu().numpy().astype(np.float32)
    op = packed.Op(
        kind,
        bits=FLOAT_BITS,
        padding=padding,
        shape=tuple(weight.shape),
        weight=weight,
        bias=m.bias.detach().cpu().numpy().astype(np.float32),
    )
    if entry is not None:
        op.bits = int(entry["bits"])
        op.codes = entry["codes"].cpu().numpy().astype(np.int16).reshape(op.shape)
        op.step = float(np.float32(entry["step"]))
        if not np.array_equal(op.codes.astype(np.float32) * np.float32(op.step), weight):
            raise CheckpointError(
                f"corrupt checkpoint {cell.path / 'model.pt'}: layer {name}'s codes x step "
                "differ from its baked weights"
            )
    return op


def recorded_memory_bits(cell: Cell) -> int:
    return int(cell.metrics["memory_bits_total"])
