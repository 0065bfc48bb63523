"""Check an exported file against its cell: same predictions on every test
example, same test error as recorded, and (packed) the size the memory model
predicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import CheckpointError, ExportError
from . import packed
from .cell import Cell, cell_ops, load_cell


@dataclass
class ExportCheck:
    """One export checked on the cell's test set. ``n_differ`` counts test
    examples whose predicted class differs from the cell's PyTorch model."""

    fmt: str
    path: str
    n_test: int
    recorded_error: float
    torch_error: float
    export_error: float
    n_differ: int
    max_abs_logit_diff: float
    file_bytes: int
    expected_bytes: int | None
    memory_bits_total: int

    @property
    def ok(self) -> bool:
        size_ok = self.expected_bytes is None or self.file_bytes == self.expected_bytes
        return self.n_differ == 0 and self.export_error == self.recorded_error and size_ok

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def expected_packed_bytes(cell: Cell) -> int:
    """Size of the cell's packed file from the memory model: each weight layer's
    ``memory_bits_total`` (qdesign.analysis.ecr.layer_memory_bits) / 8 rounded up, plus
    :func:`qdesign.export.packed.overhead_bytes`."""
    from ..analysis.ecr import layer_memory_bits  # noqa: PLC0415

    ops = cell_ops(cell)
    weight_ops = [op for op in ops if op.kind in (packed.LINEAR, packed.CONV2D)]
    payload = sum(-(-layer_memory_bits(op.n_weights, op.shape[0], op.bits)[1] // 8) for op in weight_ops)
    return payload + packed.overhead_bytes(len(ops), len(weight_ops))


def cell_test_data(cell: Cell, data_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The cell's normalised test inputs (float32, N C H W) and labels."""
    from ..nn.data import load_prepared, make_splits  # noqa: PLC0415

    spec = cell.model_spec
    payload = load_prepared(data_path)
    if payload["name"] != spec["dataset"]:
        raise ExportError(f"{data_path} holds dataset '{payload['name']}', cell {cell.path} needs '{spec['dataset']}'")
    split = make_splits(payload, spec["val_fraction"], spec["split_seed"], spec.get("train_subset"))
    return split.x_test.numpy(), split.y_test.numpy()


def torch_logits(cell: Cell, x: np.ndarray) -> np.ndarray:
    """Logits of the cell's PyTorch model, computed as the cell computed its
    test error: its memory layout (:func:`qdesign.nn.train.evaluation_layout`:
    a convolution in NCHW runs another kernel than in channels-last, rounding
    differently), its batches and its forward pass
    (:func:`qdesign.nn.train.logits`)."""
    import torch  # noqa: PLC0415

    from ..nn.train import evaluation_layout, logits  # noqa: PLC0415

    ckpt = cell.checkpoint
    # a quantized cell records the convolutions it ran in NCHW; one retrained before quantized
    # CNNs went channels-last (no record) ran every quantized layer in NCHW
    nchw = ckpt.get("nchw_layers", ckpt.get("codes", {})) if cell.kind == "quantized" else ()
    model = evaluation_layout(cell.model(), nchw)
    return logits(model, torch.from_numpy(x)).numpy()


def export_logits(fmt: str, path: str | Path, x: np.ndarray) -> np.ndarray:
    if fmt == "packed":
        try:
            return packed.read_packed(path).logits(x)
        except packed.PackedFormatError as exc:
            raise ExportError(str(exc)) from None
    from .onnx_export import onnx_logits  # noqa: PLC0415

    return onnx_logits(path, x)


def verify_export(
    cell_dir: str | Path,
    path: str | Path,
    data_path: str | Path,
    fmt: str | None = None,
    cell: Cell | None = None,
    torch_out: np.ndarray | None = None,
) -> ExportCheck:
    """Run an exported file on the cell's test set and compare it with the cell.

    ``fmt`` defaults from the suffix (.onnx -> onnx, else packed). Returns an
    :class:`ExportCheck`; its ``ok`` is the pass/fail verdict.
    """
    path = Path(path)
    fmt = fmt or ("onnx" if path.suffix == ".onnx" else "packed")
    if not path.is_file():
        raise ExportError(f"exported file not found: {path}")
    cell = cell or load_cell(cell_dir)
    x, y = cell_test_data(cell, data_path)
    ref = torch_out if torch_out is not None else torch_logits(cell, x)
    got = export_logits(fmt, path, x)
    if got.shape != ref.shape:
        raise ExportError(f"{path} gives outputs of shape {got.shape}, the cell's model {ref.shape}")
    ref_pred, got_pred = ref.argmax(axis=1), got.argmax(axis=1)
    n = int(y.shape[0])
    return ExportCheck(
        fmt=fmt,
        path=str(path),
        n_test=n,
        recorded_error=float(cell.metrics["test_error"]),
        torch_error=float((ref_pred != y).sum()) / max(1, n),
        export_error=float((got_pred != y).sum()) / max(1, n),
        n_differ=int((ref_pred != got_pred).sum()),
        max_abs_logit_diff=float(np.abs(got.astype(np.float64) - ref).max()) if n else 0.0,
        file_bytes=path.stat().st_size,
        expected_bytes=expected_packed_bytes(cell) if fmt == "packed" else None,
        memory_bits_total=int(cell.metrics["memory_bits_total"]),
    )


def check_export(cell_dir: str | Path, path: str | Path, data_path: str | Path, fmt: str | None = None) -> ExportCheck:
    """:func:`verify_export`, raising a one-line ExportError unless it passes."""
    res = verify_export(cell_dir, path, data_path, fmt)
    if not res.ok:
        raise ExportError(
            f"{path}: export check failed ({res.n_differ} of {res.n_test} predictions differ, "
            f"error {res.export_error} vs recorded {res.recorded_error}, "
            f"{res.file_bytes} bytes vs expected {res.expected_bytes})"
        )
    return res


__all__ = [
    "CheckpointError",
    "ExportCheck",
    "check_export",
    "expected_packed_bytes",
    "cell_test_data",
    "torch_logits",
    "verify_export",
]
