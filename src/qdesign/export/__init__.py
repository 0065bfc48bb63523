"""Export a finished cell as real bytes: the packed integer format (hardware
deployment, read by a NumPy-only reader) or ONNX with DequantizeLinear (ONNX
Runtime). Both carry the input normalisation of the prepared dataset the cell
was trained on, so they take raw pixels. ``docs/export.md`` specifies both.

Import-light on purpose: ``qdesign.export.packed`` (the reader) needs NumPy
only; torch, pandas and onnx are imported by the functions that need them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

FORMATS = ("packed", "onnx")
SUFFIXES = {"packed": ".qdpk", "onnx": ".onnx"}

__all__ = ["FORMATS", "SUFFIXES", "export_cell", "export_verified"]


def export_cell(
    cell_dir: str | Path, fmt: str, out: str | Path, data: str | Path | None = None, *, force: bool = False
) -> Path:
    """Export the network of ``cell_dir`` (a finished float or quantized cell)
    to ``out`` in format ``fmt`` ("packed" or "onnx"); returns ``out``.

    ``data``: the prepared dataset the cell was trained on, whose per-channel
    mean and std the file carries (default: ``results/data/<dataset>.pt`` of
    the results folder holding the cell). ``out`` is written atomically and
    only if it is new (``force``: an existing regular file is replaced; never
    an input of the export, never a directory, link, device or pipe). Bad
    requests raise :class:`qdesign.core.errors.ExportError`, a missing or
    corrupt cell :class:`qdesign.core.errors.CheckpointError`, a wrong dataset
    :class:`qdesign.core.errors.DatasetError`, each with one line; on any
    error nothing is left at ``out``.
    """
    path, _ = _export(cell_dir, fmt, out, data, force, verify=False)
    return path


def export_verified(
    cell_dir: str | Path, fmt: str, out: str | Path, data: str | Path | None = None, *, force: bool = False
):
    """:func:`export_cell`, then the file is run on the cell's raw test pixels
    and checked (:func:`qdesign.export.verify.check_export`) *before* it is
    moved to ``out``: an export that fails its check leaves nothing at ``out``
    and a file replaced with ``force`` untouched. Returns the ExportCheck."""
    _, check = _export(cell_dir, fmt, out, data, force, verify=True)
    return check


def _export(cell_dir, fmt: str, out, data, force: bool, verify: bool):
    from ..core.errors import ExportError  # noqa: PLC0415
    from . import packed  # noqa: PLC0415
    from .cell import cell_ops, load_cell  # noqa: PLC0415
    from .dataset import default_data_path, normalisation, prepared_for_cell  # noqa: PLC0415
    from .target import check_target, write_target  # noqa: PLC0415

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cell_dir, out = Path(cell_dir), Path(out)
    inputs = [cell_dir / "model.pt", cell_dir / "metrics.parquet", *([Path(data)] if data is not None else [])]
    check_target(out, inputs, force)  # before any work
    cell = load_cell(cell_dir)
    if data is None:
        data = default_data_path(cell)
        if data is None:
            raise ExportError(
                f"{cell_dir}: an export carries the input normalisation of the prepared dataset the cell was "
                f"trained on; give that file (--data results/data/{cell.model_spec['dataset']}.pt)"
            )
        inputs.append(Path(data))
        check_target(out, inputs, force)
    payload = prepared_for_cell(cell, data)
    mean, std = normalisation(payload)
    unsupported = [b for b in cell.quantized_bits if not 1 <= b <= packed.MAX_PACKED_BITS]
    if unsupported:
        raise ExportError(
            f"{cell.path}: {unsupported[0]}-bit weights; export supports 1..{packed.MAX_PACKED_BITS} bits"
        )
    ops = cell_ops(cell)
    try:
        if fmt == "packed":
            blob = packed.encode(ops, cell.input_shape, cell.n_classes, mean, std)
        else:
            from .onnx_export import build_onnx  # noqa: PLC0415

            meta = {
                "qdesign.dataset": cell.model_spec["dataset"],
                "qdesign.cell": str(cell.path),
                "qdesign.recorded_test_error": repr(float(cell.metrics["test_error"])),
            }
            model = build_onnx(ops, cell.input_shape, cell.n_classes, mean, std, cell.path.name, meta)
            blob = model.SerializeToString()
    except packed.PackedFormatError as exc:
        raise ExportError(f"{cell.path}: {exc}") from None

    def run_check(tmp: Path):
        from .verify import verify_export  # noqa: PLC0415

        res = replace(verify_export(cell_dir, tmp, data, fmt, cell=cell, payload=payload), path=str(out))
        if not res.ok:
            raise ExportError(f"export check failed: {res.problem}")
        return res

    check = write_target(out, lambda tmp: tmp.write_bytes(blob), inputs, force, run_check if verify else None)
    return out, check
