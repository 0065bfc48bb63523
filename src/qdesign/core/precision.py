"""A network's precision: which word length each weight layer has, as one value.

A :class:`Precision` is one of

* ``float``: every layer in 32-bit float (the reference networks);
* ``uniform``: every quantized layer at ``bits`` (the paper's grid);
* ``pattern``: one word length per weight layer, first to last (mixed precision);
* ``mean_bits``: a memory budget of ``mean_bits`` bits per weight whose word
  lengths are allocated from the float network's layer sensitivity
  (``allocation`` over ``candidate_bits``); once allocated it also carries the
  ``pattern`` it was given.

It goes from config to row unchanged: its path tag (``b4``, ``b8-2-2-4``,
``m2.5``; float cells have none), its spec fields (the JSON a cell's key is
the hash of, unchanged from before this type existed so that no finished cell
reruns), its layer bits (what :func:`qdesign.quantize.to_quantized` takes) and
its table columns (``bits``: 32 float, b uniform, 0 mixed; ``precision``,
``pattern``, ``budget_mean_bits``, ``allocation`` for mixed cells).

"Budget" alone means a memory budget in bits elsewhere (the frontier,
``recommend``); a budget in bits per weight is always called ``mean_bits``.
Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import FLOAT_BITS, MAX_BITS, MIN_BITS, MIXED_BITS

KINDS = ("float", "uniform", "pattern", "mean_bits")


def is_float_bits(bits):
    """Whether a ``bits`` value (or each of an array / Series of them) is the
    float sentinel, ``bits >= FLOAT_BITS``; NaN is not float."""
    if np.ndim(bits) == 0:
        return bool(float(bits) >= FLOAT_BITS)
    return np.asarray(bits, dtype=float) >= FLOAT_BITS


def _check_word_length(b: Any, where: str) -> int:
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
        raise ValueError(f"{where}: a word length must be an int, got {b!r}")
    if not MIN_BITS <= int(b) <= MAX_BITS:
        raise ValueError(f"{where}: a word length must be in {MIN_BITS}..{MAX_BITS}, got {b}")
    return int(b)


def mean_tag(mean_bits: float) -> str:
    """``3`` for 3.0, ``2.5`` for 2.5: how a mean-bits budget is written in paths and tables."""
    return f"{float(mean_bits):g}"


@dataclass(frozen=True)
class Precision:
    """See the module docstring. Build with :meth:`float_`, :meth:`uniform`,
    :meth:`of_pattern`, :meth:`budget`, or :meth:`coerce` / :meth:`parse`."""

    kind: str
    bits: int | None = None
    pattern: tuple[int, ...] | None = None
    mean_bits: float | None = None
    allocation: str | None = None
    candidate_bits: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown precision kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.kind == "uniform" and self.bits is None:
            raise ValueError("a uniform precision needs bits")
        if self.kind == "pattern" and not self.pattern:
            raise ValueError("a per-layer precision needs a pattern")
        if self.kind == "mean_bits" and (self.mean_bits is None or not math.isfinite(self.mean_bits)):
            raise ValueError("a mean-bits precision needs a finite mean_bits")

    # ------------------------------------------------------------ constructors

    @classmethod
    def float_(cls) -> Precision:
        return cls("float")

    @classmethod
    def uniform(cls, bits: int) -> Precision:
        return cls("uniform", bits=_check_word_length(bits, "bits"))

    @classmethod
    def of_pattern(cls, pattern: Sequence[int]) -> Precision:
        return cls("pattern", pattern=tuple(_check_word_length(b, "pattern") for b in pattern))

    @classmethod
    def budget(cls, mean_bits: float, allocation: str, candidate_bits: Sequence[int]) -> Precision:
        """A mean-bits budget, not yet allocated."""
        cands = tuple(sorted(_check_word_length(b, "candidate_bits") for b in candidate_bits))
        return cls("mean_bits", mean_bits=float(mean_bits), allocation=str(allocation), candidate_bits=cands)

    @classmethod
    def coerce(cls, value) -> Precision:
        """A Precision from what callers write: a Precision, an int (uniform; 32
        is float), or a sequence of word lengths (a pattern)."""
        if isinstance(value, Precision):
            return value
        if isinstance(value, (list, tuple)):
            return cls.of_pattern(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) == FLOAT_BITS:
            return cls.float_()
        return cls.uniform(value)

    @classmethod
    def parse(cls, tag: str) -> Precision:
        """Inverse of :attr:`tag`: ``b4``, ``b8-2-2-4``, ``m2.5``, ``float``. The
        ``b``/``m`` prefix may be left out for bits (``4``, ``8-2-2-4``): the
        ``{bits}`` wildcard of the rules holds it without."""
        tag = str(tag)
        if tag == "float":
            return cls.float_()
        if tag.startswith("m"):
            raise ValueError(f"{tag!r} is a mean-bits budget: its allocation comes from the study's config")
        parts = [int(p) for p in tag.removeprefix("b").split("-")]
        return cls.uniform(parts[0]) if len(parts) == 1 else cls.of_pattern(parts)

    @classmethod
    def from_spec(cls, bits, budget: Mapping | None) -> Precision:
        """From a quantized spec's JSON fields ``bits`` (int, list or None) and ``budget``."""
        if budget is not None:
            p = cls.budget(budget["mean_bits"], budget["allocation"], budget["candidate_bits"])
            return p.allocated(bits) if bits is not None else p
        if bits is None:
            raise ValueError("a quantized spec needs bits or a budget")
        return cls.of_pattern(bits) if isinstance(bits, (list, tuple)) else cls.uniform(int(bits))

    # ------------------------------------------------------------ what it is

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_mixed(self) -> bool:
        """One word length per layer (an explicit pattern or an allocated budget)."""
        return self.kind in ("pattern", "mean_bits")

    @property
    def is_allocated(self) -> bool:
        """Whether the word length of every layer is known (not a budget still to allocate)."""
        return self.kind != "mean_bits" or self.pattern is not None

    def allocated(self, pattern: Sequence[int]) -> Precision:
        """This mean-bits budget with the pattern its allocation chose."""
        if self.kind != "mean_bits":
            raise ValueError(f"only a mean-bits budget is allocated, not a {self.kind} precision")
        return Precision(
            "mean_bits",
            pattern=tuple(_check_word_length(b, "pattern") for b in pattern),
            mean_bits=self.mean_bits,
            allocation=self.allocation,
            candidate_bits=self.candidate_bits,
        )

    @property
    def tag(self) -> str:
        """The folder of a cell of this precision, below its method: ``b4``,
        ``b8-2-2-4``, ``m2.5``; ``float`` for float networks."""
        if self.kind == "float":
            return "float"
        if self.kind == "uniform":
            return f"b{self.bits}"
        if self.kind == "pattern":
            return "b" + "-".join(str(b) for b in self.pattern)
        return f"m{mean_tag(self.mean_bits)}"

    @property
    def pattern_tag(self) -> str:
        """``8-2-2-4``: the per-layer word lengths as written in tables (mixed, allocated)."""
        if self.pattern is None:
            raise ValueError(f"a {self.kind} precision has no per-layer pattern")
        return "-".join(str(b) for b in self.pattern)

    def __str__(self) -> str:
        if self.kind == "float":
            return "float"
        if self.kind == "uniform":
            return f"{self.bits}-bit"
        if self.kind == "pattern":
            return f"{self.pattern_tag} bits"
        alloc = f" -> {self.pattern_tag}" if self.pattern is not None else ""
        return f"{mean_tag(self.mean_bits)} bits/weight ({self.allocation}){alloc}"

    # ------------------------------------------------------------ layers

    def layer_bits(self, n_layers: int, *, float_first: bool = False, float_last: bool = False) -> list[int | None]:
        """Per weight layer, its word length (None = float), first to last.
        ``float_first``/``float_last`` keep the first/last layer in float
        (uniform cells only: a pattern sets every layer)."""
        if self.kind == "float":
            return [None] * n_layers
        if not self.is_allocated:
            raise ValueError("a mean-bits budget has no layer bits before its allocation")
        if self.kind == "uniform":
            out: list[int | None] = [self.bits] * n_layers
        else:
            if len(self.pattern) != n_layers:
                raise ValueError(f"{len(self.pattern)} per-layer bits given for {n_layers} weight layers")
            out = list(self.pattern)
        if float_first:
            out[0] = None
        if float_last:
            out[-1] = None
        return out

    # ------------------------------------------------------------ specs and rows

    def spec_fields(self) -> dict:
        """The fields of a quantized spec's JSON: ``bits`` (int, list, or None
        for a budget not yet allocated) and, for budgets only, ``budget``
        (absent for bits cells: their keys predate budgets)."""
        if self.kind == "float":
            raise ValueError("float networks have a float spec, not a quantized one")
        if self.kind == "uniform":
            return {"bits": int(self.bits)}
        bits = None if self.pattern is None else [int(b) for b in self.pattern]
        if self.kind == "pattern":
            return {"bits": bits}
        return {
            "bits": bits,
            "budget": {
                "mean_bits": float(self.mean_bits),
                "allocation": self.allocation,
                "candidate_bits": [int(b) for b in self.candidate_bits],
            },
        }

    @property
    def table_bits(self) -> int:
        """The ``bits`` column of a row: 32 float, b uniform, 0 mixed."""
        return FLOAT_BITS if self.kind == "float" else self.bits if self.kind == "uniform" else MIXED_BITS

    def mixed_columns(self, predicted_cost: float = math.nan) -> dict:
        """The columns only mixed cells have: which design it is (``precision``:
        the pattern, or ``m<mean>`` for a budget), its allocated ``pattern``,
        the budget and what the allocation predicted."""
        if not self.is_mixed:
            raise ValueError(f"a {self.kind} precision has no mixed columns")
        return {
            "precision": self.pattern_tag if self.kind == "pattern" else self.tag,
            "pattern": self.pattern_tag,
            "budget_mean_bits": float(self.mean_bits) if self.kind == "mean_bits" else math.nan,
            "allocation": self.allocation if self.kind == "mean_bits" else "explicit",
            "predicted_cost": float(predicted_cost),
        }


def row_layer_bits(layer_bits: Sequence[int | None]) -> list[int]:
    """A row's ``layer_bits``: each weight layer's word length, 32 for a float layer."""
    return [FLOAT_BITS if b is None else int(b) for b in layer_bits]
