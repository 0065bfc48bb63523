"""Datasets: preparation into one cached tensor file, and the seeded splits.

``prepare_dataset`` reads a dataset once (scikit-learn's bundled digits, or
MNIST / Fashion-MNIST / CIFAR-10 in torchvision's on-disk layout) and keeps the
raw uint8 images, the labels and the per-channel normalisation statistics of
the training pool. Training jobs load that file (milliseconds) and normalise
and split it with :func:`make_splits`; they never import torchvision. The
files on disk are read here directly (IDX and CIFAR pickle formats), so
torchvision is imported only to download a dataset that is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DatasetError
from ..core.registry import DATASETS, published_file
from .torchio import torch_load_checked, torch_save_atomic

FORMAT_VERSION = 1
SPLITS_FORMAT_VERSION = 1


# ------------------------------------------------------------------ readers


_IDX_MAGIC = {"images": 0x0803, "labels": 0x0801}  # unsigned bytes (0x08), 3 or 1 dimensions


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise DatasetError(f"{path} cannot be read ({reason}); replace it with the original file") from None


def check_published(path: Path, content: bytes, dataset: str) -> None:
    """Refuse a file that is not the published one of ``dataset`` (its md5 in
    :data:`qdesign.core.registry.DATASETS`), naming what it looks like instead:
    another dataset's file (Fashion-MNIST in MNIST's folder), another file of
    this dataset (a test file in the train slot), or no published file at all.
    Costs one md5 of bytes already read, once, when the dataset is prepared."""
    want = DATASETS[dataset].checksums.get(path.name)
    got = hashlib.md5(content, usedforsecurity=False).hexdigest()
    if want is None or got == want:
        return
    found = published_file(got)
    if found is None:
        looks = "no published file of a dataset qdesign knows (modified, truncated or another data set)"
    else:
        looks = f"{found[0]}'s {found[1]}"
    raise DatasetError(
        f"{path} is not {dataset}'s published {path.name} (md5 {got}): it looks like {looks}; put the original "
        "file there, or set verify_checksums: false in the config to use your own files"
    )


def _read_idx(path: Path, kind: str, verify: str | None = None) -> np.ndarray:
    """Read an IDX file of ``kind`` "images" or "labels" (uncompressed, or the
    .gz beside it); anything else is a one-line DatasetError naming the file.
    ``verify``: the dataset whose published checksum the file must have."""
    content = _read_file(path)
    if verify is not None:
        check_published(path, content, verify)
    try:
        raw = gzip.decompress(content) if path.suffix == ".gz" else content
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        reason = "truncated" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}"
        raise DatasetError(f"{path} cannot be read ({reason}); replace it with the original file") from None
    if len(raw) < 4:
        raise DatasetError(f"{path} is truncated ({len(raw)} bytes)")
    magic, ndim = struct.unpack(">I", raw[:4])[0], raw[3]
    want_magic = _IDX_MAGIC[kind]
    if magic != want_magic:
        found = next((k for k, m in _IDX_MAGIC.items() if m == magic), None)
        what = f"an IDX {found} file" if found else f"not an unsigned-byte IDX file (magic {magic:#010x})"
        raise DatasetError(f"{path} is {what}, expected IDX {kind} (magic {want_magic:#010x})")
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path} is truncated (header of {len(raw)} bytes)")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):  # python ints: no overflow on a crafted header
        raise DatasetError(f"{path} is truncated or padded: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(name: str, data_dir: Path) -> list[str]:
    src = DATASETS[name]
    folder = data_dir / src.folder
    if src.reader == "cifar10":
        return [f for f in src.files if not (folder / f).is_file()]
    return [f for f in src.files if _find(folder, f) is None]


def _download(name: str, data_dir: Path) -> None:
    """Fetch a dataset with torchvision (the only place that imports it)."""
    import torchvision.datasets as tvd  # noqa: PLC0415 - seconds to import; only when downloading

    cls = getattr(tvd, DATASETS[name].torchvision_class)
    for train in (True, False):
        cls(str(data_dir), train=train, download=True)


def ensure_available(name: str, data_dir: str | Path, download: bool) -> Path:
    """Return the dataset folder, downloading it if allowed; a clear error if not."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    data_dir = Path(data_dir)
    src = DATASETS[name]
    folder = data_dir / src.folder
    missing = _missing(name, data_dir)
    if not missing:
        return folder
    how = (
        f"place {', '.join(missing)} (torchvision layout; .gz accepted for IDX files) in {folder}"
        if src.reader != "cifar10"
        else f"extract cifar-10-python.tar.gz into {data_dir} so that {folder}/ holds {', '.join(src.files)}"
    )
    if not download:
        raise DatasetError(f"dataset '{name}' not found at {folder} and download is off: {how}")
    try:
        _download(name, data_dir)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(
            f"dataset '{name}' not found at {folder} and the download failed ({reason}): {how}"
        ) from None
    missing = _missing(name, data_dir)
    if missing:
        raise DatasetError(f"dataset '{name}': download finished but {', '.join(missing)} missing in {folder}")
    return folder


