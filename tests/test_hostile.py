"""The fast cases of a hostile campaign: inputs chosen to produce a silently
wrong result (bad configs, bad or swapped dataset files, corrupt artifacts,
diverging training). Each must end in one line naming the key or file, or be
flagged loudly; none may record a wrong number as a valid result."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import stat
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from qdesign.analysis.aggregate import aggregate, ecr_table, frontier_table, seed_means
from qdesign.core import io as qio
from qdesign.core.architecture import n_params, study_layer_specs
from qdesign.core.config import validate_config
from qdesign.core.errors import ConfigError, DatasetError, DiskFullError, DivergedError, UserError
from qdesign.core.specs import float_spec
from qdesign.nn import torchio
from qdesign.nn import train as qtrain
from qdesign.nn.cells import CheckpointError, load_checkpoint, train_float
from qdesign.nn.data import prepare_dataset, write_prepared
from qdesign.nn.models import build_model
from qdesign.run.resources import DATASET_SHAPES

from .conftest import tiny_study
from .fake_data import fake_cifar10, fake_mnist, write_idx


def cfg_with(**study):
    return {"device": "cpu", "studies": {"s": tiny_study(**study)}}


def one_line_config_error(cfg, *needles):
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


# ------------------------------------------------------------------ configs: non-finite numbers

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("training", "lr", NAN),
        ("training", "lr", INF),
        ("training", "momentum", NAN),
        ("training", "weight_decay", INF),
        ("retraining", "lr", -INF),
        ("retraining", "momentum", NAN),
        ("model", "dropout", NAN),
    ],
)
def test_non_finite_optimizer_and_model_numbers_are_rejected(section, key, value):
    study = tiny_study()
    study[section] = {**study[section], key: value}
    one_line_config_error({"studies": {"s": study}}, f"studies.s.{section}.{key}", "not a finite number")


def test_non_finite_val_fraction_is_rejected():
    one_line_config_error(cfg_with(val_fraction=NAN), "studies.s.val_fraction", "not a finite number")


def test_non_finite_yaml_spellings_are_rejected(tmp_path):
    from qdesign.core.config import load_config  # noqa: PLC0415

    for spelling in (".nan", ".inf", "-.inf", ".NaN"):
        p = tmp_path / "c.yaml"
        p.write_text(
            "studies:\n  s:\n    dataset: digits\n    model: {type: fcdnn, widths: [8]}\n"
            f"    training: {{lr: {spelling}}}\n"
        )
        with pytest.raises(ConfigError, match=r"studies\.s\.training\.lr: .* not a finite number"):
            load_config(p)


# ------------------------------------------------------------------ configs: integers


@pytest.mark.parametrize(
    "path, value",
    [
        (("model", "widths"), [8.0]),
        (("bits",), [2.0]),
        (("seeds",), [0.0]),
        (("model", "depth"), 2.0),
        (("training", "epochs"), 3.0),
        (("training", "batch_size"), 64.0),
        (("retraining", "epochs"), 1.0),
        (("threads",), 1.0),
        (("train_subset",), 100.0),
    ],
)
def test_integral_floats_are_not_integers(path, value):
    study = tiny_study()
    node = study
    for k in path[:-1]:
        node[k] = dict(node[k])
        node = node[k]
    node[path[-1]] = value
    one_line_config_error({"studies": {"s": study}}, "studies.s." + ".".join(path), "not of type")


def test_integral_float_split_seed_is_rejected():
    one_line_config_error({"split_seed": 0.0, "studies": {"s": tiny_study()}}, "split_seed", "not of type")


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"studies": {"s": tiny_study(seeds=[2**63])}}, "studies.s.seeds.0"),
        ({"studies": {"s": tiny_study(seeds=[2**64 + 1])}}, "studies.s.seeds.0"),
        ({"split_seed": 2**32, "studies": {"s": tiny_study()}}, "split_seed"),
    ],
)
def test_seeds_beyond_what_the_generators_take_are_rejected(cfg, key):
    one_line_config_error(cfg, key, "maximum")


def test_largest_allowed_seed_runs_in_torch_and_sklearn():
    cfg = validate_config({"split_seed": 2**32 - 1, "studies": {"s": tiny_study(seeds=[2**32 - 1])}})
    torch.Generator().manual_seed(cfg["studies"]["s"]["seeds"][0])
    assert prepare_dataset("digits", split_seed=cfg["split_seed"])["x_test"].shape[0] == 360


def test_float_training_needs_at_least_one_epoch():
    one_line_config_error(cfg_with(training={"epochs": 0}), "studies.s.training.epochs", "minimum")
    # retraining epochs 0 = direct quantization only, still allowed
    assert validate_config(cfg_with(retraining={"epochs": 0}))["studies"]["s"]["retraining"]["epochs"] == 0


# ------------------------------------------------------------------ configs: models that cannot fit


@pytest.mark.parametrize(
    "model",
    [
        {"type": "fcdnn", "depth": 3, "widths": [10**6]},
        {"type": "cnn", "widths": [10**5], "channel_multipliers": [1, 2]},
    ],
)
def test_models_larger_than_the_machine_are_rejected_before_allocating(model):
    msg = one_line_config_error(cfg_with(model=model), "studies.s.model.widths.0", "GiB", "memory")
    assert f"width {model['widths'][0]}" in msg


def test_large_but_feasible_widths_stay_valid():
    validate_config(cfg_with(model={"type": "fcdnn", "depth": 3, "widths": [8, 4096]}))


@pytest.mark.parametrize(
    "model_cfg, dataset",
    [
        ({"type": "fcdnn", "depth": 3, "dropout": 0.0}, "mnist"),
        ({"type": "fcdnn", "depth": 1, "dropout": 0.0}, "digits"),
        (
            {
                "type": "cnn",
                "channel_multipliers": [1, 2],
                "convs_per_block": 2,
                "kernel_size": 3,
                "pool": "max",
                "fc_units": 32,
                "dropout": 0.0,
            },
            "cifar10",
        ),
        (
            {
                "type": "cnn",
                "channel_multipliers": [1, 2, 4],
                "convs_per_block": 1,
                "kernel_size": 5,
                "pool": "avg",
                "fc_units": 0,
                "dropout": 0.0,
            },
            "mnist",
        ),
    ],
)
def test_parameter_estimate_matches_the_built_model(model_cfg, dataset):
    """The architecture description the config and the cluster requests are
    sized from counts the parameters the built network has."""
    shape = DATASET_SHAPES[dataset][1]
    for width in (3, 16):
        model = build_model(model_cfg, width, shape, 10)
        estimate = n_params(study_layer_specs({"model": model_cfg, "dataset": dataset}, width))
        assert estimate == sum(p.numel() for p in model.parameters())


def test_cuda_without_a_gpu_is_one_line_at_job_start(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: 'cuda' requested but no CUDA GPU") as err:
        qtrain.pick_device("cuda")
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert qtrain.pick_device("auto").type == "cpu"


# ------------------------------------------------------------------ dataset files


def test_test_images_in_the_train_slot_are_refused(tmp_path):
    fake_mnist(tmp_path, n_train=20, n_test=20)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte holds 20 images, no more than the test"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


def test_swapped_train_and_test_files_are_refused(tmp_path):
    fake_mnist(tmp_path, n_train=50, n_test=20)
    raw = tmp_path / "MNIST" / "raw"
    for kind in ("images-idx3", "labels-idx1"):
        a, b = raw / f"train-{kind}-ubyte", raw / f"t10k-{kind}-ubyte"
        a.rename(raw / "tmp")
        b.rename(a)
        (raw / "tmp").rename(b)
    with pytest.raises(DatasetError, match="test file in the train slot, or train and test swapped"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


def test_image_and_label_counts_must_agree(tmp_path):
    fake_mnist(tmp_path, n_train=50, n_test=20)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(49, np.uint8))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte holds 50 images but .*train-labels.* 49 labels"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


def test_labels_file_in_the_images_slot_is_named(tmp_path):
    fake_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    shutil.copy(raw / "train-labels-idx1-ubyte", raw / "train-images-idx3-ubyte")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte is an IDX labels file, expected IDX images"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


def test_images_file_in_the_labels_slot_is_named(tmp_path):
    fake_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    shutil.copy(raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte is an IDX images file, expected IDX labels"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


def test_images_of_the_wrong_size_are_refused(tmp_path):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte holds 32x32 images, expected 28x28"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "empty"])
def test_damaged_gz_files_are_one_line_naming_the_file(tmp_path, damage):
    fake_mnist(tmp_path, compress=True)
    gz = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    data = gz.read_bytes()
    gz.write_bytes({"truncated": data[: len(data) // 2], "not gzip": b"plain bytes, no gzip", "empty": b""}[damage])
    with pytest.raises(DatasetError) as err:
        prepare_dataset("mnist", tmp_path, download=False, verify=False)
    msg = str(err.value)
    assert str(gz) in msg and "\n" not in msg


def _link_real(shared: Path, tmp: Path, mapping: dict[str, str]) -> None:
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    src = shared / "MNIST" / "raw"
    for slot, real in mapping.items():
        for suffix in ("", ".gz"):
            if (src / (real + suffix)).is_file():
                (raw / (slot + suffix)).symlink_to(src / (real + suffix))
                break


def test_real_t10k_images_in_the_train_slot_are_refused(shared_data, tmp_path):
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    mapping = dict(zip(names, names))
    mapping["train-images-idx3-ubyte"] = "t10k-images-idx3-ubyte"
    _link_real(shared_data, tmp_path, mapping)
    with pytest.raises(DatasetError, match="holds 10000 images but .* 60000 labels"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


def test_real_swapped_train_and_test_are_refused(shared_data, tmp_path):
    _link_real(
        shared_data,
        tmp_path,
        {
            "train-images-idx3-ubyte": "t10k-images-idx3-ubyte",
            "train-labels-idx1-ubyte": "t10k-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte": "train-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte": "train-labels-idx1-ubyte",
        },
    )
    with pytest.raises(DatasetError, match="holds 10000 images, no more than the test file .* \\(60000\\)"):
        prepare_dataset("mnist", tmp_path, download=False, verify=False)


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _slot(shared: Path, tmp: Path, sources: dict[str, str], suffix: str = "") -> Path:
    """MNIST/raw under ``tmp`` whose files link to real files: slot -> "MNIST" or "FashionMNIST"."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_NAMES:
        (raw / (name + suffix)).symlink_to(shared / sources.get(name, "MNIST") / "raw" / (name + suffix))
    return raw


