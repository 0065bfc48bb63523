"""Cluster resource estimates per training job, from the architecture and the data.

A wider network on a bigger dataset needs more memory and time; the rules
declare ``mem_mb`` and ``runtime`` from these estimates so that a SLURM
profile stays short. Both are sized from :mod:`qdesign.core.architecture` (the
description :func:`qdesign.nn.models.build_model` builds from) and calibrated
against measured jobs (``benchmarks/measure_cell.py``; numbers in docs/slurm.md):

* memory: the job's own peak (interpreter and libraries, the dataset, the
  parameters with their gradients, optimizer moments and snapshots, and the
  larger of the training batch's saved activations and the evaluation batch's
  live ones), with a margin, plus the two Snakemake wrapper processes that run
  a cluster job around it;
* time: training FLOPs at the throughput measured per model type and device,
  plus start-up, with a margin and a floor.

``attempt`` scales both when Snakemake retries a job (``--retries``); a value
set in a profile's ``set-resources`` replaces the estimate, attempt included
(see docs/slurm.md for attempt-scaled profile values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..core.architecture import TRAIN_PARAM_COPIES, forward_macs, n_params, study_layer_specs
from ..core.architecture import training_flops_per_example as training_flops_per_example  # re-exported
from ..core.constants import EVAL_BATCH
from ..core.registry import DATASETS

# (examples in train pool + test, input shape) of each dataset, from the registry
DATASET_SHAPES = {name: (d.n_examples, d.input_shape) for name, d in DATASETS.items()}

# Calibration (benchmarks/measure_cell.py, fresh processes, 2 shared CPU cores; docs/slurm.md):
# RSS of the interpreter with qdesign.nn.cells imported (python, torch, pandas,
# pyarrow) and a tiny job run: 780-940 MB here, about 300 MB more on the CI
# machine; CUDA adds its context in host memory (not yet measured: benchmarks/gpu_check.sh)
BASE_MB = {"cpu": 900, "cuda": 1900}
DATA_BYTES_PER_PIXEL = 8  # uint8 pool + float32 splits + transient copies (MNIST: ~435 MB)
CONV_WORKSPACE_MB = 300  # oneDNN buffers and allocator caching of convolutions (CNN width 32: ~300 MB)
MEM_MARGIN = 1.25  # on the job's own estimated peak
# RSS of the two Snakemake processes (sbatch script -> snakemake -> job shell)
# that wrap every cluster job (measured: 0.35-0.55 GB, the larger for array
# tasks, plus ~0.3 GB on the CI machine); ~0 under the local warm worker
CLUSTER_WRAPPER_MB = 800

# Sustained training throughput per CPU thread, by model type. Measured on 2
# shared cores: FCDNN 6-8 GFLOP/s per thread under load (~15 quiet); CNN width
# 128: 16, width 32: 5.5 (small convolutions are less efficient, ~width^0.75).
CPU_FLOPS_PER_THREAD = {"fcdnn": 8e9, "cnn": 10e9}
CNN_FULL_SPEED_WIDTH = 128
# GPU: conservative guesses, not yet measured (benchmarks/gpu_check.sh)
GPU_FLOPS = {"fcdnn": 2e12, "cnn": 2e12}
STEP_SECONDS = {"cpu": 5e-4, "cuda": 1e-3}  # fixed cost per optimizer step (python, kernel launches)
STARTUP_SECONDS = 30  # imports, data load and split, checkpoint writes, the job's Snakemake wrapper
TIME_MARGIN = 1.5
MIN_RUNTIME_MIN = 3  # floor: a job of seconds still asks for this


def _shape(study: Mapping, n_examples: int | None = None) -> tuple[int, tuple[int, ...]]:
    n, shape = DATASET_SHAPES[study["dataset"]]
    return (n if n_examples is None else int(n_examples)), shape


def job_peak_mb(study: Mapping, width: int, device: str = "cpu", n_examples: int | None = None) -> int:
    """Estimated peak RSS in MB of one training job's own process, without margin
    or wrappers. ``n_examples``: the dataset's size (default: the real one)."""
    n, shape = _shape(study, n_examples)
    specs = study_layer_specs(study, width)
    data_b = n * math.prod(shape) * DATA_BYTES_PER_PIXEL
    param_b = n_params(specs) * 4 * TRAIN_PARAM_COPIES
    batch = max(study["training"]["batch_size"], study["retraining"]["batch_size"])
    acts = [math.prod(shape)] + [s.activations for s in specs]
    # training: every module's output is kept for backward
    train_b = 4 * batch * sum(acts)
    # evaluation (no grad, batches of EVAL_BATCH): a module's input and output are alive at once
    eval_batch = EVAL_BATCH["conv" if study["model"]["type"] == "cnn" else "fc"]
    eval_b = 4 * min(eval_batch, n) * max(a + b for a, b in zip(acts, acts[1:]))
    conv_mb = CONV_WORKSPACE_MB if study["model"]["type"] == "cnn" else 0
    return int(BASE_MB.get(device, BASE_MB["cpu"]) + conv_mb + (data_b + param_b + max(train_b, eval_b)) / 2**20)


