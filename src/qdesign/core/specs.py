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
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .constants import FLOAT_BITS
from .errors import CheckpointError
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

    def to_dict(self) -> dict:
        return {k: copy.deepcopy(getattr(self, k)) for k in _FLOAT_FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping) -> FloatSpec:
        missing = [k for k in _FLOAT_FIELDS if k not in d]
        if missing:
            raise CheckpointError(f"float spec is missing {', '.join(missing)}")
        return cls(**{k: copy.deepcopy(d[k]) for k in _FLOAT_FIELDS})

    def to_json(self) -> str:
        return spec_json(self.to_dict())

    @property
    def key(self) -> str:
        """Content hash: the same network has the same key everywhere."""
        return spec_hash(self.to_dict())


@dataclass(frozen=True)
class QuantSpec:
    """A quantized cell: ``float`` retrained at ``bits`` with ``method``.

    ``bits`` is an int (uniform precision) or a tuple with one word length per
    weight layer, first to last (mixed precision). A budget cell has
    ``bits=None`` and a ``budget`` instead (``mean_bits``, ``allocation``,
    ``candidate_bits``): its word lengths are allocated at run time from the
    float network's sensitivity table (:mod:`qdesign.analysis.allocation`), and the
    allocated spec carries both."""

    float: FloatSpec
    bits: int | tuple[int, ...] | None
    method: str
    retraining: Mapping[str, Any]
    budget: Mapping[str, Any] | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise CheckpointError(f"unknown retraining method {self.method!r} (known: {', '.join(METHODS)})")
        if self.bits is None and self.budget is None:
            raise CheckpointError("a quantized spec needs bits or a budget")

    # the float network's coordinates, for logs and rows
    study = property(lambda self: self.float.study)
    dataset = property(lambda self: self.float.dataset)
    width = property(lambda self: self.float.width)
    seed = property(lambda self: self.float.seed)
    device = property(lambda self: self.float.device)

    @property
    def layer_pattern(self) -> tuple[int, ...] | None:
        return tuple(self.bits) if isinstance(self.bits, (list, tuple)) else None

    @property
    def is_mixed(self) -> bool:
        return self.budget is not None or self.layer_pattern is not None

    @property
    def float_key(self) -> str:
        return self.float.key

    def to_dict(self) -> dict:
        if self.bits is None:
            bits = None
        else:
            bits = list(self.bits) if isinstance(self.bits, (list, tuple)) else int(self.bits)
        d = {
            "float": self.float.to_dict(),
            "bits": bits,
            "method": self.method,
            "retraining": copy.deepcopy(dict(self.retraining)),
        }
        if self.budget is not None:  # absent for bits cells: their keys predate budgets
            d["budget"] = copy.deepcopy(dict(self.budget))
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> QuantSpec:
        missing = [k for k in ("float", "bits", "method", "retraining") if k not in d]
        if missing:
            raise CheckpointError(f"quantized spec is missing {', '.join(missing)}")
        raw = d["bits"]
        bits = None if raw is None else tuple(raw) if isinstance(raw, (list, tuple)) else int(raw)
        budget = copy.deepcopy(d.get("budget"))
        return cls(FloatSpec.from_dict(d["float"]), bits, d["method"], copy.deepcopy(d["retraining"]), budget)

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
    )


def quant_spec(config: Mapping, study: str, width: int, bits, seed: int, method: str = DEFAULT_METHOD) -> QuantSpec:
    """A quantized cell of a validated config (``bits`` an int or a per-layer tuple)."""
    s = config["studies"][study]
    retraining = method_retraining(s["retraining"], method)
    bits = tuple(int(b) for b in bits) if isinstance(bits, (list, tuple)) else int(bits)
    return QuantSpec(float_spec(config, study, width, seed), bits, method, retraining)


def budget_spec(
    config: Mapping, study: str, width: int, mean_bits: float, seed: int, method: str = DEFAULT_METHOD
) -> QuantSpec:
    """A mixed-precision cell whose word lengths are allocated for a budget of
    ``mean_bits`` bits per weight (the study's ``mixed`` settings)."""
    s = config["studies"][study]
    mixed = s["mixed"]
    retraining = method_retraining(s["retraining"], method)
    budget = {
        "mean_bits": float(mean_bits),
        "allocation": mixed["allocation"],
        "candidate_bits": [int(b) for b in mixed["candidate_bits"]],
    }
    return QuantSpec(float_spec(config, study, width, seed), None, method, retraining, budget)


@dataclass(frozen=True)
class Cell:
    """One trained network of a study: bits == FLOAT_BITS is the float reference
    (its method is None)."""

    study: str
    width: int
    bits: int | tuple[int, ...]
    seed: int
    method: str | None = None

    @property
    def is_float(self) -> bool:
        return not isinstance(self.bits, tuple) and self.bits == FLOAT_BITS


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
            out.append(Cell(study, w, FLOAT_BITS, seed))
            for b in s["bits"]:
                for m in methods:
                    out.append(Cell(study, w, b, seed, m))
    return out


@dataclass(frozen=True)
class MixedCell:
    """A mixed-precision cell: an explicit per-layer ``pattern`` or an allocated
    budget of ``mean_bits`` bits per weight (exactly one is set)."""

    study: str
    width: int
    seed: int
    method: str
    pattern: tuple[int, ...] | None = None
    mean_bits: float | None = None


def has_mixed(config: Mapping, study: str) -> bool:
    return config["studies"][study].get("mixed") is not None


def mixed_cells(config: Mapping, study: str) -> list[MixedCell]:
    """Every mixed-precision cell of a study (none without a ``mixed`` section):
    per width, seed and method, each pattern, then each budget."""
    s = config["studies"][study]
    if s.get("mixed") is None:
        return []
    out = []
    for w in s["model"]["widths"]:
        for seed in s["seeds"]:
            for m in study_methods(config, study):
                out += [MixedCell(study, w, seed, m, pattern=tuple(p)) for p in s["mixed"]["patterns"]]
                out += [MixedCell(study, w, seed, m, mean_bits=float(b)) for b in s["mixed"]["mean_bits"]]
    return out
