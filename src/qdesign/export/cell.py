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
from ..core.io import produced_by_pipeline
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
        where = self.path / "model.pt"
        try:
            model = build_model(fs["model"], fs["width"], self.input_shape, self.n_classes)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"corrupt checkpoint {where}: its model spec does not build ({exc!r})") from None
        try:
            model.load_state_dict(self.checkpoint["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {where} does not fit its model: {str(exc).splitlines()[0]}") from None
        return model.eval()


def load_cell(cell_dir: str | Path) -> Cell:
    """Load a finished cell; a one-line CheckpointError if it is missing or
    corrupt, or if its checkpoint disagrees with itself or with its metrics
    (an edited ``kind``, a quantized network without codes, ...)."""
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
    try:
        metrics = pd.read_parquet(metrics_path).iloc[0].to_dict()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        advice = "delete the cell and rerun" if produced_by_pipeline(metrics_path) else "check the cell folder"
        raise CheckpointError(f"corrupt {metrics_path} ({type(exc).__name__}); {advice}") from None
    _check_checkpoint(cell_dir / "model.pt", ckpt, metrics)
    return Cell(cell_dir, ckpt, metrics)


def _check_checkpoint(path: Path, ckpt: dict, metrics: dict) -> None:
    """One line if the checkpoint's fields disagree with each other or with the
    cell's metrics; no KeyError or TypeError reaches the user."""
    from ..core.specs import FloatSpec  # noqa: PLC0415

    kind = ckpt["kind"]
    if kind not in ("float", "quantized"):
        raise CheckpointError(f"corrupt checkpoint {path}: kind {kind!r}, expected 'float' or 'quantized'")
    quantized = kind == "quantized"
    if quantized:
        missing = [k for k in ("float_spec", "bits", "codes") if k not in ckpt]
        if missing:
            raise CheckpointError(f"corrupt checkpoint {path}: kind 'quantized' without {', '.join(missing)}")
    elif "codes" in ckpt or "float_spec" in ckpt:
        raise CheckpointError(f"corrupt checkpoint {path}: kind 'float' but it holds a quantized network's codes")
    n_quantized = metrics.get("quantized_layers")
    if n_quantized is not None and not pd.isna(n_quantized) and (int(n_quantized) > 0) != quantized:
        raise CheckpointError(
            f"corrupt checkpoint {path}: kind {kind!r}, but metrics.parquet records {int(n_quantized)} quantized layers"
        )
    spec = ckpt["float_spec"] if quantized else ckpt["spec"]
    if not isinstance(spec, dict):
        raise CheckpointError(f"corrupt checkpoint {path}: its spec is not a mapping")
    try:
        FloatSpec.from_dict(spec)
    except CheckpointError as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {exc}") from None
    shape, n_classes = ckpt["input_shape"], ckpt["n_classes"]
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) == 3
        and all(isinstance(v, int) and v > 0 for v in shape)
        and isinstance(n_classes, int)
        and n_classes > 0
    ):
        raise CheckpointError(f"corrupt checkpoint {path}: input shape {shape!r}, {n_classes!r} classes")
    codes = ckpt.get("codes", {})
    if not isinstance(codes, dict) or not all(
        isinstance(e, dict) and all(k in e for k in ("bits", "codes", "step")) for e in codes.values()
    ):
        raise CheckpointError(f"corrupt checkpoint {path}: its codes are not layer -> bits, codes, step")
    if quantized and not codes:
        raise CheckpointError(f"corrupt checkpoint {path}: kind 'quantized' without any quantized layer")


def cell_ops(cell: Cell) -> list[packed.Op]:
    """The forward pass of a cell's network as packed ops, with NumPy weights.

    Quantized layers take their codes and step from the checkpoint and are
    checked against the baked weights; other weight layers are float (32 bits).
    Dropout is dropped (identity at inference).
    """
    from torch import nn  # noqa: PLC0415

    codes = cell.checkpoint.get("codes", {}) if cell.kind == "quantized" else {}
    ops: list[packed.Op] = []
    used: set[str] = set()
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
            used.add(name)
        else:
            raise ExportError(f"{cell.path}: layer {name} ({type(m).__name__}) has no export op")
    unknown = sorted(set(codes) - used)
    if unknown:
        raise CheckpointError(
            f"corrupt checkpoint {cell.path / 'model.pt'}: codes for layers {unknown} it does not have"
        )
    recorded = cell.metrics.get("layer_bits")
    if recorded is not None and np.ndim(recorded) == 1:
        bits = [op.bits for op in ops if op.kind in (packed.LINEAR, packed.CONV2D)]
        if bits != [int(b) for b in recorded]:
            raise CheckpointError(
                f"corrupt checkpoint {cell.path / 'model.pt'}: its layers have {bits} bits, metrics.parquet records "
                f"{[int(b) for b in recorded]} (damaged or edited?)"
            )
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
        try:
            op.bits = int(entry["bits"])
            op.codes = entry["codes"].cpu().numpy().astype(np.int16).reshape(op.shape)
            op.step = float(np.float32(entry["step"]))
        except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"corrupt checkpoint {cell.path / 'model.pt'}: layer {name}'s codes ({type(exc).__name__})"
            ) from None
        if not np.array_equal(op.codes.astype(np.float32) * np.float32(op.step), weight):
            raise CheckpointError(
                f"corrupt checkpoint {cell.path / 'model.pt'}: layer {name}'s codes x step "
                "differ from its baked weights"
            )
    return op