def mem_mb(study: Mapping, width: int, attempt: int = 1, device: str = "cpu", n_examples: int | None = None) -> int:
    """MB to request for one cluster job (a multiple of 100): the job's peak with a
    margin, plus the cluster wrapper processes, times ``attempt``."""
    est = MEM_MARGIN * job_peak_mb(study, width, device, n_examples) + CLUSTER_WRAPPER_MB
    return int(100 * math.ceil(est * attempt / 100))


def job_seconds(study: Mapping, width: int, phase: str, device: str, threads: int) -> float:
    """Estimated seconds of one job of ``phase`` ("float" or "retrain"), no margin."""
    n_examples, shape = DATASET_SHAPES[study["dataset"]]
    n_pool = n_examples - _test_size(study["dataset"])
    n_val = int(n_pool * study["val_fraction"])
    n_train = study["train_subset"] or n_pool - n_val
    cfg = study["training"] if phase == "float" else study["retraining"]
    epochs = max(int(cfg["epochs"]), 1)
    kind = study["model"]["type"]
    macs = forward_macs(study_layer_specs(study, width))
    # train 3 passes per example; evaluate val each epoch and val + test at the end (1 pass)
    flops = 2 * macs * (3 * n_train * epochs + n_val * (epochs + 1) + _test_size(study["dataset"]))
    if device == "cuda":
        speed = GPU_FLOPS[kind]
    else:
        speed = CPU_FLOPS_PER_THREAD[kind] * max(int(threads), 1)
        if kind == "cnn":
            speed *= min(1.0, int(width) / CNN_FULL_SPEED_WIDTH) ** 0.75
    steps = math.ceil(n_train / int(cfg["batch_size"])) * epochs
    return STARTUP_SECONDS + flops / speed + steps * STEP_SECONDS.get(device, STEP_SECONDS["cpu"])


def _test_size(dataset: str) -> int:
    return DATASETS[dataset].n_test


def runtime_min(study: Mapping, width: int, phase: str, device: str, threads: int, attempt: int = 1) -> int:
    """Minutes to request for one job of ``phase`` ("float" or "retrain")."""
    minutes = math.ceil(TIME_MARGIN * job_seconds(study, width, phase, device, threads) / 60)
    return int(max(MIN_RUNTIME_MIN, minutes) * attempt)


def search_cost_hint(config: Mapping, study: str, widths) -> dict[tuple[int, bool], float]:
    """Estimated training seconds (no start-up) of a float and of a retrained
    cell per width: what an adaptive search ranks its candidate cells by
    (:attr:`qdesign.analysis.search.Grid.cost_hint`); known before training,
    so that the search's plan is the same on every run. ``auto`` counts as the CPU."""
    s = config["studies"][study]
    device = s.get("device") or config.get("device", "cpu")
    device = "cuda" if device == "cuda" else "cpu"
    return {
        (int(w), is_float): job_seconds(s, int(w), "float" if is_float else "retrain", device, s["threads"])
        - STARTUP_SECONDS
        for w in widths
        for is_float in (True, False)
    }
