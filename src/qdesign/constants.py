"""Numbers that define what the tables mean; every module imports them from here."""

from __future__ import annotations

FLOAT_BITS = 32
"""The ``bits`` value of float networks in every table, and the bits of a float
weight, of a stored quantization step and of a bias in the memory model."""

MIN_BITS, MAX_BITS = 1, 16
"""Word lengths the quantizer supports (1 = binary, 2 = ternary)."""


def is_float_bits(bits) -> bool:
    """True for the float sentinel (``bits >= FLOAT_BITS``)."""
    return int(bits) >= FLOAT_BITS


MIXED_BITS = 0
"""The ``bits`` value of mixed-precision cells (one word length per layer: see
their ``layer_bits`` and ``precision`` columns); uniform cells have 1..16."""


CHECKPOINT_VERSION = 2
"""Format of the model.pt files cells write (2: typed specs, float errors, history)."""
