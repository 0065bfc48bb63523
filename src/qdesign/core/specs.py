"""Typed cell specs: everything that determines one trained network, and
nothing else. Rules pass a spec's JSON as ``params`` (so an edit reruns exactly
the cells it changes), the cell reads it back, and its hash is recorded in the
metrics row and the checkpoint.

* :class:`FloatSpec`: one float network of a study (width, seed).
* :class:`QuantSpec`: a float network plus what retraining adds (bits, or one
  word length per layer; the retraining method and its hyper-parameters). Its
  :attr:`QuantSpec.float_key` names the float network it needs, and a quantized
  cell refuses a checkpoint whose whole spec is not that one.

Torch-free: Snakemake imports this module when it parses the workflow.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import CheckpointError
from .layout import cell_dir
from .precision import Precision
from .registry import DEFAULT_METHOD, METHODS, method_retraining


def spec_json(spec: Mapping) -> str:
    """Canonical JSON (sorted keys, no spaces): stable across runs for params."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def spec_hash(spec: Mapping) -> str:
    """Short content hash of a spec dict, recorded in every metrics row."""
    return hashlib.sha256(spec_json(spec).encode()).hexdigest()[:12]


_FLOAT_FIELDS = (
    "study",
    "dataset",
    "model",
    "width",
    "seed",
    "val_fraction",
    "train_subset",
    "split_seed",
    "device",
    "training",
)


@dataclass(frozen=True)
class FloatSpec:
    """One float network. ``model`` is the model config without ``widths``."""

    study: str
    dataset: str
    model: Mapping[str, Any]
    width: int
    seed: int
    val_fraction: float
    train_subset: int | None
    split_seed: int
    device: str
    training: Mapping[str, Any]
    fail_on_divergence: bool = True  # the study's opt-out (False: diverged cells are recorded, flagged)

    def to_dict(self) -> dict:
        d = {k: copy.deepcopy(getattr(self, k)) for k in _FLOAT_FIELDS}
        if not self.fail_on_divergence:  # in the dict (and key) only when off: keys predate it
            d["fail_on_divergence"] = False
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> FloatSpec:
        missing = [k for k in _FLOAT_FIELDS if k not in d]
        if missing:
            raise CheckpointError(f"float spec is missing {', '.join(missing)}")
        fields = {k: copy.deepcopy(d[k]) for k in _FLOAT_FIELDS}
        return cls(**fields, fail_on_divergence=bool(d.get("fail_on_divergence", True)))

    def to_json(self) -> str:
        return spec_json(self.to_dict())

    @property
    def key(self) -> str:
        """Content hash: the same network has the same key everywhere."""
        return spec_hash(self.to_dict())


@dataclass(frozen=True)
class QuantSpec:
    """A quantized cell: ``float`` retrained at ``precision`` with ``method``.

    A mean-bits budget (:class:`qdesign.core.precision.Precision` of kind
    ``mean_bits``) is allocated at run time from the float network's
    sensitivity table (:mod:`qdesign.analysis.allocation`); the allocated spec
    (:meth:`allocated`) carries both the budget and the pattern. The JSON of a
    spec is the same as before the precision had a type of its own, so that
    cached cells keep their keys (tests/test_structure.py pins it)."""

    float: FloatSpec
    precision: Precision
    method: str
    retraining: Mapping[str, Any]

    def __post_init__(self):
        if self.method not in METHODS:
            raise CheckpointError(f"unknown retraining method {self.method!r} (known: {', '.join(METHODS)})")
        if not isinstance(self.precision, Precision) or self.precision.is_float:
            raise CheckpointError(f"a quantized spec needs a quantized precision, got {self.precision!r}")

    # the float network's coordinates, for logs and rows
    study = property(lambda self: self.float.study)
    dataset = property(lambda self: self.float.dataset)
    width = property(lambda self: self.float.width)
    seed = property(lambda self: self.float.seed)
    device = property(lambda self: self.float.device)

    @property
    def float_key(self) -> str:
        return self.float.key

    def allocated(self, pattern) -> QuantSpec:
        """This budget cell with the word lengths its allocation chose."""
        return dataclasses.replace(self, precision=self.precision.allocated(pattern))

    def to_dict(self) -> dict:
        return {
            "float": self.float.to_dict(),
            **self.precision.spec_fields(),
            "method": self.method,
            "retraining": copy.deepcopy(dict(self.retraining)),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> QuantSpec:
        missing = [k for k in ("float", "bits", "method", "retraining") if k not in d]
        if missing:
            raise CheckpointError(f"quantized spec is missing {', '.join(missing)}")
        try:
            precision = Precision.from_spec(d["bits"], d.get("budget"))
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"quantized spec has no valid precision: {exc}") from None
        return cls(FloatSpec.from_dict(d["float"]), precision, d["method"], copy.deepcopy(d["retraining"]))

    def to_json(self) -> str:
        return spec_json(self.to_dict())

    @property
    def key(self) -> str:
        return spec_hash(self.to_dict())


