"""Config validation: defaults, one-line errors naming the key, narrow cell specs."""

import copy

import pytest
import yaml

from qdesign.core.config import ConfigError, load_config, validate_config
from qdesign.core.registry import DATASETS, METHODS
from qdesign.core.specs import FloatSpec, QuantSpec, float_spec, quant_spec, spec_from_json, spec_hash, study_cells

from .conftest import tiny_study


def base():
    return {"studies": {"s": tiny_study()}}


def test_default_config_is_valid_and_meets_the_issue(repo):
    cfg = load_config(repo / "config" / "config.yaml")
    fc, cnn = cfg["studies"]["digits-fcdnn"], cfg["studies"]["digits-cnn"]
    assert fc["dataset"] == cnn["dataset"] == "digits"
    assert fc["model"]["depth"] == 3 and len(fc["model"]["widths"]) >= 6
    assert max(fc["model"]["widths"]) / min(fc["model"]["widths"]) >= 16
    assert len(cnn["model"]["widths"]) >= 5
    for s in (fc, cnn):
        assert sorted(s["bits"]) == [2, 3, 4, 5, 6, 8]
        assert len(s["seeds"]) == 3


def test_defaults_are_filled_from_the_schema():
    cfg = validate_config(base())
    s = cfg["studies"]["s"]
    assert cfg["device"] == "auto" and cfg["download"] is True and cfg["plots"]["formats"] == ["png", "pdf"]
    assert s["training"]["optimizer"] == "adam" and s["training"]["epochs"] == 3
    assert s["retraining"]["schedule"] == "cosine" and s["retraining"]["methods"] == ["fixed"]
    assert s["retraining"]["float_first"] is False and s["val_fraction"] == 0.1
    # keys of the other model family are not filled in
    assert "kernel_size" not in s["model"]
    cnn = validate_config({"studies": {"c": tiny_study(model={"type": "cnn", "widths": [2]})}})
    assert "depth" not in cnn["studies"]["c"]["model"]
    assert cnn["studies"]["c"]["model"]["channel_multipliers"] == [1, 2]