def one_line_dataset_error(*args, **kw) -> str:
    with pytest.raises(DatasetError) as err:
        prepare_dataset(*args, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_fashion_files_in_the_mnist_folder_are_refused(shared_data, tmp_path, suffix):
    raw = _slot(shared_data, tmp_path, dict.fromkeys(IDX_NAMES, "FashionMNIST"), suffix)
    msg = one_line_dataset_error("mnist", tmp_path, download=False)
    name = f"train-images-idx3-ubyte{suffix}"
    assert msg.startswith(f"{raw / name} is not mnist's published {name} (md5 ")
    assert f"it looks like fashion-mnist's {name}" in msg and "verify_checksums: false" in msg


def test_mnist_images_with_fashion_labels_are_refused(shared_data, tmp_path):
    raw = _slot(shared_data, tmp_path, {"train-labels-idx1-ubyte": "FashionMNIST"})
    msg = one_line_dataset_error("mnist", tmp_path, download=False)
    assert msg.startswith(f"{raw / 'train-labels-idx1-ubyte'} is not mnist's published")
    assert "looks like fashion-mnist's train-labels-idx1-ubyte" in msg


def test_mnist_files_in_the_fashion_folder_and_swapped_slots_are_named(shared_data, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_NAMES:
        (raw / name).symlink_to(shared_data / "MNIST" / "raw" / name)
    assert "looks like mnist's train-images-idx3-ubyte" in one_line_dataset_error("fashion-mnist", tmp_path, False)
    raw = _slot(shared_data, tmp_path / "swap", {})
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").symlink_to(shared_data / "MNIST" / "raw" / "train-labels-idx1-ubyte")
    msg = one_line_dataset_error("mnist", tmp_path / "swap", False)
    assert "t10k-labels-idx1-ubyte is not mnist's published" in msg
    assert "looks like mnist's train-labels-idx1-ubyte" in msg


def test_a_modified_copy_is_refused_and_own_files_need_the_key(shared_data, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_NAMES:
        shutil.copy(shared_data / "MNIST" / "raw" / name, raw / name)
    labels = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # one label changed: still a valid IDX file
    labels.write_bytes(bytes(data))
    msg = one_line_dataset_error("mnist", tmp_path, download=False)
    assert msg.startswith(f"{labels} is not mnist's published") and "looks like no published file" in msg
    own = prepare_dataset("mnist", tmp_path, download=False, verify=False)  # the explicit key: the user's own files
    assert own["checksums"].startswith("not checked") and own["y_test"][-1] == data[-1]


def test_published_files_pass_and_the_check_is_recorded(shared_data):
    payload = prepare_dataset("fashion-mnist", shared_data, download=False)
    assert payload["checksums"].startswith("md5 of every file") and payload["x_train"].shape[0] == 60000


def test_prepare_data_command_refuses_fashion_in_the_mnist_slot(shared_data, tmp_path, capsys):
    from qdesign.run.cli import run  # noqa: PLC0415

    _slot(shared_data, tmp_path, dict.fromkeys(IDX_NAMES, "FashionMNIST"))
    out = tmp_path / "results" / "data" / "mnist.pt"
    argv = ["prepare-data", "--dataset", "mnist", "--data-dir", str(tmp_path), "--no-download", "--out", str(out)]
    assert run(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("qdesign: error: ") and "looks like fashion-mnist's" in err and "\n" not in err
    assert not out.exists()
    assert run([*argv, "--no-verify-checksums"]) == 0 and out.is_file()


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_cifar_batch_does_not_run_code(tmp_path):
    fake_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_4", "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f)
    with pytest.raises(DatasetError) as err:
        prepare_dataset("cifar10", tmp_path, download=False, verify=False)
    msg = str(err.value)
    assert "data_batch_4 is not a CIFAR-10 batch" in msg and "refusing" in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_legitimate_cifar_batches_load_with_every_pickle_protocol(tmp_path, protocol):
    expected = fake_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name, (data, labels) in expected.items():  # rewrite as the real files hold them
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [b"a.png"] * len(labels),
                },
                f,
                protocol=protocol,
            )
    p = prepare_dataset("cifar10", tmp_path, download=False, verify=False)
    assert torch.equal(p["x_test"], torch.from_numpy(expected["test_batch"][0].reshape(-1, 3, 32, 32)))


# ------------------------------------------------------------------ artifacts: modes, full disk, advice


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        torchio.torch_save_atomic({"a": 1}, tmp_path / "x.pt")
        qio.parquet_write_atomic(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")
        assert qio.current_umask() == umask
    finally:
        os.umask(old)
    for name in ("x.pt", "x.parquet"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_enospc_during_a_write_is_one_line_and_leaves_no_temp_file(tmp_path):
    def full(path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    dest = tmp_path / "cell" / "model.pt"
    with pytest.raises(DiskFullError) as err:
        qio.write_atomic(dest, full)
    msg = str(err.value)
    assert "disk full" in msg and str(dest) in msg and "\n" not in msg
    assert isinstance(err.value, UserError)
    assert list(dest.parent.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_real_torch_and_parquet_writes_to_a_full_device(tmp_path, monkeypatch):
    """/dev/full fails every write with ENOSPC: the genuine error texts of both writers."""
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(qio.shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 0))
    real_save, real_parquet = torch.save, pd.DataFrame.to_parquet
    monkeypatch.setattr(torch, "save", lambda obj, path: real_save(obj, "/dev/full"))
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda df, path, index: real_parquet(df, "/dev/full", index=index))
    with pytest.raises(DiskFullError, match="model.pt"):
        torchio.torch_save_atomic({"w": torch.zeros(10**5)}, tmp_path / "model.pt")
    with pytest.raises(DiskFullError, match="metrics.parquet"):
        qio.parquet_write_atomic(pd.DataFrame({"a": range(10**4)}), tmp_path / "metrics.parquet")
    assert list(tmp_path.iterdir()) == []


def test_pyarrow_style_full_disk_error_is_one_line(tmp_path, monkeypatch):
    def arrow_full(df, path, index):
        Path(path).write_bytes(b"PAR1")
        raise OSError("IOError: [errno 28] No space left on device. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", arrow_full)
    with pytest.raises(DiskFullError, match="metrics.parquet"):
        qio.parquet_write_atomic(pd.DataFrame({"a": [1]}), tmp_path / "metrics.parquet")
    assert list(tmp_path.iterdir()) == []


def test_torch_stream_error_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    def stream_error(path):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
            "data/0: file write failed\nbasic_ios::clear: iostream error"
        )

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(qio.shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 0))
    with pytest.raises(DiskFullError, match="disk full: cannot write"):
        qio.write_atomic(tmp_path / "m.pt", stream_error)
    # the same error with plenty of space is not blamed on the disk
    monkeypatch.setattr(qio.shutil, "disk_usage", lambda p: Usage(10**12, 0, 10**12))
    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):
        qio.write_atomic(tmp_path / "m.pt", stream_error)
    assert list(tmp_path.iterdir()) == []


