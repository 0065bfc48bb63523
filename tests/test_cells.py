"""Models, training loop and the float / retrain cells on real (digits) data."""

import math

import pandas as pd
import pytest
import torch

from qdesign.core.config import validate_config
from qdesign.core.memory import network_memory_bits
from qdesign.core.specs import float_spec, quant_spec, study_split_key
from qdesign.nn.cells import CheckpointError, load_checkpoint, retrain, train_float
from qdesign.nn.data import prepare_dataset, write_prepared, write_splits
from qdesign.nn.models import build_model, count_weights, weight_layers
from qdesign.nn.train import lr_factor
from qdesign.quantize import max_level
from qdesign.run.resources import training_flops_per_example

from .conftest import tiny_study


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    write_prepared(prepare_dataset("digits"), path)
    return path


def make_cfg(**study):
    return validate_config({"device": "cpu", "studies": {"s": tiny_study(**study)}})


# ------------------------------------------------------------------ models


def test_fcdnn_shape_and_weight_count():
    cfg = {"type": "fcdnn", "depth": 3, "dropout": 0.0}
    m = build_model(cfg, 100, (1, 28, 28), 10)
    assert count_weights(m) == (784 * 100 + 100 * 100 * 2 + 100 * 10, 3 * 100 + 10)
    assert m(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert training_flops_per_example(cfg, 100, (1, 28, 28)) == 6 * count_weights(m)[0]


def test_cnn_shape_and_layers():
    cfg = {
        "type": "cnn",
        "channel_multipliers": [1, 2],
        "convs_per_block": 2,
        "kernel_size": 3,
        "pool": "max",
        "fc_units": 32,
        "dropout": 0.1,
    }
    m = build_model(cfg, 4, (3, 32, 32), 10)
    names = [n for n, _, _ in weight_layers(m)]
    assert len(names) == 6  # 4 convs + hidden fc + classifier
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    w, b = count_weights(m)
    convs = 3 * 4 * 9 + 4 * 4 * 9 + 4 * 8 * 9 + 8 * 8 * 9
    assert w == convs + 8 * 8 * 8 * 32 + 32 * 10 and b == 4 + 4 + 8 + 8 + 32 + 10


def test_lr_schedules():
    assert lr_factor("constant", 5, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert [lr_factor("step", e, 8) for e in (0, 3, 4, 5, 6, 7)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


# ------------------------------------------------------------------ cells


def test_float_cell_outputs_and_determinism(digits, tmp_path):
    cfg = make_cfg()
    spec = float_spec(cfg, "s", 16, 0)
    a = train_float(spec, digits, tmp_path / "a")
    b = train_float(spec, digits, tmp_path / "b")
    row = pd.read_parquet(tmp_path / "a" / "metrics.parquet").iloc[0]
    assert row["bits"] == 32 and row["width"] == 16 and row["study"] == "s"
    assert row["n_weights"] == 64 * 16 + 16 * 16 + 16 * 10 and row["n_biases"] == 16 + 16 + 10
    assert row["memory_bits_weights"] == 32 * row["n_weights"]
    assert row["memory_bits_total"] == 32 * (row["n_weights"] + row["n_biases"])
    assert 0 <= row["test_error"] < 0.5 and math.isnan(row["direct_test_error"])
    assert row["epochs_run"] == 3 and 1 <= row["best_epoch"] <= 3
    assert 50 < row["max_rss_mb"] < 20000
    assert row["config_hash"] == a["config_hash"] and row["torch_version"] == torch.__version__
    # same spec and seed: identical numbers and identical weights on CPU
    assert a["test_error"] == b["test_error"] and a["val_error"] == b["val_error"]
    sa, sb = load_checkpoint(tmp_path / "a" / "model.pt"), load_checkpoint(tmp_path / "b" / "model.pt")
    assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])
    # another seed: other weights
    c = train_float(float_spec(cfg, "s", 16, 1), digits, tmp_path / "c")
    sc = load_checkpoint(tmp_path / "c" / "model.pt")
    assert not torch.equal(sa["state_dict"]["1.weight"], sc["state_dict"]["1.weight"])
    assert c["seed"] == 1


def test_cells_from_a_splits_file_record_the_same_numbers(digits, tmp_path):
    """The workflow hands cells their study's mapped splits file; the numbers
    are those of splitting the prepared dataset in the cell."""
    cfg = make_cfg()
    write_splits(prepare_dataset("digits"), study_split_key(cfg, "s"), tmp_path / "s.pt")
    keys = ("test_error", "val_error", "direct_test_error", "direct_val_error", "steps", "best_epoch")
    rows = []
    for data, out in ((digits, tmp_path / "a"), (tmp_path / "s.pt", tmp_path / "b")):
        train_float(float_spec(cfg, "s", 8, 0), data, out / "f")
        row = retrain(quant_spec(cfg, "s", 8, 2, 0), data, out / "f" / "model.pt", out / "q")
        rows.append({k: row[k] for k in keys})
    assert rows[0] == rows[1]


@pytest.mark.parametrize("bits", [2, 3])
def test_quantized_cell(digits, tmp_path, bits):
    cfg = make_cfg()
    train_float(float_spec(cfg, "s", 16, 0), digits, tmp_path / "f")
    row = retrain(quant_spec(cfg, "s", 16, bits, 0), digits, tmp_path / "f" / "model.pt", tmp_path / "q")
    assert row["bits"] == bits and row["quantized_layers"] == 3 and len(row["steps"]) == 3
    assert all(s > 0 for s in row["steps"])
    n_w, n_b = row["n_weights"], row["n_biases"]
    assert row["memory_bits_weights"] == bits * n_w
    assert row["memory_bits_total"] == bits * n_w + 3 * 32 + 32 * n_b
    assert 0 <= row["direct_test_error"] <= 1 and 0 <= row["test_error"] <= 1
    # retraining keeps the best validation epoch, the direct model included
    assert row["val_error"] <= row["direct_val_error"]
    ckpt = load_checkpoint(tmp_path / "q" / "model.pt")
    assert ckpt["bits"] == bits and set(ckpt["codes"]) == {"1", "3", "5"}
    for name, entry in ckpt["codes"].items():
        codes = entry["codes"]
        assert codes.dtype == torch.int8 and int(codes.abs().max()) <= max_level(bits)
        # the exported float weights are exactly codes x step
        baked = ckpt["state_dict"][f"{name}.weight"]
        assert torch.allclose(baked, codes.float() * entry["step"], rtol=0, atol=1e-7)
    saved = pd.read_parquet(tmp_path / "q" / "metrics.parquet").iloc[0]
    assert list(saved["steps"]) == pytest.approx(row["steps"])


def test_float_first_and_last_layers_cost_32_bits(digits, tmp_path):
    cfg = make_cfg(retraining={"epochs": 1, "float_first": True, "float_last": True})
    train_float(float_spec(cfg, "s", 8, 0), digits, tmp_path / "f")
    row = retrain(quant_spec(cfg, "s", 8, 2, 0), digits, tmp_path / "f" / "model.pt", tmp_path / "q")
    layers = [(64 * 8, 8, None), (8 * 8, 8, 2), (8 * 10, 10, None)]
    assert row["quantized_layers"] == 1
    assert (row["memory_bits_weights"], row["memory_bits_total"]) == network_memory_bits(layers)


def test_epoch_method_changes_steps(digits, tmp_path):
    cfg = make_cfg(retraining={"epochs": 3, "lr": 0.01, "methods": ["fixed", "epoch"]})
    train_float(float_spec(cfg, "s", 16, 0), digits, tmp_path / "f")
    a = retrain(quant_spec(cfg, "s", 16, 4, 0, "fixed"), digits, tmp_path / "f" / "model.pt", tmp_path / "a")
    b = retrain(quant_spec(cfg, "s", 16, 4, 0, "epoch"), digits, tmp_path / "f" / "model.pt", tmp_path / "b")
    if b["best_epoch"] >= 2:  # steps were re-estimated before the kept epoch
        assert a["steps"] != b["steps"]
    else:
        pytest.skip("the direct / first-epoch model was the best; steps not re-estimated before it")


def test_corrupt_or_mismatched_checkpoint_is_reported(digits, tmp_path):
    cfg = make_cfg()
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        retrain(quant_spec(cfg, "s", 8, 2, 0), digits, bad, tmp_path / "q")
    assert not (tmp_path / "q").exists()  # nothing half-written
    train_float(float_spec(cfg, "s", 8, 0), digits, tmp_path / "f")
    with pytest.raises(CheckpointError, match="different width than this cell needs"):
        retrain(quant_spec(cfg, "s", 16, 2, 0), digits, tmp_path / "f" / "model.pt", tmp_path / "q")
    # a stale network: same width and seed, other training (an old run's child finishing late)
    stale = make_cfg(training={"epochs": 2, "lr": 0.02})
    with pytest.raises(CheckpointError, match="different training .*stale float network"):
        retrain(quant_spec(stale, "s", 8, 2, 0), digits, tmp_path / "f" / "model.pt", tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_learned_cell_exports_exactly(digits, tmp_path):
    """A cell of the learned method: its step moved, its codes stay in -K..K, and
    the packed export reproduces its recorded test error and every prediction."""
    from qdesign.export import export_cell  # noqa: PLC0415
    from qdesign.export.verify import check_export  # noqa: PLC0415

    cfg = make_cfg(retraining={"epochs": 2, "lr": 0.01, "methods": ["fixed", "learned"]})
    train_float(float_spec(cfg, "s", 16, 0), digits, tmp_path / "f")
    fixed = retrain(quant_spec(cfg, "s", 16, 2, 0, "fixed"), digits, tmp_path / "f" / "model.pt", tmp_path / "a")
    learned = retrain(quant_spec(cfg, "s", 16, 2, 0, "learned"), digits, tmp_path / "f" / "model.pt", tmp_path / "b")
    assert learned["method"] == "learned" and learned["direct_test_error"] == fixed["direct_test_error"]
    if learned["best_epoch"] > 0:
        assert learned["steps"] != fixed["steps"]
    ckpt = load_checkpoint(tmp_path / "b" / "model.pt")
    for layer in ckpt["codes"].values():
        assert int(layer["codes"].abs().max()) <= max_level(2)
    out = export_cell(tmp_path / "b", "packed", tmp_path / "b.qdpk", digits)
    check = check_export(tmp_path / "b", out, digits, "packed")
    assert check.n_differ == 0 and check.export_error == learned["test_error"]
