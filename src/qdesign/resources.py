"""Cluster resource estimates per training job, from the model size and the data.

A wider network on a bigger dataset needs more memory and time; the rules
declare ``mem_mb`` and ``runtime`` from these estimates so that a SLURM
profile stays short. Estimates are deliberately generous (a job killed for
time or memory costs more than an idle reservation); ``attempt`` scales them
up when Snakemake retries a job (``--retries``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# (examples in train pool + test, input shape) of each dataset
DATASET_SHAPES = {
    "digits": (1797, (1, 8, 8)),
    "mnist": (70000, (1, 28, 28)),
    "fashion-mnist": (70000, (1, 28, 28)),
    "cifar10": (60000, (3, 32, 32)),
}
BASE_MB = 800  # python + torch + pandas, measured ~550 MB RSS on CPU
CPU_FLOPS_PER_THREAD = 5e9  # conservative sustained training FLOP/s per core
GPU_FLOPS = 2e12  # conservative for small models on any recent GPU


def training_flops_per_example(model_cfg: Mapping, width: int, input_shape: tuple[int, ...],
                               n_classes: int = 10) -> float:
    """Multiply-accumulates x 2 x 3 (forward + two backward matmuls) per example:
    used by benchmarks and to size cluster resources."""
    kind = model_cfg["type"]
    if kind == "fcdnn":
        n_in = 1
        for d in input_shape:
            n_in *= d
        macs, prev = 0, n_in
        for _ in range(int(model_cfg["depth"])):
            macs += prev * width
            prev = width
        macs += prev * n_classes
        return 6.0 * macs
    c, h, w = input_shape
    k = int(model_cfg["kernel_size"])
    macs = 0
    for mult in model_cfg["channel_multipliers"]:
        out = width * int(mult)
        for _ in range(int(model_cfg["convs_per_block"])):
            macs += c * out * k * k * h * w
            c = out
        h, w = h // 2, w // 2
    n_in = c * h * w
    fc = int(model_cfg.get("fc_units", 0))
    if fc:
        macs += n_in * fc
        n_in = fc
    macs += n_in * n_classes
    return 6.0 * macs


def _n_params(study: Mapping, width: int, shape: tuple[int, ...]) -> int:
    # training FLOPs per example = 6 x MACs; for an FCDNN MACs == weights
    return int(training_flops_per_example(study["model"], width, shape) / 6)


def mem_mb(study: Mapping, width: int, attempt: int = 1) -> int:
    n_examples, shape = DATASET_SHAPES[study["dataset"]]
    pixels = math.prod(shape)
    data_mb = n_examples * pixels * 5 / 2**20  # uint8 pool + float32 splits
    macs = _n_params(study, width, shape)
    # weights, grads, optimizer moments, best snapshot, quantized copy (~6x),
    # activations of the largest batch (~3x MACs / width per example as a rough size)
    model_mb = 6 * 4 * macs / 2**20
    batch = max(study["training"]["batch_size"], study["retraining"]["batch_size"])
    act_mb = 4 * 4 * batch * max(pixels, width) * 8 / 2**20
    est = BASE_MB + data_mb + model_mb + act_mb
    return int(100 * math.ceil(1.5 * est * attempt / 100))


def runtime_min(study: Mapping, width: int, phase: str, device: str, threads: int, attempt: int = 1) -> int:
    """Minutes for one job of ``phase`` ("float" or "retrain")."""
    n_examples, shape = DATASET_SHAPES[study["dataset"]]
    n_train = study["train_subset"] or int(n_examples * 0.85 * (1 - study["val_fraction"]))
    cfg = study["training"] if phase == "float" else study["retraining"]
    flops = training_flops_per_example(study["model"], width, shape) * n_train * max(cfg["epochs"], 1)
    speed = GPU_FLOPS if device == "cuda" else CPU_FLOPS_PER_THREAD * threads
    seconds = 60 + 3 * flops / speed  # start-up, then 3x margin
    return int(max(5, math.ceil(seconds / 60)) * attempt)
