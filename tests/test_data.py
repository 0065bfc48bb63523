"""Datasets: digits (offline), IDX and CIFAR-10 readers, missing-data errors, splits."""

import gzip
import subprocess
import sys
import urllib.error

import pytest
import torch

from qdesign.core.specs import split_key
from qdesign.nn import data as qdata
from qdesign.nn.data import (
    DatasetError,
    ensure_available,
    load_cell_data,
    load_prepared,
    make_splits,
    prepare_dataset,
    write_prepared,
    write_splits,
)

from .fake_data import fake_cifar10, fake_mnist


def test_digits_prepares_offline_with_a_fixed_test_split():
    a = prepare_dataset("digits", split_seed=0)
    b = prepare_dataset("digits", split_seed=0)
    c = prepare_dataset("digits", split_seed=1)
    assert a["x_train"].shape == (1437, 1, 8, 8) and a["x_test"].shape == (360, 1, 8, 8)
    assert a["x_train"].dtype == torch.uint8 and int(a["x_train"].max()) == 16
    assert torch.equal(a["y_test"], b["y_test"]) and not torch.equal(a["y_test"], c["y_test"])
    # stratified: every class is in the test set 36 times (+-1)
    counts = torch.bincount(a["y_test"], minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37


def test_prepared_file_round_trips_and_corruption_is_reported(tmp_path):
    out = tmp_path / "d" / "digits.pt"
    write_prepared(prepare_dataset("digits"), out)
    assert load_prepared(out)["name"] == "digits"
    assert not list(out.parent.glob(".*tmp"))  # no temporary file left behind
    out.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="corrupt prepared dataset"):
        load_prepared(out)
    with pytest.raises(DatasetError, match="not found"):
        load_prepared(tmp_path / "missing.pt")


def test_splits_are_seeded_disjoint_and_normalised():
    payload = prepare_dataset("digits")
    s1 = make_splits(payload, 0.2, split_seed=3)
    s2 = make_splits(payload, 0.2, split_seed=3)
    s3 = make_splits(payload, 0.2, split_seed=4)
    assert torch.equal(s1.x_val, s2.x_val) and not torch.equal(s1.x_val, s3.x_val)
    assert s1.x_val.shape[0] == round(0.2 * 1437) and s1.x_train.shape[0] == 1437 - s1.x_val.shape[0]
    # normalised with the training pool statistics
    pool = torch.cat([s1.x_train, s1.x_val])
    assert abs(float(pool.mean())) < 1e-4 and abs(float(pool.std()) - 1) < 1e-2
    # train and validation rows are disjoint (compare the rows as bytes)
    train_rows = {r.numpy().tobytes() for r in s1.x_train.flatten(1)}
    val_rows = [r.numpy().tobytes() for r in s1.x_val.flatten(1)]
    assert sum(r in train_rows for r in val_rows) <= 2  # digits has a couple of duplicate images
    sub = make_splits(payload, 0.2, split_seed=3, train_subset=100)
    assert sub.x_train.shape[0] == 100 and torch.equal(sub.x_train, s1.x_train[:100])
    with pytest.raises(DatasetError, match="train_subset"):
        make_splits(payload, 0.2, split_seed=3, train_subset=10**6)


