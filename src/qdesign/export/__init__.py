"""Export a finished cell as real bytes: the packed integer format (hardware
deployment, read by a NumPy-only reader) or ONNX with DequantizeLinear (ONNX
Runtime). ``docs/export.md`` specifies both.

Import-light on purpose: ``qdesign.export.packed`` (the reader) needs NumPy
only; torch, pandas and onnx are imported by the functions that need them.
"""

from __future__ import annotations

from pathlib import Path

FORMATS = ("packed", "onnx")
SUFFIXES = {"packed": ".qdpk", "onnx": ".onnx"}

__all__ = ["FORMATS", "SUFFIXES", "export_cell"]


def export_cell(cell_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the network of ``cell_dir`` (a finished float or quantized cell)
    to ``out`` in format ``fmt`` ("packed" or "onnx"); returns ``out``.

    Written atomically: on any error nothing is left at ``out``. Bad requests
    raise :class:`qdesign.core.errors.ExportError`, a missing or corrupt cell
    :class:`qdesign.core.errors.CheckpointError`, each with one line.
    """
    from ..core.errors import ExportError  # noqa: PLC0415
    from ..core.io import atomic_path  # noqa: PLC0415
    from . import packed  # noqa: PLC0415
    from .cell import cell_ops, load_cell  # noqa: PLC0415

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"export target {out} is a directory; give a file name")
    cell = load_cell(cell_dir)
    unsupported = [b for b in cell.quantized_bits if not 1 <= b <= packed.MAX_PACKED_BITS]
    if unsupported:
        raise ExportError(
            f"{cell.path}: {unsupported[0]}-bit weights; export supports 1..{packed.MAX_PACKED_BITS} bits"
        )
    ops = cell_ops(cell)
    try:
        if fmt == "packed":
            data = packed.encode(ops, cell.input_shape, cell.n_classes)
        else:
            from .onnx_export import build_onnx  # noqa: PLC0415

            data = build_onnx(ops, cell.input_shape, cell.n_classes, name=cell.path.name).SerializeToString()
    except packed.PackedFormatError as exc:
        raise ExportError(f"{cell.path}: {exc}") from None
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return out