def test_user_supplied_files_are_never_suggested_for_deletion(tmp_path):
    user_file = tmp_path / "my_config.yaml"
    user_file.write_text("studies: {}\n")
    with pytest.raises(DatasetError) as err:
        torchio.torch_load_checked(user_file, "prepared dataset", DatasetError, ("x",), 1)
    assert "delete" not in str(err.value) and str(user_file) in str(err.value)
    produced = tmp_path / "results" / "s" / "cells" / "model.pt"
    produced.parent.mkdir(parents=True)
    produced.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="delete it and rerun"):
        load_checkpoint(produced)
    assert qio.produced_by_pipeline(tmp_path / "results" / "data" / "digits.pt")
    assert not qio.produced_by_pipeline(tmp_path / "results" / "a" / "b" / "c" / "d" / "mine.pt")
    assert not qio.produced_by_pipeline(user_file)


# ------------------------------------------------------------------ divergence and chance level


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    write_prepared(prepare_dataset("digits"), path)
    return path


def _opt_out(fail_on_divergence: bool) -> dict:
    return {} if fail_on_divergence else {"fail_on_divergence": False}  # the default as a config without the key


def float_cell(fail_on_divergence=True, **training):
    study = tiny_study(training={"epochs": 2, **training}, **_opt_out(fail_on_divergence))
    cfg = validate_config({"device": "cpu", "studies": {"s": study}})
    return float_spec(cfg, "s", 8, 0)


def quant_cell(method="learned", fail_on_divergence=True, **retraining):
    from qdesign.core.specs import quant_spec  # noqa: PLC0415

    study = tiny_study(
        training={"epochs": 3, "lr": 0.01},
        retraining={"epochs": 2, "methods": [method], **retraining},
        **_opt_out(fail_on_divergence),
    )
    cfg = validate_config({"device": "cpu", "studies": {"s": study}})
    return quant_spec(cfg, "s", 8, 2, 0, method)


@pytest.mark.parametrize(
    "training",
    [
        {"lr": 1e30},
        {"optimizer": "sgd", "lr": 1e30, "momentum": 0.9},
        {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e30},
    ],
)
def test_diverged_training_raises_and_writes_nothing(digits, tmp_path, training):
    out = tmp_path / "cell"
    with pytest.raises(DivergedError) as err:
        train_float(float_cell(**training), digits, out)
    msg = str(err.value)
    assert msg.startswith("float s width 8 seed 0 diverged in epoch ") and "\n" not in msg
    assert not out.exists() or list(out.iterdir()) == []


def test_non_finite_weights_with_a_finite_loss_raise(digits, monkeypatch):
    def poisoned_epoch(model, opt, x, y, bs, gen):
        with torch.no_grad():
            next(model.parameters())[0, 0] = float("nan")
        return 0.5, 0.1

    monkeypatch.setattr(qtrain, "train_epoch", poisoned_epoch)
    from qdesign.nn.data import load_prepared, make_splits  # noqa: PLC0415

    data = make_splits(load_prepared(digits), 0.1, 0)
    model = build_model({"type": "fcdnn", "depth": 1, "dropout": 0.0}, 8, data.input_shape, 10)
    cfg = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant", "epochs": 3, "batch_size": 64}
    with pytest.raises(DivergedError, match="cell X diverged in epoch 1/3 \\(weights are not finite\\)"):
        qtrain.fit(model, data, cfg, seed=0, log=lambda m: None, label="cell X")


def test_chance_level_rule():
    balanced = torch.arange(100) % 10
    assert qtrain.chance_level(0.90, balanced, 10) and qtrain.chance_level(0.885, balanced, 10)
    assert not qtrain.chance_level(0.5, balanced, 10)
    skewed = torch.tensor([0] * 60 + [1] * 40)  # always predicting class 0 errs 40%
    assert qtrain.chance_level(0.40, skewed, 2) and not qtrain.chance_level(0.30, skewed, 2)


def _no_outputs(out: Path) -> bool:
    return not out.exists() or list(out.iterdir()) == []


def test_untrained_float_network_fails_the_cell(digits, tmp_path):
    out = tmp_path / "cell"
    with pytest.raises(DivergedError) as err:
        train_float(float_cell(lr=1e-12, epochs=1, schedule="constant"), digits, out)
    msg = str(err.value)
    assert msg.startswith("float s width 8 seed 0: test error 0.9") and "is at chance level (10 classes)" in msg
    assert "best epoch 1/1" in msg and "check studies.s.training.lr (now 1e-12)" in msg
    assert "studies.s.fail_on_divergence: false" in msg and "\n" not in msg
    assert _no_outputs(out)


