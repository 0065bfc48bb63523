"""Study configuration: loading and schema validation with defaults.

The schema (``workflow/schemas/config.schema.yaml``) is the single source of
truth for keys, types and defaults (its dataset and method enums are tested
against :mod:`qdesign.core.registry`). The cell grid and specs: :mod:`qdesign.core.specs`.
Errors are reported as one line that names the offending key, before any job runs. No torch here: Snakemake imports this
module when it parses the workflow.
"""

from __future__ import annotations

import copy
import decimal
import difflib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .architecture import TRAIN_PARAM_COPIES, n_params, study_layer_specs, weight_specs
from .errors import ConfigError
from .layout import REPO_ROOT, RESERVED
from .memory import parse_budget

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
_CNN_ONLY = {"channel_multipliers", "convs_per_block", "kernel_size", "pool", "fc_units"}
_FCDNN_ONLY = {"depth"}

__all__ = ["ConfigError", "load_config", "load_schema", "retraining_defaults", "validate_config"]


def load_schema() -> dict:
    if not SCHEMA_PATH.is_file():
        raise ConfigError(f"config schema not found at {SCHEMA_PATH} (is qdesign installed from the repository?)")
    return yaml.safe_load(SCHEMA_PATH.read_text())


def retraining_defaults() -> dict:
    """The schema's default of every ``retraining`` key (what a study gets when
    it sets none): the one source of these numbers for code outside a config,
    such as the benchmarks."""
    props = load_schema()["$defs"]["retrain"]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