def _load_idx_dataset(folder: Path, image_size: tuple[int, int] = (28, 28), verify: str | None = None):
    """MNIST-layout IDX files, checked against their published checksums
    (``verify``: the dataset's name; None for a user's own files) and against
    each other: images and labels of a split agree in count, images are
    ``image_size``, and the train split is larger than the test split (60000
    vs 10000 for MNIST and Fashion-MNIST), so a t10k file in a train slot is refused."""

    def read(stem, kind):
        path = _find(folder, stem)
        return path, _read_idx(path, kind, verify)

    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        (pi, x), (pl, y) = read(f"{prefix}-images-idx3-ubyte", "images"), read(f"{prefix}-labels-idx1-ubyte", "labels")
        if tuple(x.shape[1:]) != image_size:
            raise DatasetError(f"{pi} holds {x.shape[1]}x{x.shape[2]} images, expected {image_size[0]}x{image_size[1]}")
        if x.shape[0] != y.shape[0]:
            raise DatasetError(f"{pi} holds {x.shape[0]} images but {pl} holds {y.shape[0]} labels")
        splits[split] = (pi, x, y)
    (p_tr, xtr, ytr), (p_te, xte, yte) = splits["train"], splits["test"]
    if xtr.shape[0] <= xte.shape[0]:
        raise DatasetError(
            f"{p_tr} holds {xtr.shape[0]} images, no more than the test file {p_te} "
            f"({xte.shape[0]}): a test file in the train slot, or train and test swapped?"
        )
    return xtr[:, None], ytr, xte[:, None], yte


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds (a dict of bytes, lists,
    ints and numpy arrays): a crafted file in data_dir cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        *(("builtins", n) for n in ("list", "dict", "tuple", "bytes", "bytearray", "str", "int", "float")),
        *(("__builtin__", n) for n in ("list", "dict", "tuple", "bytes", "bytearray", "str", "int", "float")),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_cifar10(folder: Path, verify: str | None = None):
    def read(fname):
        content = _read_file(folder / fname)
        if verify is not None:
            check_published(folder / fname, content, verify)
        try:
            with io.BytesIO(content) as f:
                batch = _CifarUnpickler(f, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc).strip() else ""
            raise DatasetError(f"{folder / fname} is not a CIFAR-10 batch ({type(exc).__name__}: {reason})") from None
        if labels.shape != (data.shape[0],):
            raise DatasetError(f"{folder / fname} holds {data.shape[0]} images but {labels.size} labels")
        return data, labels

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = read("test_batch")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), xte, yte


def _load_digits(split_seed: int):
    from sklearn.datasets import load_digits  # noqa: PLC0415 - bundled with scikit-learn, no download
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # 0..16 grey levels, 8x8
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=split_seed, stratify=y)
    return xtr, ytr, xte, yte