def test_untrained_network_of_a_study_that_means_it_is_kept_and_flagged_loudly(digits, tmp_path, capsys):
    spec = float_cell(fail_on_divergence=False, lr=1e-12, epochs=1, schedule="constant")
    row = train_float(spec, digits, tmp_path / "cell")
    log = capsys.readouterr().out
    assert row["test_error"] > 0.85  # measured, not assumed: a network trained with lr 1e-12 guesses
    assert row["chance_level"] and "WARNING: float s width 8 seed 0 test error" in log
    assert bool(pd.read_parquet(tmp_path / "cell" / "metrics.parquet")["chance_level"].iloc[0])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_huge_but_finite_lr_fails_the_float_cell(digits, tmp_path, optimizer):
    # lr 1e6: finite weights (~1e22), a loss of ~1e14-1e19 from 2.3 at the start: divergence all the same
    out = tmp_path / "cell"
    with pytest.raises(DivergedError) as err:
        train_float(float_cell(lr=1e6, optimizer=optimizer), digits, out)
    msg = str(err.value)
    assert msg.startswith("float s width 8 seed 0 diverged in epoch 1/2 (training loss ")
    assert "more than 10x its start 2.3" in msg and "lower studies.s.training.lr (now 1e+06)" in msg
    assert _no_outputs(out)


def test_huge_lr_of_a_study_that_means_it_is_recorded_flagged(digits, tmp_path, capsys):
    row = train_float(float_cell(fail_on_divergence=False, lr=1e6, optimizer="sgd"), digits, tmp_path / "cell")
    log = capsys.readouterr().out
    assert row["diverged"] and row["chance_level"]
    assert "WARNING: float s width 8 seed 0 diverged in epoch 1/2" in log and "flagged (column diverged)" in log
    assert bool(pd.read_parquet(tmp_path / "cell" / "metrics.parquet")["diverged"].iloc[0])


@pytest.fixture(scope="module")
def float_net(digits, tmp_path_factory):
    """A healthy float network of quant_cell()'s study."""
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    out = tmp_path_factory.mktemp("float")
    with contextlib.redirect_stdout(io.StringIO()):
        train_float(quant_cell().float, digits, out)
    return out / "model.pt"


@pytest.mark.parametrize("method", ["fixed", "epoch", "learned"])
def test_retraining_at_a_huge_lr_fails_instead_of_falling_back_to_epoch_0(digits, float_net, tmp_path, method):
    from qdesign.nn.cells import retrain  # noqa: PLC0415

    out = tmp_path / "cell"
    with pytest.raises(DivergedError) as err:
        retrain(quant_cell(method, lr=1e6), digits, float_net, out)
    msg = str(err.value)
    assert msg.startswith(f"2-bit ({method}) s width 8 seed 0 diverged in epoch 1/2 (training loss ")
    assert "lower studies.s.retraining.lr (now 1e+06)" in msg and "\n" not in msg
    assert _no_outputs(out)


def test_retraining_that_ends_above_its_start_fails(digits, float_net, tmp_path):
    from qdesign.nn.cells import retrain  # noqa: PLC0415

    # lr 1 (constant): no 10x blow-up, but the network ends at chance; epoch 0 (direct) would be kept silently
    with pytest.raises(DivergedError) as err:
        retrain(quant_cell("fixed", lr=1.0, schedule="constant"), digits, float_net, tmp_path / "cell")
    msg = str(err.value)
    assert msg.startswith("2-bit (fixed) s width 8 seed 0 diverged in epoch 2/2 (its loss ended at ")
    assert "above its start" in msg and "studies.s.retraining.lr (now 1)" in msg


def test_diverged_retraining_of_a_study_that_means_it_says_it_fell_back(digits, tmp_path, capsys):
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    from qdesign.nn.cells import retrain  # noqa: PLC0415

    spec = quant_cell("learned", fail_on_divergence=False, lr=1e6)
    with contextlib.redirect_stdout(io.StringIO()):
        train_float(spec.float, digits, tmp_path / "float")
    row = retrain(spec, digits, tmp_path / "float" / "model.pt", tmp_path / "cell")
    log = capsys.readouterr().out
    assert row["diverged"] and row["best_epoch"] == 0 and row["test_error"] == row["direct_test_error"]
    assert "WARNING: 2-bit (learned) s width 8 seed 0 diverged in epoch 1/2" in log


def test_trained_network_is_not_flagged(digits, tmp_path):
    row = train_float(float_cell(lr=0.01, epochs=3), digits, tmp_path / "cell")
    assert row["test_error"] < 0.5 and row["chance_level"] is False and row["diverged"] is False


def test_healthy_retraining_is_not_flagged(digits, float_net, tmp_path):
    from qdesign.nn.cells import retrain  # noqa: PLC0415

    for method in ("fixed", "learned"):
        row = retrain(quant_cell(method, lr=0.001), digits, float_net, tmp_path / method)
        assert row["diverged"] is False and row["chance_level"] is False


def test_the_opt_out_is_in_the_spec_only_when_used():
    on, off = float_cell(), float_cell(fail_on_divergence=False)
    assert "fail_on_divergence" not in on.to_dict()  # the keys of existing cells are unchanged
    assert off.to_dict()["fail_on_divergence"] is False and on.key != off.key
    from qdesign.core.specs import FloatSpec  # noqa: PLC0415

    assert FloatSpec.from_dict(off.to_dict()) == off and FloatSpec.from_dict(on.to_dict()) == on


def _summary(flags):
    from .study_tables import synthetic_summary  # noqa: PLC0415

    s = synthetic_summary(widths=(16, 32), bits=(2, 32), seeds=(0,), study="s")
    if flags is not None:
        s["chance_level"] = flags(s)
    return s


def test_aggregate_keeps_flagged_cells_out_of_ecr_and_frontier(tmp_path):
    old = _summary(None)
    assert "chance_level" not in seed_means(old).columns and "chance_level" not in ecr_table(old).columns
    new = _summary(lambda s: (s["bits"] == 2) & (s["width"] == 32))
    assert new.loc[2:, ["width", "bits"]].values.tolist() == [[32, 2], [32, 32]]
    paths = []
    for i, df in enumerate((old.iloc[:2], new.iloc[2:])):  # an old and a new cell file mixed
        paths.append(tmp_path / f"{i}.parquet")
        df.to_parquet(paths[-1])
    summary, ecr, frontier = aggregate(paths)
    assert summary["chance_level"].isna().sum() == 2 and len(summary) == 4  # the summary holds every cell
    cells = {(int(w), int(b)) for w, b in zip(ecr["width"], ecr["bits"])}
    assert (32, 2) not in cells and cells == {(16, 2), (16, 32), (32, 32)}
    assert (32, 2) not in set(zip(frontier["width"].dropna().astype(int), frontier["bits"].dropna().astype(int)))
    from qdesign.analysis.aggregate import flagged_note  # noqa: PLC0415

    note = flagged_note(summary)
    assert (
        note
        == "s: 1 of 4 cells flagged (1 at chance level) and kept out of the ECR and the frontier: w32 2-bit fixed s0"
    )


def test_aggregate_names_diverged_cells_and_refuses_without_a_float_curve(tmp_path, capsys):
    from qdesign.run.cli import run  # noqa: PLC0415

    s = _summary(None)
    s["diverged"] = s["bits"] == 32  # every float cell diverged: no float curve
    paths = []
    for i in range(len(s)):
        paths.append(tmp_path / f"{i}.parquet")
        s.iloc[[i]].to_parquet(paths[-1])
    outs = [str(tmp_path / f"{t}.parquet") for t in ("summary", "ecr", "frontier")]
    argv = ["aggregate", "--cells", *map(str, paths), "--summary", outs[0], "--ecr", outs[1], "--frontier", outs[2]]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("qdesign: error: every float cell is flagged") and "2 diverged" in err
    assert not any(Path(o).exists() for o in outs)
    s["diverged"] = (s["bits"] == 2) & (s["width"] == 16)
    for i, p in enumerate(paths):
        s.iloc[[i]].to_parquet(p)
    assert run(argv) == 0
    assert "WARNING: s: 1 of 4 cells flagged (1 diverged)" in capsys.readouterr().out
    assert len(pd.read_parquet(outs[1])) == 3


