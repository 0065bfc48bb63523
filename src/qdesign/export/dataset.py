"""The prepared dataset an export reads: the input normalisation both formats
carry, and the raw test images verification runs the exported file on.

A file given as the dataset is identified before it is used: a file of another
kind (a study's table, a splits file, a checkpoint, an export) is named as what
it is, and no message suggests deleting it (it may be a file the user needs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from ..core.layout import RESULTS, data_file
from ..core.registry import DATASETS

_KEYS = ("name", "n_classes", "x_test", "y_test", "mean", "std")  # what an export needs of it
_MAGICS = {
    b"PAR1": "a Parquet table (a study's summary, ecr or frontier table?)",
    b"QDPK": "a packed export (.qdpk)",
}
_ZIP = b"PK\x03\x04"  # torch.save's format
_HINT = "give the prepared dataset, results/data/<dataset>.pt"


def read_prepared(path: str | Path) -> dict:
    """A prepared dataset file (:func:`qdesign.nn.data.prepare_dataset`), or a
    one-line DatasetError that says what the file is instead."""
    import torch  # noqa: PLC0415

    from ..nn.data import FORMAT_VERSION  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        raise DatasetError(f"prepared dataset {path} {what}: {_HINT}")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    if head in _MAGICS:
        raise DatasetError(f"{path} is {_MAGICS[head]}, not a prepared dataset: {_HINT}")
    if head != _ZIP:
        raise DatasetError(f"{path} is not a prepared dataset (not a PyTorch file): {_HINT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise DatasetError(
            f"{path} is not a prepared dataset PyTorch can read ({type(exc).__name__}): check that it is the "
            f"right file ({_HINT})"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path} is not a prepared dataset (a {type(obj).__name__}): {_HINT}")
    if obj.get("kind") == "splits":
        raise DatasetError(
            f"{path} is a study's split file (normalised, no raw pixels), not a prepared dataset: {_HINT}"
        )
    if "state_dict" in obj:
        raise DatasetError(f"{path} is a cell's checkpoint, not a prepared dataset: {_HINT}")
    missing = [k for k in (*_KEYS, "format_version") if k not in obj]
    if missing:
        raise DatasetError(f"{path} is not a prepared dataset (it has no {', '.join(missing)}): {_HINT}")
    if obj["format_version"] != FORMAT_VERSION:
        raise DatasetError(
            f"{path} is a prepared dataset of format {obj['format_version']}, this version reads {FORMAT_VERSION}: "
            "prepare it again (python -m qdesign prepare-data)"
        )
    return obj


def prepared_for_cell(cell, path: str | Path) -> dict:
    """The prepared dataset ``path``, checked to be the one ``cell`` was
    trained on as far as the file can tell: its dataset, image shape, classes
    and (digits, whose test split and statistics depend on it) split seed."""
    payload = read_prepared(path)
    spec = cell.model_spec
    name = spec["dataset"]
    if payload["name"] != name:
        raise DatasetError(f"{path} holds dataset '{payload['name']}', cell {cell.path} was trained on '{name}'")
    if str(payload["x_test"].dtype) != "torch.uint8":
        raise DatasetError(f"{path} holds {payload['x_test'].dtype} test images, not the raw uint8 pixels of a dataset")
    shape = tuple(int(v) for v in payload["x_test"].shape[1:])
    if shape != cell.input_shape or int(payload["n_classes"]) != cell.n_classes:
        raise DatasetError(
            f"{path} has images of shape {shape} in {payload['n_classes']} classes, cell {cell.path} takes "
            f"{cell.input_shape} in {cell.n_classes}"
        )
    seed = payload.get("split_seed")
    if DATASETS[name].reader == "digits" and seed is not None and int(seed) != int(spec["split_seed"]):
        raise DatasetError(
            f"{path} was prepared with split_seed {seed}, cell {cell.path} was trained on the digits split of "
            f"split_seed {spec['split_seed']} (another test set and normalisation): prepare it with "
            f"python -m qdesign prepare-data --dataset digits --split-seed {spec['split_seed']} --out FILE"
        )
    return payload


def default_data_path(cell) -> Path | None:
    """The prepared dataset beside a cell of the pipeline's results tree
    (``results/data/<dataset>.pt`` of the ``results`` folder holding the cell),
    or None when the cell is not in one or the file is not there."""
    parents = list(Path(cell.path).resolve().parents)[:5]
    for p in parents:
        if p.name == RESULTS:
            candidate = p.parent / data_file(cell.model_spec["dataset"])
            return candidate if candidate.is_file() else None
    return None


def normalisation(payload: dict) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel mean and std of a prepared dataset, as the float32
    values PyTorch normalised the cell's data with."""
    mean = np.asarray(payload["mean"], dtype=np.float64).astype(np.float32)
    std = np.asarray(payload["std"], dtype=np.float64).astype(np.float32)
    return mean, std


def raw_test_set(payload: dict) -> tuple[np.ndarray, np.ndarray]:
    """The test images as stored (uint8, N x C x H x W) and their labels."""
    return payload["x_test"].numpy(), payload["y_test"].numpy()