# ------------------------------------------------------------------ defaults


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ConfigError(f"unsupported schema reference {ref}")
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def _fill_defaults(value: Any, schema: dict, root: dict) -> None:
    """Fill schema defaults into ``value`` in place (objects only, recursively)."""
    schema = _resolve(schema, root)
    if not isinstance(value, dict):
        return
    props = schema.get("properties", {})
    for key, sub in props.items():
        sub_r = _resolve(sub, root)
        if key not in value and "default" in sub_r:
            value[key] = copy.deepcopy(sub_r["default"])
        if key in value:
            _fill_defaults(value[key], sub_r, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, sub_value in value.items():
            if key not in props:
                _fill_defaults(sub_value, extra, root)


# ------------------------------------------------------------------ validation


def _where(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _one_line(error, schema: dict) -> str:
    """Turn a jsonschema error into one line naming the key."""
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(_resolve(error.schema, schema).get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        msgs = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"
            full = f"{where}.{key}" if error.absolute_path else key
            msgs.append(f"unknown key '{full}'{hint}")
        return "; ".join(msgs)
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "minItems" and error.validator_value == 1:
        return f"{where}: must not be empty"
    if error.validator == "type":
        return f"{where}: {error.instance!r} is not of type {error.validator_value}{_yaml_number_hint(error)}"
    if error.validator in ("oneOf", "anyOf"):
        return f"{where}: {error.instance!r} must be {' or '.join(_describe(s) for s in error.validator_value)}"
    return f"{where}: {error.message}"


def _describe(schema: dict) -> str:
    """One alternative of a oneOf/anyOf, in words: "'best_val'", "an integer >= 0"."""
    if "enum" in schema:
        return " or ".join(repr(v) for v in schema["enum"])
    text = {"integer": "an integer", "number": "a number", "string": "a string"}.get(schema.get("type"), "a value")
    return f"{text} >= {schema['minimum']}" if "minimum" in schema else text


_YAML11_STRING_NUMBER = re.compile(r"^([-+]?)([0-9][0-9_]*)(?:\.([0-9_]*))?[eE]([-+]?)([0-9]+)$")


def _yaml_number_hint(error) -> str:
    """Why a number reached the schema as a string, and how to write it: YAML
    1.1 (PyYAML, Snakemake) reads ``1e-3`` as a string, since its floats need
    a dot and a signed exponent (``1.0e-3``)."""
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    if not isinstance(error.instance, str) or not {"number", "integer"} & set(expected):
        return ""
    m = _YAML11_STRING_NUMBER.match(error.instance.strip())
    if m is None:
        return ""
    sign, whole, frac, esign, exp = m.groups()
    try:
        value = decimal.Decimal(error.instance.strip().replace("_", ""))
    except decimal.InvalidOperation:
        return ""
    if not value.is_finite() or abs(value.adjusted()) > 30:
        return ""
    plain = f"{value.normalize():f}"
    if "number" not in expected:  # an integer key: only the plain spelling is an integer
        return f" (YAML reads {error.instance} as a string: write {plain})" if value == value.to_integral() else ""
    dotted = f"{sign}{whole}.{frac or '0'}e{esign or '+'}{exp}"
    return f" (YAML reads {error.instance} as a string: write {dotted} or {plain})"


def _check_finite(value: Any, path: tuple = ()) -> None:
    """.nan, .inf and -.inf pass every jsonschema bound (comparisons with NaN
    are false); no key of the config has a use for them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config: {_where(path)}: {value!r} is not a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, (*path, k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(v, (*path, i))


def _strict_validator(schema: dict):
    """A Draft 2020-12 validator whose "integer" excludes floats: jsonschema
    accepts 8.0 as an integer, and ``widths: [8.0]`` would reach torch."""
    from jsonschema import Draft202012Validator, validators  # noqa: PLC0415

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, inst: isinstance(inst, int) and not isinstance(inst, bool)
    )
    return validators.extend(Draft202012Validator, type_checker=checker)(schema)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def _check_model_sizes(cfg: Mapping) -> None:
    """Refuse widths whose model could not even be held in this machine's
    memory while training, before any job allocates it."""
    phys = _physical_memory()
    if not phys:
        return
    for name, study in cfg["studies"].items():
        for i, width in enumerate(study["model"]["widths"]):
            n = n_params(study_layer_specs(study, width))
            need = TRAIN_PARAM_COPIES * 4 * n
            if need > phys:
                raise ConfigError(
                    f"config: studies.{name}.model.widths.{i}: width {width} gives ~{n:.3g} parameters, "
                    f"~{need / 2**30:.3g} GiB to train, more than this machine's {phys / 2**30:.3g} GiB of memory"
                )


def validate_config(config: Mapping) -> dict:
    """Validate ``config`` against the schema, fill defaults, and check the
    cross-key rules the schema cannot express. Returns a new dict."""
    from jsonschema.exceptions import best_match  # noqa: PLC0415

    schema = load_schema()
    cfg = copy.deepcopy(dict(config))
    for name, study in (cfg.get("studies") or {}).items():
        if isinstance(study, Mapping) and "step_update" in (study.get("retraining") or {}):
            raise ConfigError(
                f"config: studies.{name}.retraining.step_update was replaced by retraining.methods "
                "(step_update: fixed -> methods: [fixed]; step_update: epoch -> methods: [epoch])"
            )
    _check_finite(cfg)
    validator = _strict_validator(schema)
    errors = list(validator.iter_errors(cfg))
    if errors:
        # report the deepest, most specific problem first
        raise ConfigError("config: " + _one_line(best_match(errors), schema))
    for name, study in cfg["studies"].items():
        if name in RESERVED:
            raise ConfigError(
                f"config: studies.{name}: '{name}' is reserved for a folder of results/; rename the study"
            )
        model = study["model"]
        wrong = sorted(set(model) & (_CNN_ONLY if model["type"] == "fcdnn" else _FCDNN_ONLY))
        if wrong:
            raise ConfigError(f"config: studies.{name}.model.{wrong[0]} does not apply to {model['type']} models")
    _fill_defaults(cfg, schema, schema)
    errors = list(validator.iter_errors(cfg))  # defaults must validate too
    if errors:  # pragma: no cover - a broken default in the schema itself
        raise ConfigError("config (after defaults): " + _one_line(best_match(errors), schema))
    for name, study in cfg["studies"].items():
        model = study["model"]
        for key in _CNN_ONLY if model["type"] == "fcdnn" else _FCDNN_ONLY:
            model.pop(key, None)  # defaults of the other family do not apply
        if study["dataset"] == "digits" and model["type"] == "cnn" and 2 ** len(model["channel_multipliers"]) > 8:
            raise ConfigError(
                f"config: studies.{name}.model.channel_multipliers: {len(model['channel_multipliers'])} "
                "2x2 poolings shrink the 8x8 digits below one pixel"
            )
    _check_model_sizes(cfg)
    for name, study in cfg["studies"].items():
        _check_mixed(name, study)
        for i, budget in enumerate(study["recommend"]["budgets"]):
            try:
                parse_budget(budget)
            except ConfigError as exc:
                raise ConfigError(f"config: studies.{name}.recommend.budgets.{i}: {exc}") from None
        for i, budget in enumerate((study["search"] or {}).get("budgets", [])):
            try:
                parse_budget(budget)
            except ConfigError as exc:
                raise ConfigError(f"config: studies.{name}.search.budgets.{i}: {exc}") from None
    return cfg


def n_weight_layers(study: Mapping) -> int:
    """Weight layers (Linear/Conv2d) of a study's network; the same at every width."""
    return len(weight_specs(study_layer_specs(study, study["model"]["widths"][0])))


def _check_mixed(name: str, study: dict) -> None:
    """Mixed precision: patterns that fit the network, budgets the candidate
    word lengths can meet, and no float_first/float_last (a pattern sets every
    layer). Fills ``candidate_bits`` (sorted; the study's bits by default)."""
    mixed = study.get("mixed")
    if mixed is None:
        return
    where = f"config: studies.{name}.mixed"
    if not mixed["patterns"] and not mixed["mean_bits"]:
        raise ConfigError(f"{where}: give at least one of patterns or mean_bits (or remove mixed)")
    rcfg = study["retraining"]
    if rcfg["float_first"] or rcfg["float_last"]:
        raise ConfigError(
            f"{where}: mixed precision sets every layer's word length; it cannot be combined with "
            "retraining.float_first / float_last (write the pattern instead, e.g. 8 for the first layer)"
        )
    mixed["candidate_bits"] = sorted(mixed["candidate_bits"] or study["bits"])
    n_layers = n_weight_layers(study)
    seen = set()
    for i, pattern in enumerate(mixed["patterns"]):
        if len(pattern) != n_layers:
            raise ConfigError(
                f"{where}.patterns.{i}: {len(pattern)} word lengths for a network of {n_layers} weight layers "
                "(give one per weight layer, first to last)"
            )
        if tuple(pattern) in seen:
            raise ConfigError(f"{where}.patterns.{i}: {pattern} is listed twice")
        if len(set(pattern)) == 1 and pattern[0] in study["bits"]:
            raise ConfigError(f"{where}.patterns.{i}: {pattern} is the uniform {pattern[0]}-bit cell of bits")
        seen.add(tuple(pattern))
    lo, hi = mixed["candidate_bits"][0], mixed["candidate_bits"][-1]
    for i, mean in enumerate(mixed["mean_bits"]):
        if mean < lo:
            raise ConfigError(
                f"{where}.mean_bits.{i}: a budget of {mean} bits per weight is below the smallest possible "
                f"network ({lo} bits in every layer, the smallest of candidate_bits)"
            )
        if mean >= hi:
            raise ConfigError(
                f"{where}.mean_bits.{i}: a budget of {mean} bits per weight fits every layer at {hi} bits "
                "(the largest of candidate_bits): nothing to allocate"
            )


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    return validate_config(raw)
