"""Numbers that define what the tables mean; every module imports them from here."""

from __future__ import annotations

FLOAT_BITS = 32
"""The ``bits`` value of float networks in every table, and the bits of a float
weight, of a stored quantization step and of a bias in the memory model."""

MIN_BITS, MAX_BITS = 1, 16
"""Word lengths the quantizer supports (1 = binary, 2 = ternary)."""


MIXED_BITS = 0
"""The ``bits`` value of mixed-precision cells (one word length per layer: see
their ``layer_bits`` and ``precision`` columns); uniform cells have 1..16."""


CHECKPOINT_VERSION = 2
"""Format of the model.pt files cells write (2: typed specs, float errors, history)."""


EVAL_BATCH = {"fc": 2048, "conv": 128}
"""Evaluation batch sizes (no autograd) for fully-connected and convolutional
models: matrix products like big batches; a convolution's activations should
stay in the caches (measured on a 2-core AVX-512 EPYC, 2026-12-02: the CPU
profile's CNN at width 32, quantized, 1.9x faster at 128 than at 256 images).
Logits are bit for bit the same at every batch of 64 images or more (tested;
batches of 1 or 7 round differently), and an MNIST/Fashion-MNIST split of 6,000
or 10,000 images leaves the same last partial batch (112, 16) at 128 as at 256,
so no recorded error changed with the batch (256 before 2026-12-02). Used by
:func:`qdesign.nn.train.evaluate` and :func:`qdesign.nn.train.logits` (export
verification), the sensitivity pass and the memory estimate of
:mod:`qdesign.run.resources`."""


HISTORY_COLUMNS = {"loss": "history_loss", "train_error": "history_train_error", "val_error": "history_val_error"}
"""Per-epoch curves a cell records in its metrics row (list columns, one value
per epoch; the full history stays in model.pt): training loss and error, and
validation error. The curves figure reads them, so figures need no torch."""
