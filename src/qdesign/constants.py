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


EVAL_BATCH = {"fc": 2048, "conv": 256}
"""Evaluation batch sizes (no autograd) for fully-connected and convolutional
models: matrix products like big batches; convolutions at 2048 images leave
the caches (256 measured 1.3-2x faster on CPU, logits bit for bit the same).
Used by :func:`qdesign.train.evaluate`, the sensitivity pass and the memory
estimate of :mod:`qdesign.resources`."""
