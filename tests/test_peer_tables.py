"""The peer benchmark's verdict (benchmarks/peer_brevitas.py) and the screen's
held-out set (benchmarks/screen_retraining.py): the parts that decide what a
table says, on synthetic rows and real MNIST indices."""

import importlib.util
import math

import pytest

from .conftest import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(f"qdesign_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def peer():
    return _load("peer_brevitas")


def _row(contender, family, bits, seed, val, test, width=64):
    return dict(
        width=width,
        bits=bits,
        seed=seed,
        contender=contender,
        family=family,
        float_error=0.02,
        direct_error=0.1,
        val_error=val,
        retrained_error=test,
        best_epoch=2,
        levels=2**bits - 1,
        seconds_per_epoch=1.0,
    )


def test_best_per_family_is_chosen_on_validation_and_compared_seed_by_seed(peer):
    rows = []
    for seed, (a, b, c, d, e) in enumerate([(0.050, 0.040, 0.046, 0.049, 0.045), (0.052, 0.042, 0.048, 0.047, 0.043)]):
        # qdesign learned: best on validation, not on test; qdesign fixed: better on test, worse on validation
        rows.append(_row("qdesign learned", "qdesign", 2, seed, 0.030, a))
        rows.append(_row("qdesign fixed", "qdesign", 2, seed, 0.035, b))
        rows.append(_row("brevitas default", "brevitas", 2, seed, 0.031, c))
        rows.append(_row("brevitas MSE learned", "brevitas", 2, seed, 0.033, d))
        rows.append(_row(peer.FAIRNESS, "fairness", 2, seed, 0.020, e))
    (cell,) = peer.summarise(rows)
    assert cell["best_qdesign"] == "qdesign learned" and cell["best_brevitas"] == "brevitas default"
    diffs = [100 * (0.050 - 0.046), 100 * (0.052 - 0.048)]
    assert cell["minus_brevitas"] == pytest.approx(sum(diffs) / 2)
    assert cell["minus_brevitas_se"] == pytest.approx(0.0, abs=1e-9)  # the same gap in both seeds
    assert cell["target"] == 0.0 and cell["meets"] is False  # 2 bits: at or below Brevitas
    fair = [100 * (0.050 - 0.045), 100 * (0.052 - 0.043)]
    assert cell["minus_fairness"] == pytest.approx(sum(fair) / 2)
    assert cell["minus_fairness_se"] == pytest.approx(abs(fair[0] - fair[1]) / 2)


def test_the_target_allows_five_hundredths_of_a_point_above_two_bits(peer):
    def cell(bits, gap):
        rows = []
        for seed in range(3):
            rows.append(_row("qdesign learned", "qdesign", bits, seed, 0.03, 0.05 + gap / 100))
            rows.append(_row("brevitas MSE learned", "brevitas", bits, seed, 0.03, 0.05))
        return peer.summarise(rows)[0]

    assert cell(3, 0.04)["meets"] and not cell(3, 0.06)["meets"] and cell(4, 0.05)["meets"]
    assert cell(2, 0.0)["meets"] and not cell(2, 0.01)["meets"]
    assert math.isnan(cell(3, 0.04)["minus_brevitas_se"]) is False


def test_merge_refuses_overlapping_or_partial_runs(peer, tmp_path, capsys):
    import json  # noqa: PLC0415

    rows = [_row("qdesign learned", "qdesign", 2, 0, 0.03, 0.05)]
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps({"rows": rows}))
    b.write_text(json.dumps({"rows": rows}))
    c.write_text(json.dumps({"rows": [], "partial": True}))
    for files, message in (([a, b], "share"), ([a, c], "partial")):
        with pytest.raises(SystemExit):
            peer.main(["--merge", *map(str, files), "--out", str(tmp_path / "o.json")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_the_screen_never_reads_test_images_nor_the_training_or_validation_ones(shared_data):
    """The screen set is the part of the training pool after the training
    prefix: disjoint from training and validation, and not the test set."""
    import torch  # noqa: PLC0415

    screen = _load("screen_retraining")

    class Args:
        data_dir, split_seed, train_subset, screen_size = str(shared_data), 1, 2000, 1000

    d = screen.screen_splits(Args)
    assert (d.x_train.shape[0], d.x_test.shape[0], d.x_val.shape[0]) == (2000, 1000, 6000)
    rows = {tuple(x.flatten()[::7].tolist()) for x in d.x_test}
    assert not rows & {tuple(x.flatten()[::7].tolist()) for x in d.x_train}
    assert len(rows & {tuple(x.flatten()[::7].tolist()) for x in d.x_val}) <= 2  # MNIST has a few duplicates
    from qdesign.nn.data import make_splits, prepare_dataset  # noqa: PLC0415

    real_test = make_splits(prepare_dataset("mnist", shared_data, download=False), 0.1, 1, 2000).x_test
    assert not torch.equal(d.x_test, real_test[:1000])
