"""The memory model: what a network's weights cost in bits, defined once.

A float layer costs 32 bits per weight; a quantized layer ``b`` bits per
weight plus one 32-bit step (its quantizer's scale); biases stay float and
count only in the total. The paper compares weight memory
(``memory_bits_weights``); the total (``memory_bits_total``) is what a device
must hold, and the size of the packed export (docs/export.md). Cells record
both, the export checks its file against them, and ``recommend`` sizes its
designs with them. Torch-free.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable

import numpy as np

from .constants import FLOAT_BITS  # also the bits of a float weight, of a stored step and of a bias
from .errors import ConfigError
from .precision import is_float_bits

__all__ = ["format_bits", "layer_memory_bits", "network_memory_bits", "parse_budget"]


def _as_count(value, name: str) -> int:
    count = operator.index(value)
    if count < 0:
        raise ValueError(f"{name} must be >= 0, got {count}")
    return count


def _as_bits(bits) -> int | None:
    """None for a float layer, else the integer bit width (>= 1)."""
    if bits is None:
        return None
    if isinstance(bits, (float, np.floating)):
        if not float(bits).is_integer():
            raise ValueError(f"bits must be an integer, got {bits}")
        bits = int(bits)
    b = operator.index(bits)
    if b < 1:
        raise ValueError(f"bits must be >= 1 or None, got {b}")
    return None if is_float_bits(b) else b


def layer_memory_bits(n_weights: int, n_biases: int, bits: int | None) -> tuple[int, int]:
    """Memory of one layer in bits, as ``(weights_only, total)``.

    ``bits=None`` or ``bits >= 32`` is a float layer: 32 bits per weight and no
    step.  A quantized layer costs ``bits`` per weight plus one 32-bit step
    (the uniform quantizer's scale).  Biases stay float (32 bits each) and only
    count in ``total``: the paper compares weight memory, but the total is what
    a device must actually hold.
    """
    n_w = _as_count(n_weights, "n_weights")
    n_b = _as_count(n_biases, "n_biases")
    b = _as_bits(bits)
    if b is None:
        weights_only = n_w * FLOAT_BITS
        step = 0
    else:
        weights_only = n_w * b
        step = FLOAT_BITS
    return weights_only, weights_only + step + n_b * FLOAT_BITS


def network_memory_bits(layers: Iterable[tuple[int, int, int | None]]) -> tuple[int, int]:
    """Memory of a network in bits, as ``(weights_only, total)``.

    ``layers`` yields ``(n_weights, n_biases, bits)`` per layer.  With
    ``bits_or_32`` the layer's bit width (32 for a float layer)::

        weights_only = sum(n_weights * bits_or_32)
        total        = weights_only + 32 * n_quantized_layers + 32 * sum(n_biases)

    i.e. a float network costs 32 bits per weight, a quantized one ``b`` bits
    per weight plus one 32-bit step per quantized layer (in ``total`` only).
    """
    weights_only = total = 0
    for n_weights, n_biases, bits in layers:
        w, t = layer_memory_bits(n_weights, n_biases, bits)
        weights_only += w
        total += t
    return weights_only, total


# --------------------------------------------------------------------------
# Memory sizes as people write them
# --------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "bit": 1,
    "bits": 1,
    "B": 8,
    "byte": 8,
    "bytes": 8,
    "kbit": 10**3,
    "Mbit": 10**6,
    "Gbit": 10**9,
    "Kibit": 2**10,
    "Mibit": 2**20,
    "Gibit": 2**30,
    "kB": 8 * 10**3,
    "MB": 8 * 10**6,
    "GB": 8 * 10**9,
    "KiB": 8 * 2**10,
    "MiB": 8 * 2**20,
    "GiB": 8 * 2**30,
}
_BUDGET_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([A-Za-z]*)\s*$")


def parse_budget(text) -> int:
    """A memory budget in bits, from ``"65536"``, ``"64KiB"``, ``"1.5 MB"``, ``"2e5 bits"``...

    Units are case-sensitive: ``b``/``bit(s)`` are bits, ``B``/``byte(s)`` bytes;
    ``kB MB GB`` are powers of 1000 bytes, ``KiB MiB GiB`` powers of 1024 bytes;
    ``kbit Mbit Gbit`` / ``Kibit Mibit Gibit`` the same for bits.  No unit means
    bits.  Fractions of a bit are rounded down; the budget must be >= 1 bit.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = _BUDGET_RE.match(str(text))
        if not m or m.group(3) not in _UNITS:
            raise ConfigError(f"budget {text!r} is not a memory size: use e.g. 65536, 64KiB, 1.5MB or 2e5bits")
        value = float(f"{m.group(1)}e{m.group(2) or 0}")  # inf when huge: rejected below
        unit = m.group(3)
    bits = value * _UNITS[unit]
    if not math.isfinite(bits):
        raise ConfigError(f"budget {text!r} is too large to be a memory size (beyond a float's range)")
    if bits < 1:
        raise ConfigError(f"budget {text!r} must be at least 1 bit")
    return math.floor(bits + 1e-9)


def format_bits(bits: float) -> str:
    """``524288`` -> ``"524,288 bits (64 KiB)"``: the unit a reader thinks in, beside the exact count."""
    b = float(bits)
    by = b / 8
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if by >= scale:
            return f"{b:,.0f} bits ({by / scale:.4g} {suffix})"
    return f"{b:,.0f} bits ({by:.4g} B)"