def spec_from_json(text: str) -> FloatSpec | QuantSpec:
    """Read a spec back from its JSON (the rules' ``--spec``)."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"--spec is not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise CheckpointError("--spec must be a JSON object")
    return QuantSpec.from_dict(d) if "float" in d else FloatSpec.from_dict(d)


# ------------------------------------------------------------ from a config


def study_device(config: Mapping, study: str) -> str:
    return config["studies"][study].get("device") or config["device"]


def split_key(dataset: str, val_fraction: float, split_seed: int, train_subset: int | None) -> dict:
    """What a study's train / validation / test split depends on. Its splits
    file records it (:func:`qdesign.nn.data.write_splits`), and a cell refuses a
    file whose key is not its own."""
    return {
        "dataset": str(dataset),
        "val_fraction": float(val_fraction),
        "split_seed": int(split_seed),
        "train_subset": None if train_subset is None else int(train_subset),
    }


def study_split_key(config: Mapping, study: str) -> dict:
    """The split of every cell of ``study``."""
    s = config["studies"][study]
    return split_key(s["dataset"], s["val_fraction"], config["split_seed"], s["train_subset"])


def split_tag(key: Mapping) -> str:
    """The name of a split's file: studies with the same split share it (the
    paper config's three MNIST depths), e.g. ``mnist-val0.1-seed0-all``."""
    subset = "all" if key["train_subset"] is None else f"n{int(key['train_subset'])}"
    return f"{key['dataset']}-val{float(key['val_fraction'])!r}-seed{int(key['split_seed'])}-{subset}"


def float_spec(config: Mapping, study: str, width: int, seed: int) -> FloatSpec:
    """The float network of (study, width, seed) in a validated config."""
    s = config["studies"][study]
    return FloatSpec(
        study=study,
        dataset=s["dataset"],
        model={k: v for k, v in s["model"].items() if k != "widths"},
        width=int(width),
        seed=int(seed),
        val_fraction=s["val_fraction"],
        train_subset=s["train_subset"],
        split_seed=config["split_seed"],
        device=study_device(config, study),
        training=dict(s["training"]),
        fail_on_divergence=bool(s.get("fail_on_divergence", True)),
    )


def quant_spec(
    config: Mapping, study: str, width: int, precision, seed: int, method: str = DEFAULT_METHOD
) -> QuantSpec:
    """A quantized cell of a validated config; ``precision`` is a
    :class:`~qdesign.core.precision.Precision` or what
    :meth:`Precision.coerce` takes (bits, or a per-layer tuple)."""
    precision = Precision.coerce(precision)
    return QuantSpec(
        float_spec(config, study, width, seed),
        precision,
        method,
        method_retraining(config["studies"][study]["retraining"], method),
    )


def study_budget(config: Mapping, study: str, mean_bits: float) -> Precision:
    """The mean-bits precision of a budget of ``mean_bits`` bits per weight in a
    study with a ``mixed`` section (its allocation and candidate bits)."""
    mixed = config["studies"][study]["mixed"]
    return Precision.budget(mean_bits, mixed["allocation"], mixed["candidate_bits"])


def budget_spec(
    config: Mapping, study: str, width: int, mean_bits: float, seed: int, method: str = DEFAULT_METHOD
) -> QuantSpec:
    """A mixed-precision cell whose word lengths are allocated for a budget of
    ``mean_bits`` bits per weight (the study's ``mixed`` settings)."""
    return quant_spec(config, study, width, study_budget(config, study, mean_bits), seed, method)


@dataclass(frozen=True)
class Cell:
    """One trained network of a study: its float network (width, seed), its
    precision and its retraining method (None for float networks)."""

    study: str
    width: int
    seed: int
    precision: Precision
    method: str | None = None

    @property
    def is_float(self) -> bool:
        return self.precision.is_float

    @property
    def bits(self) -> int:
        """The ``bits`` column of its row (32 float, b uniform, 0 mixed)."""
        return self.precision.table_bits

    @property
    def dir(self) -> str:
        """Its folder under results/ (:func:`qdesign.core.layout.cell_dir`)."""
        return cell_dir(self.study, self.width, self.precision, self.seed, self.method)

    def spec(self, config: Mapping) -> FloatSpec | QuantSpec:
        """Its spec in a validated ``config`` (whose ``key`` its metrics row
        records as ``config_hash``): :func:`float_spec` or :func:`quant_spec`."""
        if self.is_float:
            return float_spec(config, self.study, self.width, self.seed)
        return quant_spec(config, self.study, self.width, self.precision, self.seed, self.method)


def study_methods(config: Mapping, study: str) -> list[str]:
    return list(config["studies"][study]["retraining"].get("methods", [DEFAULT_METHOD]))


def study_cells(config: Mapping, study: str) -> list[Cell]:
    """Every uniform-precision cell of a study: per width and seed, the float
    network, then each bits value once per retraining method (mixed cells:
    :func:`mixed_cells`)."""
    s = config["studies"][study]
    methods = study_methods(config, study)
    out = []
    for w in s["model"]["widths"]:
        for seed in s["seeds"]:
            out.append(Cell(study, w, seed, Precision.float_()))
            for b in s["bits"]:
                for m in methods:
                    out.append(Cell(study, w, seed, Precision.uniform(b), m))
    return out


def has_mixed(config: Mapping, study: str) -> bool:
    return config["studies"][study].get("mixed") is not None


def mixed_cells(config: Mapping, study: str) -> list[Cell]:
    """Every mixed-precision cell of a study (none without a ``mixed`` section):
    per width, seed and method, each pattern, then each mean-bits budget."""
    s = config["studies"][study]
    if s.get("mixed") is None:
        return []
    out = []
    for w in s["model"]["widths"]:
        for seed in s["seeds"]:
            for m in study_methods(config, study):
                out += [Cell(study, w, seed, Precision.of_pattern(p), m) for p in s["mixed"]["patterns"]]
                out += [Cell(study, w, seed, study_budget(config, study, b), m) for b in s["mixed"]["mean_bits"]]
    return out
