"""qdesign: quantized neural network design under a weight-memory budget.

Reproduces Shin, Hwang & Sung (arXiv 1611.06342, 1511.06488): train networks at
many widths, quantize every weight layer to b bits with an L2-optimal step,
retrain with a straight-through estimator, and compare error against weight
memory.

This module stays import-light on purpose (no torch, no pandas): the
command-line client that Snakemake rules start imports it on every job.
"""

__version__ = "0.1.0"