# ------------------------------------------------------------------ prepare


def prepare_dataset(
    name: str, data_dir: str | Path = "data", download: bool = True, split_seed: int = 0, verify: bool = True
) -> dict:
    """Read a dataset into a dict of uint8 images, labels and normalisation stats.

    digits has no official test set: a stratified 20% test split seeded by
    ``split_seed`` is fixed here, once. Files read from ``data_dir`` must be
    the published ones (md5, :func:`check_published`) unless ``verify`` is
    False (the config's ``verify_checksums: false``: a user's own files).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    if DATASETS[name].reader == "digits":
        xtr, ytr, xte, yte = _load_digits(split_seed)
        source, checked = "sklearn.datasets.load_digits", "bundled with scikit-learn"
    else:
        folder = ensure_available(name, data_dir, download)
        if DATASETS[name].reader == "cifar10":
            xtr, ytr, xte, yte = _load_cifar10(folder, verify=name if verify else None)
        else:
            xtr, ytr, xte, yte = _load_idx_dataset(folder, verify=name if verify else None)
        source = str(folder)
        checked = "md5 of every file: the published one" if verify else "not checked (verify_checksums: false)"
    n_classes = DATASETS[name].n_classes
    for split, labels in (("train", ytr), ("test", yte)):
        if labels.min() < 0 or labels.max() >= n_classes:
            raise DatasetError(f"dataset '{name}': {split} labels outside 0..{n_classes - 1}")
    xf = xtr.astype(np.float64)
    mean = xf.mean(axis=(0, 2, 3))
    std = xf.std(axis=(0, 2, 3))
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source": source,
        "checksums": checked,
        "n_classes": n_classes,
        "x_train": torch.from_numpy(np.array(xtr, order="C")),  # a writable copy
        "y_train": torch.from_numpy(ytr.astype(np.int64)),
        "x_test": torch.from_numpy(np.array(xte, order="C")),
        "y_test": torch.from_numpy(yte.astype(np.int64)),
        "mean": [float(m) for m in mean],
        "std": [float(s) if s > 0 else 1.0 for s in std],
        # digits' test split and statistics depend on it: an export checks it against the cell's
        **({"split_seed": int(split_seed)} if DATASETS[name].reader == "digits" else {}),
    }


def write_prepared(payload: dict, out: str | Path) -> None:
    torch_save_atomic(payload, out)


_KEYS = ("name", "n_classes", "x_train", "y_train", "x_test", "y_test", "mean", "std")


def load_prepared(path: str | Path) -> dict:
    """Load a prepared dataset file; a one-line error if it is missing or corrupt."""
    return torch_load_checked(
        path, "prepared dataset", DatasetError, _KEYS, FORMAT_VERSION, missing_hint=" (run the prepare_data rule)"
    )


# ------------------------------------------------------------------ splits


@dataclass
class Splits:
    """Normalised float tensors (N, C, H, W) and int64 labels for one study."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> Splits:
        return Splits(
            *(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test)),
            self.n_classes,
        )


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` per channel in float32, in place on one fresh copy
    (the same two roundings per element as the out-of-place expression; one
    allocation instead of three, which were most of a small cell's load time)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = torch.empty(x.shape, dtype=torch.float32)
    out.copy_(x)
    return out.sub_(m).div_(s)


def make_splits(payload: dict, val_fraction: float, split_seed: int, train_subset: int | None = None) -> Splits:
    """Split the training pool into train / validation with a fixed seed.

    The permutation depends on ``split_seed`` only, so every width, bits and
    training seed of a study sees the same examples. ``train_subset`` keeps the
    first examples of the (shuffled) training part.
    """
    n = payload["x_train"].shape[0]
    n_val = int(round(val_fraction * n))
    if not 0 < n_val < n:
        raise DatasetError(f"val_fraction {val_fraction} leaves no training or no validation example of {n}")
    g = torch.Generator().manual_seed(int(split_seed))
    perm = torch.randperm(n, generator=g)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if train_subset is not None:
        if train_subset > train_idx.numel():
            raise DatasetError(f"train_subset {train_subset} exceeds the {train_idx.numel()} training examples")
        train_idx = train_idx[:train_subset]
    x, y = payload["x_train"], payload["y_train"]
    mean, std = payload["mean"], payload["std"]
    rows = torch.index_select  # the same rows as x[idx], 2-4x faster on uint8 images (a copy per row)
    return Splits(
        _normalise(rows(x, 0, train_idx), mean, std),
        rows(y, 0, train_idx),
        _normalise(rows(x, 0, val_idx), mean, std),
        rows(y, 0, val_idx),
        _normalise(payload["x_test"], mean, std),
        payload["y_test"].clone(),
        int(payload["n_classes"]),
    )


# ------------------------------------------------------------------ splits files


_SPLIT_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _describe(key: dict) -> str:
    subset = "all" if key.get("train_subset") is None else key["train_subset"]
    return (
        f"{key.get('dataset')} (val_fraction {key.get('val_fraction')}, split_seed {key.get('split_seed')}, "
        f"train_subset {subset})"
    )


def write_splits(payload: dict, key: dict, out: str | Path) -> Splits:
    """Normalise and split a prepared dataset once for a whole study, into a
    file the study's cells map instead of each making its own copy (a cell's
    ``load`` goes from 0.2-0.4 s of fresh memory to a few milliseconds for
    MNIST, and concurrent cells share one copy in the page cache)."""
    if payload["name"] != key["dataset"]:
        raise DatasetError(f"the prepared dataset holds '{payload['name']}', the split is of '{key['dataset']}'")
    s = make_splits(payload, key["val_fraction"], key["split_seed"], key["train_subset"])
    obj = {k: getattr(s, k) for k in _SPLIT_TENSORS}
    obj.update(kind="splits", key=dict(key), n_classes=s.n_classes, format_version=SPLITS_FORMAT_VERSION)
    torch_save_atomic(obj, out)
    return s


def load_cell_data(path: str | Path, key: dict) -> Splits:
    """A cell's data: a splits file (:func:`write_splits`; tensors mapped, not
    copied) or a prepared dataset (split here by :func:`make_splits`, the
    same numbers). Either must be of ``key``'s dataset and, for a splits file,
    of exactly ``key``'s split, or a one-line DatasetError names the mismatch."""
    obj = torch_load_checked(
        path, "dataset file", DatasetError, (), None, missing_hint=" (run the split_data rule)", mmap=True
    )
    if obj.get("kind") == "splits":
        if any(k not in obj for k in (*_SPLIT_TENSORS, "key", "n_classes")):
            raise DatasetError(f"corrupt splits file {path} (missing keys); delete it and rerun")
        if obj["format_version"] != SPLITS_FORMAT_VERSION:
            got, want = obj["format_version"], SPLITS_FORMAT_VERSION
            raise DatasetError(f"splits file {path} has format {got}, expected {want}; delete it and rerun")
        if obj["key"] != key:
            raise DatasetError(
                f"{path} holds the split of {_describe(obj['key'])}, the cell needs {_describe(key)} "
                "(stale splits file: rerun its split_data job)"
            )
        return Splits(*(obj[k] for k in _SPLIT_TENSORS), int(obj["n_classes"]))
    if any(k not in obj for k in _KEYS) or obj["format_version"] != FORMAT_VERSION:
        raise DatasetError(f"{path} is neither a splits file nor a prepared dataset of format {FORMAT_VERSION}")
    if obj["name"] != key["dataset"]:
        raise DatasetError(f"{path} holds dataset '{obj['name']}', the cell needs '{key['dataset']}'")
    return make_splits(obj, key["val_fraction"], key["split_seed"], key["train_subset"])