def test_split_rows_are_the_seeded_permutation_rows():
    """An independent definition: the split is the training pool's rows in the
    order of randperm(split_seed), normalised by the plain expression."""
    payload = prepare_dataset("digits")
    s = make_splits(payload, 0.2, split_seed=5, train_subset=300)
    n = payload["x_train"].shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    n_val = round(0.2 * n)
    m = torch.tensor(payload["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    sd = torch.tensor(payload["std"], dtype=torch.float32).view(1, -1, 1, 1)
    for got_x, got_y, idx in ((s.x_val, s.y_val, perm[:n_val]), (s.x_train, s.y_train, perm[n_val:][:300])):
        assert torch.equal(got_x, (payload["x_train"][idx].float() - m) / sd)
        assert torch.equal(got_y, payload["y_train"][idx])
    assert torch.equal(s.x_test, (payload["x_test"].float() - m) / sd)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_datasets_read_from_torchvision_layout(tmp_path, compress):
    fake_mnist(tmp_path, compress=compress, folder="FashionMNIST")
    p = prepare_dataset("fashion-mnist", tmp_path, download=False, verify=False)
    assert p["x_train"].shape == (50, 1, 28, 28) and p["x_test"].shape == (20, 1, 28, 28)
    assert p["y_train"].dtype == torch.int64


def test_truncated_idx_file_is_reported(tmp_path):
    fake_mnist(tmp_path)
    f = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DatasetError, match="truncated"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


def test_cifar10_loads_from_its_on_disk_format(tmp_path):
    expected = fake_cifar10(tmp_path)
    p = prepare_dataset("cifar10", tmp_path, download=False, verify=False)
    assert p["x_train"].shape == (60, 3, 32, 32) and p["x_test"].shape == (8, 3, 32, 32)
    data, labels = expected["data_batch_2"]
    # row layout: 1024 red, 1024 green, 1024 blue values, row-major 32x32
    assert torch.equal(p["x_train"][12], torch.from_numpy(data[0].reshape(3, 32, 32)))
    assert p["y_train"][12:24].tolist() == labels
    assert len(p["mean"]) == 3


def test_corrupt_cifar10_batch_is_reported(tmp_path):
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3 is not a CIFAR-10 batch"):
        prepare_dataset("cifar10", tmp_path, download=False, verify=False)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_dataset_without_download_names_the_path(tmp_path, name, folder):
    with pytest.raises(DatasetError) as err:
        ensure_available(name, tmp_path, download=False)
    msg = str(err.value)
    assert f"dataset '{name}' not found at {tmp_path / folder}" in msg and "\n" not in msg
    assert "download is off" in msg


def test_failed_download_gives_one_clear_line(tmp_path, monkeypatch):
    def offline(name, data_dir):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(qdata, "_download", offline)
    with pytest.raises(DatasetError) as err:
        ensure_available("fashion-mnist", tmp_path, download=True)
    msg = str(err.value)
    assert "download failed" in msg and "name resolution" in msg and "FashionMNIST/raw" in msg
    assert "\n" not in msg


def test_published_checksums_are_torchvisions():
    """The registry's md5s of the archives and CIFAR-10 batches are the ones
    torchvision publishes; the uncompressed IDX entries are their contents'."""
    tvd = pytest.importorskip("torchvision.datasets")
    from qdesign.core.registry import DATASETS  # noqa: PLC0415

    for name, cls in (("mnist", tvd.MNIST), ("fashion-mnist", tvd.FashionMNIST)):
        archives = {f: m for f, m in DATASETS[name].checksums.items() if f.endswith(".gz")}
        assert archives == dict(cls.resources)
        assert {f.removesuffix(".gz") for f in archives} | set(archives) == set(DATASETS[name].checksums)
    assert DATASETS["cifar10"].checksums == dict(tvd.CIFAR10.train_list + tvd.CIFAR10.test_list)


def test_uncompressed_checksums_are_the_archives_contents(shared_data):
    import hashlib  # noqa: PLC0415

    from qdesign.core.registry import DATASETS  # noqa: PLC0415

    for name, folder in (("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")):
        sums = DATASETS[name].checksums
        for f in sums:
            if f.endswith(".gz"):
                content = gzip.decompress((shared_data / folder / "raw" / f).read_bytes())
                assert hashlib.md5(content).hexdigest() == sums[f.removesuffix(".gz")]


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'"):
        ensure_available("svhn", ".", download=False)


def test_real_mnist_from_shared_data(shared_data):
    p = prepare_dataset("mnist", shared_data, download=False)
    assert p["x_train"].shape == (60000, 1, 28, 28) and p["x_test"].shape == (10000, 1, 28, 28)
    # label histograms given in shared/data/README.md
    assert torch.bincount(p["y_test"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert 33.0 < p["mean"][0] < 33.5 and 78.0 < p["std"][0] < 79.0  # the usual 0.1307 / 0.3081 x 255


# ------------------------------------------------------------------ splits files

_SPLIT = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def test_a_splits_file_holds_exactly_the_split(tmp_path):
    payload = prepare_dataset("digits")
    key = split_key("digits", 0.2, 3, 500)
    write_splits(payload, key, tmp_path / "s.pt")
    got, want = load_cell_data(tmp_path / "s.pt", key), make_splits(payload, 0.2, 3, 500)
    for name in _SPLIT:
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.n_classes == want.n_classes
    # a prepared dataset gives the cell the same split
    write_prepared(payload, tmp_path / "d.pt")
    direct = load_cell_data(tmp_path / "d.pt", key)
    assert all(torch.equal(getattr(direct, n), getattr(want, n)) for n in _SPLIT)


def test_a_mapped_split_is_copy_on_write(tmp_path):
    """The cells map the file: writing into a tensor must never reach it."""
    key = split_key("digits", 0.2, 0, None)
    write_splits(prepare_dataset("digits"), key, tmp_path / "s.pt")
    before = (tmp_path / "s.pt").read_bytes()
    got = load_cell_data(tmp_path / "s.pt", key)
    got.x_train.add_(1.0)
    assert (tmp_path / "s.pt").read_bytes() == before
    assert not torch.equal(load_cell_data(tmp_path / "s.pt", key).x_train, got.x_train)


@pytest.mark.parametrize(
    "change", [dict(val_fraction=0.25), dict(split_seed=1), dict(train_subset=100), dict(dataset="mnist")]
)
def test_a_stale_splits_file_is_refused(tmp_path, change):
    key = split_key("digits", 0.2, 0, None)
    write_splits(prepare_dataset("digits"), key, tmp_path / "s.pt")
    with pytest.raises(DatasetError, match="stale splits file") as err:
        load_cell_data(tmp_path / "s.pt", {**key, **change})
    assert len(str(err.value).splitlines()) == 1


def test_bad_data_files_for_a_cell(tmp_path):
    key = split_key("digits", 0.2, 0, None)
    with pytest.raises(DatasetError, match="not found"):
        load_cell_data(tmp_path / "missing.pt", key)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DatasetError, match="corrupt"):
        load_cell_data(tmp_path / "junk.pt", key)
    write_prepared(prepare_dataset("digits"), tmp_path / "d.pt")
    with pytest.raises(DatasetError, match="holds dataset 'digits', the cell needs 'mnist'"):
        load_cell_data(tmp_path / "d.pt", {**key, "dataset": "mnist"})
    with pytest.raises(DatasetError, match="the split is of 'mnist'"):
        write_splits(prepare_dataset("digits"), {**key, "dataset": "mnist"}, tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()


def test_split_data_command_refuses_a_bad_key_in_one_line(tmp_path):
    write_prepared(prepare_dataset("digits"), tmp_path / "d.pt")
    out = tmp_path / "s.pt"
    cmd = [sys.executable, "-m", "qdesign", "split-data", "--data", str(tmp_path / "d.pt"), "--out", str(out)]
    bad = subprocess.run([*cmd, "--split", '{"dataset": "digits"}'], capture_output=True, text=True)
    assert bad.returncode != 0 and "--split is not a split key" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not out.exists()
    key = '{"dataset": "digits", "val_fraction": 0.2, "split_seed": 0, "train_subset": null}'
    ok = subprocess.run([*cmd, "--split", key], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert load_cell_data(out, split_key("digits", 0.2, 0, None)).x_val.shape[0] == round(0.2 * 1437)