def test_report_tables_page_names_flagged_cells():
    from qdesign.figures.report import tables_html  # noqa: PLC0415

    s = _summary(lambda s: (s["bits"] == 2) & (s["width"] == 32))
    usable = s[~s["chance_level"]]
    page = tables_html(s, ecr_table(usable), frontier_table(usable), "s")
    assert "Warning:</b> s: 1 of 4 cells flagged (1 at chance level)" in page


def test_the_run_console_lists_this_runs_warnings_and_errors(tmp_path):
    import io  # noqa: PLC0415
    import time  # noqa: PLC0415

    from qdesign.run.console import report_run  # noqa: PLC0415

    logs = tmp_path / "results" / "logs"
    old = logs / "retrain" / "s" / "fixed" / "b2" / "w8-s0.log"
    old.parent.mkdir(parents=True)
    old.write_text("WARNING: from an earlier run\n")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    start = time.time()
    (logs / "retrain" / "s" / "fixed" / "b2" / "w16-s0.log").write_text(
        "epoch 1/2 loss 0.5\nWARNING: 2-bit (fixed) s width 16 seed 0 test error 0.9 is at chance level\ndone\n"
    )
    (logs / "train_float" / "t").mkdir(parents=True)
    (logs / "train_float" / "t" / "w8-s0.log").write_text("qdesign: error: float t width 8 seed 0 diverged\n")
    out = io.StringIO()
    lines = report_run(logs, start, stream=out)
    assert len(lines) == 2 and "earlier run" not in out.getvalue()
    text = out.getvalue().splitlines()
    assert text[0] == "qdesign: 1 warning(s) and 1 failed job(s) in this run, from their logs:"
    assert text[1].endswith("w16-s0.log: WARNING: 2-bit (fixed) s width 16 seed 0 test error 0.9 is at chance level")
    assert text[2].endswith("t/w8-s0.log: qdesign: error: float t width 8 seed 0 diverged")
    assert report_run(tmp_path / "nothing", start, stream=io.StringIO()) == []


def test_error_vs_memory_marks_chance_level_cells():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415

    from qdesign.figures.study import plot_error_vs_memory  # noqa: PLC0415

    from .study_tables import synthetic_ecr, synthetic_frontier  # noqa: PLC0415

    for flagged in (False, True):
        summary = _summary(lambda s, f=flagged: (s["bits"] == 2) & (s["width"] == 16) & f)
        ax = Figure().subplots()
        plot_error_vs_memory(summary, synthetic_frontier(synthetic_ecr(summary)), ax)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert ("chance level" in labels) == flagged


# ------------------------------------------------------------------ exports: where they write, what they read
# (export_study: results/s of a two-method digits study with its tables, tests/test_export.py)

from qdesign.export import packed  # noqa: E402
from qdesign.run.cli import run as cli_run  # noqa: E402

from .trained import two_method_study  # noqa: E402


@pytest.fixture(scope="module")
def export_study(tmp_path_factory):
    return two_method_study(tmp_path_factory.mktemp("export-study") / "results")


