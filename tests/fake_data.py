"""Fake raw datasets in torchvision's on-disk layouts (IDX files, CIFAR-10 batches), written in a test's folder."""

import gzip
import pickle
import struct

import numpy as np


def write_idx(path, array: np.ndarray, compress=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def fake_mnist(root, n_train=50, n_test=20, compress=False, folder="MNIST"):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)), compress)
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, n_train), compress)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), compress)
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, n_test), compress)


def fake_cifar10(root, per_batch=12, n_test=8):
    """A tiny data set in CIFAR-10's on-disk format (python pickles of uint8 rows)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    expected = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        expected[name] = (data, labels)
    return expected