def test_input_is_not_modified():
    raw = base()
    before = copy.deepcopy(raw)
    validate_config(raw)
    assert raw == before


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c["studies"]["s"]["training"].update(epoch=3),
            "unknown key 'studies.s.training.epoch' (did you mean 'epochs'?)",
        ),
        (lambda c: c.update(devise="cpu"), "unknown key 'devise' (did you mean 'device'?)"),
        (
            lambda c: c["studies"]["s"]["training"].update(epochs="ten"),
            "studies.s.training.epochs: 'ten' is not of type",
        ),
        (lambda c: c["studies"]["s"].update(bits=[2, 17]), "studies.s.bits.1: 17 is greater than the maximum of 16"),
        (lambda c: c["studies"]["s"].update(bits=[0]), "studies.s.bits.0: 0 is less than the minimum of 1"),
        (lambda c: c["studies"]["s"]["model"].update(widths=[]), "studies.s.model.widths: must not be empty"),
        (lambda c: c["studies"]["s"].update(dataset="imagenet"), "studies.s.dataset: 'imagenet' is not one of"),
        (
            lambda c: c["studies"]["s"]["model"].update(kernel_size=3),
            "studies.s.model.kernel_size does not apply to fcdnn",
        ),
        (lambda c: c["studies"]["s"].update(bits=[2, 32]), "studies.s.bits.1: 32 is greater than the maximum of 16"),
        (lambda c: c.update(studies={}), "studies: {} should be non-empty"),
        (lambda c: c["studies"]["s"].pop("model"), "studies.s: 'model' is a required property"),
        (
            lambda c: c["studies"]["s"].update(val_fraction=1.5),
            "studies.s.val_fraction: 1.5 is greater than or equal to the maximum of 1",
        ),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(edit, message):
    cfg = base()
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_too_many_poolings_for_digits():
    cfg = {"studies": {"c": tiny_study(model={"type": "cnn", "widths": [2], "channel_multipliers": [1, 1, 1, 1]})}}
    with pytest.raises(ConfigError, match="channel_multipliers"):
        validate_config(cfg)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("studies: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base()))
    assert load_config(good)["studies"]["s"]["bits"] == [2, 4]


def test_float_spec_is_narrow():
    """Edits that cannot change a float network do not change its spec, so
    Snakemake's params trigger reruns no float training."""
    cfg = validate_config(base())
    ref = float_spec(cfg, "s", 8, 0).to_json()
    for edit in (
        lambda c: c["studies"]["s"].update(bits=[2, 3, 4]),
        lambda c: c["studies"]["s"]["retraining"].update(epochs=7),
        lambda c: c["studies"]["s"]["model"].update(widths=[8, 16, 32]),
        lambda c: c["studies"]["s"].update(seeds=[0, 1]),
        lambda c: c["plots"].update(dpi=300),
        lambda c: c["studies"].update(other=tiny_study()),
    ):
        edited = validate_config(base())
        edit(edited)
        assert float_spec(edited, "s", 8, 0).to_json() == ref
    changed = validate_config(base())
    changed["studies"]["s"]["training"]["lr"] = 0.1
    assert float_spec(changed, "s", 8, 0).to_json() != ref


def test_quant_spec_names_its_float_network():
    cfg = validate_config(base())
    q = quant_spec(cfg, "s", 8, 2, 0)
    assert q.float_key == float_spec(cfg, "s", 8, 0).key
    ref = q.to_json()
    cfg["studies"]["s"]["plots"] = None  # unrelated keys change nothing
    cfg["studies"]["s"]["bits"] = [2, 3]
    assert quant_spec(cfg, "s", 8, 2, 0).to_json() == ref
    cfg["studies"]["s"]["training"]["lr"] = 0.5  # another float network: another cell
    assert quant_spec(cfg, "s", 8, 2, 0).float_key != q.float_key
    assert quant_spec(cfg, "s", 8, 2, 0, "epoch").to_json() != quant_spec(cfg, "s", 8, 2, 0).to_json()


def test_specs_round_trip_through_json():
    cfg = validate_config(base())
    f, q = float_spec(cfg, "s", 8, 0), quant_spec(cfg, "s", 8, 4, 0, "epoch")
    assert spec_from_json(f.to_json()) == f and isinstance(spec_from_json(f.to_json()), FloatSpec)
    assert spec_from_json(q.to_json()) == q and isinstance(spec_from_json(q.to_json()), QuantSpec)
    assert spec_from_json(q.to_json()).key == q.key


def test_step_update_is_refused_with_its_replacement():
    cfg = base()
    cfg["studies"]["s"]["retraining"]["step_update"] = "epoch"
    with pytest.raises(ConfigError, match=r"step_update was replaced by retraining.methods .*methods: \[epoch\]"):
        validate_config(cfg)


def test_schema_enums_match_the_registry():
    from qdesign.core.config import load_schema  # noqa: PLC0415

    defs = load_schema()["$defs"]
    assert defs["study"]["properties"]["dataset"]["enum"] == list(DATASETS)
    assert defs["retrain"]["properties"]["methods"]["items"]["enum"] == list(METHODS)


def test_methods_are_a_grid_axis_sharing_float_networks():
    study = tiny_study(seeds=[0])
    study["retraining"]["methods"] = ["fixed", "epoch"]
    cells = study_cells(validate_config({"studies": {"s": study}}), "s")
    assert sum(c.is_float for c in cells) == 2  # one float network per width
    assert len(cells) == 2 * (1 + 2 * 2)  # widths x (float + bits x methods)


def test_spec_hash_is_stable_and_order_independent():
    a = {"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}}
    b = {"z": {"a": 2, "b": 1}, "y": [1, 2], "x": 1}
    assert spec_hash(a) == spec_hash(b) and len(spec_hash(a)) == 12
    assert spec_hash(a) != spec_hash({**a, "x": 2})


def test_study_cells_grid():
    cfg = validate_config({"studies": {"s": tiny_study(seeds=[0, 1])}})
    cells = study_cells(cfg, "s")
    assert len(cells) == 2 * 3 * 2  # widths x (float + 2 bits) x seeds
    assert sum(c.is_float for c in cells) == 4


def _schema_keys(node, schema, prefix=""):
    from qdesign.core.config import _resolve  # noqa: PLC0415

    node = _resolve(node, schema)
    for key, sub in node.get("properties", {}).items():
        sub = _resolve(sub, schema)
        if key == "studies":
            yield from _schema_keys(sub["additionalProperties"], schema, "studies.NAME.")
        elif sub.get("type") == "object" and "properties" in sub:
            yield from _schema_keys(sub, schema, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_schema_key_has_a_description_and_is_documented(repo):
    from qdesign.core.config import load_schema  # noqa: PLC0415

    schema = load_schema()
    doc = (repo / "config" / "README.md").read_text()
    keys = list(_schema_keys(schema, schema))
    assert len(keys) > 30
    shared = {"optimizer", "lr", "momentum", "schedule", "epochs", "batch_size", "weight_decay"}
    for key in keys:
        if key.startswith("studies.NAME.retraining.") and key.rsplit(".", 1)[1] in shared:
            assert "`studies.NAME.retraining.*`" in doc
        else:
            assert f"`{key}`" in doc, f"{key} is not documented in config/README.md"