def export_cli(capsys, *argv):
    """``python -m qdesign ...`` in this process: (exit code, stdout, stderr)."""
    code = cli_run([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_user_error(code, err, *needles):
    assert code == 1 and err.startswith("qdesign: error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    assert "delete" not in err, err  # never advice to delete a file the user may need
    return err


def _quant_cell(export_study):
    return export_study["dir"] / "fixed" / "b2" / "w16-s0"


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
@pytest.mark.parametrize("target", ["model.pt", "metrics.parquet", "dataset", "model.pt via a linked folder"])
def test_export_never_writes_over_its_own_inputs(export_study, tmp_path, capsys, target, force):
    """Issue 26 item 2: `--out <cell>/model.pt` wrote the packed file over the
    cell's checkpoint (exit 0). An input is refused under any name, --force or not."""
    cell = _quant_cell(export_study)
    data = export_study["data"]
    path = {"model.pt": cell / "model.pt", "metrics.parquet": cell / "metrics.parquet", "dataset": data}.get(target)
    if path is None:
        (tmp_path / "link").symlink_to(cell, target_is_directory=True)
        path = tmp_path / "link" / "model.pt"
    before = path.read_bytes()
    args = ("export", cell, "--format", "packed", "--out", path, "--verify", export_study["data"], *force)
    one_line_user_error(*export_cli(capsys, *args)[::2], "an input of this export")
    assert path.read_bytes() == before


def test_export_replaces_an_existing_file_only_when_forced(export_study, tmp_path, capsys):
    out = tmp_path / "mine.qdpk"
    out.write_bytes(b"my own file")
    args = ("export", _quant_cell(export_study), "--format", "packed", "--out", out, "--verify", export_study["data"])
    one_line_user_error(*export_cli(capsys, *args)[::2], f"{out} exists", "--force")
    assert out.read_bytes() == b"my own file"
    code, stdout, err = export_cli(capsys, *args, "--force")
    assert code == 0 and "verified" in stdout, err
    assert packed.read_packed(out).n_classes == 10


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
@pytest.mark.parametrize("kind", ["named pipe", "directory", "symbolic link", "character device"])
def test_export_never_writes_over_a_non_regular_file(export_study, tmp_path, capsys, kind, force):
    """Issue 26 item 2: run as root, `--out /dev/null` replaced the device node
    with a regular file. Devices, pipes, directories and links are refused
    even with --force (the device here is a copy of /dev/null's node in a
    temporary folder)."""
    target = tmp_path / "target"
    if kind == "named pipe":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "symbolic link":
        (tmp_path / "real").write_bytes(b"the link's target")
        target.symlink_to(tmp_path / "real")
    else:
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    before = os.lstat(target)
    cell, data = _quant_cell(export_study), export_study["data"]
    args = ("export", cell, "--format", "packed", "--out", target, "--verify", data, *force)
    one_line_user_error(*export_cli(capsys, *args)[::2], f"is a {kind}, not a regular file")
    after = os.lstat(target)
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)
    if kind == "symbolic link":
        assert (tmp_path / "real").read_bytes() == b"the link's target"


@pytest.mark.parametrize("where", ["under a regular file", "in /proc", "on a read-only file system"])
def test_export_to_a_place_it_cannot_write_is_one_line(export_study, tmp_path, capsys, monkeypatch, where):
    """Issue 26 item 9: `--out` under a file, on a read-only file system or in
    /proc gave a traceback. (The read-only mount itself: benchmarks/hostile_slow.py.)"""
    import tempfile  # noqa: PLC0415

    if where == "under a regular file":
        (tmp_path / "file").write_text("a file, not a folder")
        out, needle = tmp_path / "file" / "sub" / "net.qdpk", f"{tmp_path / 'file'} is a file, not a folder"
    elif where == "in /proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc")
        out, needle = Path("/proc/net.qdpk"), "cannot write /proc/net.qdpk"
    else:

        def read_only(*a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
        out, needle = tmp_path / "net.qdpk", "Read-only file system"
    args = ("export", _quant_cell(export_study), "--format", "onnx", "--out", out, "--verify", export_study["data"])
    one_line_user_error(*export_cli(capsys, *args)[::2], needle)
    assert not out.exists()


@pytest.mark.parametrize(
    ("cell", "edit"),
    [("fixed", "float"), ("float", "quantized"), ("fixed", "other"), ("learned", None)],
    ids=["quantized-as-float", "float-as-quantized", "unknown-kind", "kind-key-removed"],
)
def test_checkpoint_with_an_edited_kind_is_one_line(export_study, tmp_path, capsys, cell, edit):
    """Issue 26 item 9: a checkpoint whose `kind` was edited gave a KeyError."""
    src = export_study["dir"] / cell / ("" if cell == "float" else "b2") / "w16-s0"
    bad = tmp_path / "cell"
    shutil.copytree(src, bad)
    ckpt = torch.load(bad / "model.pt", weights_only=True)
    if edit is None:
        del ckpt["kind"]
    else:
        ckpt["kind"] = edit
    torch.save(ckpt, bad / "model.pt")
    args = ("export", bad, "--format", "packed", "--out", tmp_path / "x.qdpk", "--verify", export_study["data"])
    err = one_line_user_error(*export_cli(capsys, *args)[::2], str(bad / "model.pt"))
    assert "kind" in err or "missing keys" in err


def _splits_file(export_study, tmp_path):
    from qdesign.core.specs import split_key  # noqa: PLC0415
    from qdesign.nn.data import load_prepared, write_splits  # noqa: PLC0415

    path = export_study["dir"].parent / "data" / "splits" / "hostile.pt"
    write_splits(load_prepared(export_study["data"]), split_key("digits", 0.1, 0, None), path)
    return path


@pytest.mark.parametrize(
    ("what", "needle"),
    [
        ("summary.parquet", "is a Parquet table"),
        ("splits", "is a study's split file"),
        ("checkpoint", "is a cell's checkpoint"),
        ("text", "not a PyTorch file"),
    ],
)
def test_verify_with_a_file_of_another_kind_names_it_and_not_delete(export_study, tmp_path, capsys, what, needle):
    """Issue 26 item 10: `--verify results/<study>/summary.parquet` said
    "corrupt ... delete it and rerun" about a valid file of another kind."""
    path = {
        "summary.parquet": export_study["dir"] / "summary.parquet",
        "checkpoint": export_study["dir"] / "float" / "w16-s0" / "model.pt",
    }.get(what)
    if what == "splits":
        path = _splits_file(export_study, tmp_path)
    elif what == "text":
        path = export_study["dir"].parent / "notes.txt"
        path.write_text("my notes")
    before = path.read_bytes()
    args = ("export", _quant_cell(export_study), "--format", "packed", "--out", tmp_path / "x.qdpk", "--verify", path)
    err = one_line_user_error(*export_cli(capsys, *args)[::2], str(path), needle, "results/data/<dataset>.pt")
    assert "corrupt" not in err
    assert path.read_bytes() == before and not (tmp_path / "x.qdpk").exists()


def test_dataset_prepared_with_another_split_seed_is_named(export_study, tmp_path, capsys):
    """Issue 26 item 10: a digits dataset prepared with another split seed gave
    a generic "export check failed". The prepared file records its split
    seed; a file without the record is caught by the cell's own error on it."""
    other = tmp_path / "digits-seed1.pt"
    write_prepared(prepare_dataset("digits", split_seed=1), other)
    args = ("export", _quant_cell(export_study), "--format", "packed", "--out", tmp_path / "x.qdpk", "--verify", other)
    one_line_user_error(*export_cli(capsys, *args)[::2], "prepared with split_seed 1", "split_seed 0", "--split-seed 0")
    older = tmp_path / "digits-seed1-unrecorded.pt"
    payload = torch.load(other, weights_only=True)
    del payload["split_seed"]
    torch.save(payload, older)
    args = ("export", _quant_cell(export_study), "--format", "packed", "--out", tmp_path / "x.qdpk", "--verify", older)
    one_line_user_error(*export_cli(capsys, *args)[::2], "not the data cell", "another split_seed")
    assert not (tmp_path / "x.qdpk").exists()


def test_export_frontier_writes_only_new_files_unless_forced(export_study, tmp_path, capsys):
    """Issue 26 item 2 for `export-frontier`'s folder: a file it did not write
    is refused before any export (--force replaces it); a folder that is a
    file is one line."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "manifest.parquet").write_bytes(b"my own manifest")
    args = ("export-frontier", export_study["dir"], "--data", export_study["data"], "--out-dir", out)
    one_line_user_error(*export_cli(capsys, *args)[::2], "manifest.parquet exists", "--force")
    assert [p.name for p in out.iterdir()] == ["manifest.parquet"]
    assert (out / "manifest.parquet").read_bytes() == b"my own manifest"
    (tmp_path / "afile").write_text("x")
    args_file = (*args[:-1], tmp_path / "afile")
    one_line_user_error(*export_cli(capsys, *args_file)[::2], "is not a folder")
    code, _, err = export_cli(capsys, *args, "--force")
    assert code == 0, err
    assert len(pd.read_parquet(out / "manifest.parquet")) == 6


def test_export_frontier_failure_leaves_none_of_its_files(export_study, tmp_path, capsys, monkeypatch):
    from qdesign.export import verify  # noqa: PLC0415

    calls = []

    def third_fails(self):  # the third file checked fails its check
        if self.path not in calls:
            calls.append(self.path)
        return "simulated mismatch" if calls.index(self.path) == 2 else None

    monkeypatch.setattr(verify.ExportCheck, "problem", property(third_fails))
    out = tmp_path / "export"
    args = ("export-frontier", export_study["dir"], "--data", export_study["data"], "--out-dir", out)
    one_line_user_error(*export_cli(capsys, *args)[::2], "simulated mismatch")
    assert len(calls) == 3 and list(out.iterdir()) == []  # the two files written before are removed again


# ------------------------------------------------------------------ methods are never pooled as seeds


def test_aggregate_tables_are_per_method(two_method_study):
    t = two_method_study
    assert len(t.summary) == len(t.widths) * len(t.seeds) * (1 + len(t.bits) * len(t.methods))
    q = t.ecr[t.ecr.bits < 32]
    assert len(q) == len(t.widths) * len(t.bits) * len(t.methods) and set(q["n_seeds"]) == {len(t.seeds)}
    for r in q.itertuples():
        assert r.error == pytest.approx(t.mean(r.method, r.width, r.bits))
    assert t.mean("learned", 16, 2) != pytest.approx(t.pooled(16, 2))  # the fixture can tell them apart
    cells = t.frontier.dropna(subset=["bits"])
    assert set(cells.loc[cells.bits < 32, "method"]) <= set(t.methods)
    for r in cells[cells.bits < 32].itertuples():
        assert r.error == pytest.approx(t.mean(r.method, r.width, r.bits))


def _md_rows(text: str, after: str) -> list[list[str]]:
    """The rows of the first markdown table after the line ``after``."""
    lines = text[text.index(after) + len(after) :].strip().splitlines()
    rows = [ln for ln in lines[2:] if ln.startswith("|")]
    end = next((i for i, ln in enumerate(lines[2:]) if not ln.startswith("|")), len(lines) - 2)
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows[:end]]


def test_findings_are_per_method(two_method_study, capsys):
    from qdesign.analysis.findings import report  # noqa: PLC0415
    from qdesign.run.cli import run  # noqa: PLC0415

    t = two_method_study
    text = report(t.study_dir)
    assert "fixed: 4 widths x 2 seeds; learned: 4 widths x 2 seeds" in text
    section_a = text[text.index("(a)") : text.index("(b)")]
    for m in t.methods:
        rows = _md_rows(section_a, f"Method **{m}**:")
        assert [int(r[0]) for r in rows] == list(t.widths)
        for r in rows:
            assert float(r[2].rstrip("%")) == pytest.approx(100 * t.mean(m, int(r[0]), 2), abs=0.005)
    section_b = text[text.index("(b)") : text.index("(c)")]
    for m in t.methods:
        rows = _md_rows(section_b, f"Method **{m}**:")
        assert [r[4].split(" of ")[1] for r in rows] == [str(len(t.widths))] * len(t.bits)
    section_d = text[text.index("(d)") :]
    assert "| bits (method) |" in section_d and "Pareto-optimal cells by bits and method" in section_d
    for r in _md_rows(section_d, "(d) best cell per weight-memory budget"):
        if r[2] != "float":
            bits, method = r[2].split("-bit (")
            assert float(r[3].rstrip("%")) == pytest.approx(
                100 * t.mean(method.rstrip(")"), int(r[1]), int(bits)), abs=0.005
            )
    assert run(["findings", str(t.study_dir)]) == 0
    assert "Method **learned**:" in capsys.readouterr().out


def test_report_tables_page_is_per_method(two_method_study):
    from qdesign.figures.report import tables_html  # noqa: PLC0415

    from .helpers import html_tables  # noqa: PLC0415

    t = two_method_study
    page = tables_html(t.summary, t.ecr, t.frontier, t.study)
    cells, ecr = html_tables(page)[:2]
    q = cells[cells["method"] != "float"]
    assert len(q) == len(t.widths) * len(t.bits) * len(t.methods)
    assert set(q["seeds"].astype(int)) == {len(t.seeds)}
    for _, r in q.iterrows():
        want = 100 * t.mean(r["method"], int(r["width"]), int(r["bits"]))
        assert float(r["test error (%)"]) == pytest.approx(want, rel=1e-3)
    assert set(ecr["method"]) == set(t.methods) and set(ecr["seeds"].astype(int)) == {len(t.seeds)}


# ------------------------------------------------------------------ one line naming the file or key, no bad advice


def _sensitivity_table(path: Path, **drop) -> Path:
    table = pd.DataFrame(
        {
            "layer": [0, 0],
            "n_weights": [10, 10],
            "bits": [2, 4],
            "d_val_loss": [0.5, 0.1],
            "float_hash": ["abc", "abc"],
        }
    ).drop(columns=list(drop))
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path)
    return path


def test_sensitivity_table_without_float_hash_is_one_line(tmp_path):
    from qdesign.nn.sensitivity import read_sensitivity  # noqa: PLC0415

    path = _sensitivity_table(tmp_path / "results" / "s" / "sensitivity" / "w8-s0.parquet", float_hash=True)
    with pytest.raises(CheckpointError) as err:
        read_sensitivity(path, float_hash="abc")
    msg = str(err.value)
    assert msg.startswith(f"{path} is not a sensitivity table") and "float_hash" in msg and "\n" not in msg
    assert "delete it and rerun" in msg  # under results/: the pipeline makes it again
    assert read_sensitivity(_sensitivity_table(tmp_path / "ok.parquet"), float_hash="abc").shape[0] == 2


@pytest.mark.parametrize("content", [b"not parquet", None])
def test_sensitivity_reader_never_advises_deleting_a_users_file(tmp_path, content):
    from qdesign.nn.sensitivity import read_sensitivity  # noqa: PLC0415

    mine = tmp_path / "mine.parquet"
    if content is None:
        _sensitivity_table(mine, float_hash=True)
    else:
        mine.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_sensitivity(mine, float_hash="abc")
    assert str(mine) in str(err.value) and "delete" not in str(err.value)


def test_findings_on_a_folder_without_ecr_is_one_line(two_method_study, capsys):
    from qdesign.run.cli import run  # noqa: PLC0415

    t = two_method_study
    t.table("ecr").unlink()
    assert run(["findings", str(t.study_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qdesign: error: {t.table('ecr')} not found") and "\n" not in err
    assert run(["findings", str(t.root / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_output_into_a_closed_pipe_ends_quietly(two_method_study):
    """``python -m qdesign findings ... | head -1``: the reader is gone before we write."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    import qdesign  # noqa: PLC0415

    t = two_method_study
    env = {**os.environ, "PYTHONPATH": str(Path(qdesign.__file__).parents[1])}  # the qdesign under test
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdesign", "findings", *[str(t.study_dir)] * 40],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()  # like head after its first line, before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_yaml_11_exponent_without_a_dot_says_how_to_write_it(tmp_path):
    from qdesign.core.config import load_config  # noqa: PLC0415

    p = tmp_path / "c.yaml"
    p.write_text("studies:\n  s:\n    dataset: digits\n    model: {type: fcdnn, widths: [8]}\n    training: {lr: 1e-3}")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert msg == (
        "config: studies.s.training.lr: '1e-3' is not of type number "
        "(YAML reads 1e-3 as a string: write 1.0e-3 or 0.001)"
    )
    p.write_text(p.read_text().replace("1e-3", "1.0e-3"))
    assert load_config(p)["studies"]["s"]["training"]["lr"] == 0.001


@pytest.mark.parametrize("text", ["1e400", "1e400KiB", "1e308GiB"])
def test_a_budget_beyond_floats_is_not_called_too_small(text):
    from qdesign.analysis.recommend import parse_budget  # noqa: PLC0415

    with pytest.raises(ConfigError) as err:
        parse_budget(text)
    assert "too large" in str(err.value) and "at least 1 bit" not in str(err.value)
    with pytest.raises(ConfigError, match="at least 1 bit"):
        parse_budget("0.5bits")


# ------------------------------------------------------------------ kill -9 of snakemake ends its local jobs

# a stand-in for a local job's command: announces itself, works 3 s, then writes its output
LOCAL_JOB = """
import os, sys, time
from qdesign.run import cli
def slow(args):
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(3.0)
    open(sys.argv[2], "w").write("written after its Snakemake died")
cli._COMMANDS["findings"] = slow
raise SystemExit(cli.main(["findings", "x"]))
"""
# a stand-in for Snakemake: marks itself as the owner (as common.smk does) and starts a local job as
# Snakemake does, `bash -c` in its own process group, then waits to be killed
FAKE_SNAKEMAKE_LOCAL = """
import subprocess, sys, time
try:
    from qdesign.run import lifeline
    lifeline.mark_owner()
except ImportError:  # a qdesign without it (checking that this test fails there)
    pass
subprocess.Popen(["bash", "-c", f"{sys.executable} -c '{sys.argv[1]}' {sys.argv[2]} {sys.argv[3]}; true"])
time.sleep(600)
"""


def _env_for_jobs(extra: dict | None = None) -> dict:
    import qdesign  # noqa: PLC0415

    env = {**os.environ, "PYTHONPATH": str(Path(qdesign.__file__).parents[1])}
    env.pop("QDESIGN_RUN_OWNER", None)
    return {**env, **(extra or {})}


def _wait_for_file(path: Path, seconds: float) -> bool:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return True
        time.sleep(0.02)
    return False


def _ended_within(pid: int, seconds: float) -> bool:
    import time  # noqa: PLC0415

    from qdesign.run.worker import _alive  # noqa: PLC0415

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_kill_9_of_snakemake_ends_its_local_jobs(tmp_path):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    started, result = tmp_path / "job.pid", tmp_path / "result.txt"
    smk = subprocess.Popen(
        [sys.executable, "-c", FAKE_SNAKEMAKE_LOCAL, LOCAL_JOB, str(started), str(result)], env=_env_for_jobs()
    )
    try:
        assert _wait_for_file(started, 60), "the local job never started"
        job = int(started.read_text())
        smk.kill()  # kill -9: no handler of Snakemake's runs
        smk.wait()
        assert _ended_within(job, 2.0), "the local job survived its Snakemake"
        time.sleep(3.5)  # past the job's own 3 s: it must never write its output
        assert not result.exists()
    finally:
        smk.kill()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_jobs_of_a_dead_snakemake_end_at_once_and_others_are_left_alone(tmp_path):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from qdesign.run import lifeline  # noqa: PLC0415

    dead = subprocess.Popen(
        [sys.executable, "-c", "from qdesign.run import lifeline; print(lifeline.mark_owner())"],
        env=_env_for_jobs(),
        stdout=subprocess.PIPE,
        text=True,
    )
    owner = dead.communicate()[0].strip()  # its identity; the process has exited
    assert owner.count(":") == 3 and not lifeline.owner_alive(int(owner.split(":")[1]), owner.split(":")[2])
    env = _env_for_jobs({lifeline.ENV: owner})
    argv = [sys.executable, "-c", LOCAL_JOB, str(tmp_path / "a.pid"), str(tmp_path / "a.txt")]
    # a job of that Snakemake (its process group, which is ours here) started after it died: ends before any work
    assert subprocess.run(argv, env=env, timeout=60).returncode == -9
    assert not (tmp_path / "a.pid").exists()
    # a process of another group with the same environment (a cluster job: sbatch exports it) is left alone
    argv = [sys.executable, "-c", LOCAL_JOB, str(tmp_path / "b.pid"), str(tmp_path / "b.txt")]
    assert subprocess.run(argv, env=env, timeout=60, start_new_session=True).returncode == 0
    assert (tmp_path / "b.txt").exists()


@pytest.mark.slow
def test_lr_1e6_studies_fail_the_run_and_leave_no_table(tmp_path):
    """Snakemake on tiny digits studies: float at lr 1e6 and learned retraining at lr 1e6 exit non-zero and
    leave no table; a study that opts out completes with its diverged cells flagged, out of ECR and
    frontier, and the run's console names every one."""
    import subprocess  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    from qdesign.run.invocation import snakemake_command  # noqa: PLC0415

    def study(training_lr, retraining_lr, methods, widths=(8,), **extra):
        return {
            "dataset": "digits",
            "model": {"type": "fcdnn", "depth": 2, "widths": list(widths)},
            "bits": [2],
            "seeds": [0],
            "training": {"epochs": 2, "lr": training_lr, "batch_size": 64},
            "retraining": {"epochs": 2, "lr": retraining_lr, "batch_size": 64, "methods": methods},
            **extra,
        }

    cfg = {
        "device": "cpu",
        "plots": {"formats": ["png"]},
        "studies": {
            "float-lr": study(1e6, 0.001, ["fixed"]),
            "learned-lr": study(0.01, 1e6, ["learned"]),
            "optout": study(0.01, 1e6, ["learned", "fixed"], widths=(8, 16), fail_on_divergence=False),
        },
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        snakemake_command(tmp_path, "--cores", 2, "--configfile", tmp_path / "c.yaml"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    console = res.stdout + res.stderr
    assert res.returncode != 0, console[-3000:]
    for name in ("float-lr", "learned-lr"):
        left = [p.name for p in (tmp_path / "results" / name).glob("*.parquet")]
        assert left == [] and not (tmp_path / "results" / name / "figures").exists(), left
    assert "qdesign: error: float float-lr width 8 seed 0 diverged in epoch 1/2" in console
    assert "qdesign: error: 2-bit (learned) learned-lr width 8 seed 0 diverged in epoch 1/2" in console
    assert "studies.learned-lr.retraining.lr (now 1e+06)" in console
    out = tmp_path / "results" / "optout"
    summary, ecr = pd.read_parquet(out / "summary.parquet"), pd.read_parquet(out / "ecr.parquet")
    frontier = pd.read_parquet(out / "frontier.parquet")
    assert len(summary) == 6 and int(summary["diverged"].sum()) == 4
    assert set(ecr["bits"]) == {32} and set(frontier["bits"].dropna()) == {32}
    assert "WARNING: optout: 4 of 6 cells flagged (4 diverged) and kept out of the ECR and the frontier" in console
    assert console.count("kept because studies.optout.fail_on_divergence is false") == 4


def test_scaling_law_is_not_fitted_on_flagged_cells(two_method_study, tmp_path, capsys):
    from qdesign.run.cli import run  # noqa: PLC0415

    s = two_method_study.summary.copy()
    s["diverged"] = (s["width"] == 16) & (s["bits"] == 2) & (s["seed"] == 0)
    s.to_parquet(tmp_path / "flagged.parquet")
    s[~s["diverged"]].drop(columns="diverged").to_parquet(tmp_path / "without.parquet")
    for name in ("flagged", "without"):
        argv = ["scaling", "--summary", str(tmp_path / f"{name}.parquet"), "--out", str(tmp_path / f"{name}.out")]
        assert run([*argv, "--n-boot", "5"]) == 0
    # one law per method: the flagged cell of each method is left out of its law
    assert "WARNING: two-methods: 2 of 40 cells flagged (2 diverged) and kept out of the scaling law" in (
        capsys.readouterr().out
    )
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "flagged.out"), pd.read_parquet(tmp_path / "without.out"))


def test_the_law_recommend_and_figures_answer_per_method(two_method_study, tmp_path):
    """The design model and the figures on a study whose two methods differ:
    one law per method, recommend's seed counts and means per method (never
    pooled), the method named with every design, and the methods figure draws
    both while the one-method figures say which they show."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    from qdesign.analysis import scaling as S  # noqa: PLC0415
    from qdesign.analysis.recommend import advise  # noqa: PLC0415
    from qdesign.figures.catalog import draw_figure  # noqa: PLC0415

    t = two_method_study
    table = S.scaling_table(t.summary, n_boot=5, nested=False)
    assert S.fitted_methods(table) == ["fixed", "learned"]
    fixed, _ = S.law_from_table(table, "fixed")
    learned, _ = S.law_from_table(table, "learned")
    assert fixed.predict(64 * 794, 2) > learned.predict(64 * 794, 2)  # learned is much better at 2 bits
    rec = advise(t.summary, table, 10**9)
    trained = rec.trained
    assert (trained["n"] == len(t.seeds)).all()  # never twice the seeds
    for r in trained[trained["method"] != "float"].itertuples():
        assert r.test == pytest.approx(t.mean(r.method, r.width, r.bits))
    assert set(rec.designs["method"]) == {"fixed", "learned", "float"}
    tables = {"summary": t.summary, "ecr": t.ecr, "frontier": t.frontier, "scaling": table}
    fig = draw_figure("scaling_fit", tables)
    assert "fixed" in fig.get_axes()[0].get_title()
    fig = draw_figure("method_comparison", tables)
    labels = [x.get_text() for x in fig.get_axes()[0].get_legend().get_texts()]
    assert "method: fixed" in labels and "method: learned" in labels
    assert isinstance(fig, Figure)
