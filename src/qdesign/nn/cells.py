"""One cell of the grid, end to end: train (or retrain), evaluate, write outputs.

A cell writes ``model.pt`` and ``metrics.parquet`` (one row that holds
everything a table or figure needs, so nothing downstream reopens a
checkpoint). Both are written atomically, metrics last. The row also splits
the job's time into train / evaluate / load / write seconds, so that work
outside training stays visible.

Rule, command and function share one name per stage: rule ``train_float`` ->
``python -m qdesign train-float`` -> :func:`train_float`; rule ``retrain`` ->
``retrain`` -> :func:`retrain`.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from .. import __version__
from ..core.constants import CHECKPOINT_VERSION, HISTORY_COLUMNS
from ..core.errors import CheckpointError, DivergedError
from ..core.io import parquet_write_atomic
from ..core.memory import network_memory_bits
from ..core.precision import Precision, row_layer_bits
from ..core.specs import FloatSpec, QuantSpec, split_key
from ..quantize import bake, integer_codes, quantized_layers, to_quantized
from .allocator import reuse_freed_memory
from .data import load_cell_data
from .methods import get_method
from .models import build_model, weight_layers
from .torchio import torch_load_checked, torch_save_atomic
from .train import chance_level, evaluate, fit, nchw_layers, pick_device, use_channels_last

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "load_checkpoint", "retrain", "train_float"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux's ``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``execve``: a process
    spawned (vfork + exec) by a large parent, such as pytest or snakemake,
    reports the parent's peak instead of its own. The kernel's high-water mark
    of this address space (``VmHWM``) starts afresh at exec; a job forked from
    the warm worker counts the torch pages it shares with it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def _logger(prefix: str = "") -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(f"{prefix}{msg}", flush=True)

    return log


class _Clock:
    """Wall seconds per phase of a job (train / evaluate / load / write)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds = {"load": 0.0, "evaluate": 0.0, "train": 0.0, "write": 0.0}

    def timed(self, phase: str, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[phase] += time.perf_counter() - t


def load_checkpoint(path: str | Path) -> dict:
    """A cell's model.pt; a one-line CheckpointError if missing or corrupt."""
    return torch_load_checked(path, "checkpoint", CheckpointError, ("state_dict", "spec"), CHECKPOINT_VERSION)


def _model_depth(model_cfg) -> int:
    """Hidden layers (fcdnn) or convolution layers (cnn)."""
    if model_cfg["type"] == "fcdnn":
        return int(model_cfg["depth"])
    return len(model_cfg["channel_multipliers"]) * int(model_cfg["convs_per_block"])


def _base_row(
    spec: FloatSpec,
    key: str,
    model: torch.nn.Module,
    precision: Precision,
    method: str | None,
    layer_bits: list[int | None],
    data,
    device: torch.device,
    threads: int,
) -> dict:
    layers = weight_layers(model)
    mem_w, mem_t = network_memory_bits((w, b, lb) for (_, w, b), lb in zip(layers, layer_bits))
    return {
        "study": spec.study,
        "dataset": spec.dataset,
        "model": spec.model["type"],
        "depth": _model_depth(spec.model),
        "width": int(spec.width),
        "bits": precision.table_bits,
        "method": method,
        "layer_bits": row_layer_bits(layer_bits),
        "seed": int(spec.seed),
        "n_weights": int(sum(w for _, w, _ in layers)),
        "n_biases": int(sum(b for _, _, b in layers)),
        "memory_bits_weights": int(mem_w),
        "memory_bits_total": int(mem_t),
        "n_train": int(data.x_train.shape[0]),
        "n_val": int(data.x_val.shape[0]),
        "n_test": int(data.x_test.shape[0]),
        "device": device.type,
        "threads": int(threads),
        "config_hash": key,
        "float_hash": spec.key,
        "qdesign_version": __version__,
        "torch_version": torch.__version__,
    }


def _flag_chance(row: dict, data, log: Callable[[str], None], what: str, fail: str | None = None) -> None:
    """Record (column ``chance_level``) and warn loudly when a trained network
    is no better than guessing. ``fail`` (a float network of a study that fails
    on divergence): the settings to check; the job then stops instead."""
    row["chance_level"] = chance_level(row["test_error"], data.y_test, data.n_classes)
    if row["chance_level"]:
        at = f"test error {row['test_error']:.4f} is at chance level ({data.n_classes} classes)"
        if fail is not None:
            raise DivergedError(f"{what}: {at}: it learned nothing; {fail}")
        log(f"WARNING: {what} {at}: the network learned nothing; check the training settings")


def _write_cell(out_dir: str | Path, row: dict, res, clock: _Clock, data, checkpoint: dict) -> None:
    """Complete the metrics row and write model.pt, then metrics.parquet (the
    file Snakemake waits for), each atomically."""
    out_dir = Path(out_dir)
    t = time.perf_counter()
    torch_save_atomic(
        {
            "format_version": CHECKPOINT_VERSION,
            "input_shape": list(data.input_shape),
            "n_classes": data.n_classes,
            "history": res.history,
            **checkpoint,
        },
        out_dir / "model.pt",
    )
    clock.seconds["write"] += time.perf_counter() - t
    row.update(
        {
            "epochs_run": res.epochs_run,
            "best_epoch": res.best_epoch,
            "train_seconds": res.seconds + clock.seconds["train"],  # with fit's epoch 0 where the cell ran it
            "evaluate_seconds": clock.seconds["evaluate"],
            "load_seconds": clock.seconds["load"],
            "write_seconds": clock.seconds["write"],  # model.pt; the one-row parquet is negligible
            "job_seconds": time.perf_counter() - clock.start,
            "max_rss_mb": peak_rss_mb(),
            **{col: [float(h[key]) for h in res.history] for key, col in HISTORY_COLUMNS.items()},
        }
    )
    parquet_write_atomic(pd.DataFrame([row]), out_dir / "metrics.parquet")


def _prepare(spec: FloatSpec, data_path: str | Path, threads: int):
    """Threads, device and the cell's data: its study's splits file (mapped) or
    a prepared dataset (split here); see :func:`qdesign.nn.data.load_cell_data`."""
    torch.set_num_threads(int(threads))
    reuse_freed_memory()  # every batch's buffers reused, not page-faulted afresh (no number changes)
    device = pick_device(spec.device)
    key = split_key(spec.dataset, spec.val_fraction, spec.split_seed, spec.train_subset)
    return device, load_cell_data(data_path, key).to(device)


def train_float(spec: FloatSpec, data_path: str | Path, out_dir: str | Path, threads: int = 1) -> dict:
    """Train the float network of one (study, width, seed) cell."""
    log = _logger()
    clock = _Clock()
    device, data = clock.timed("load", _prepare, spec, data_path, threads)
    torch.manual_seed(int(spec.seed))
    model = build_model(spec.model, spec.width, data.input_shape, data.n_classes).to(device)
    data = use_channels_last(model, data)
    log(
        f"float {spec.study} width {spec.width} seed {spec.seed} on {device} "
        f"({threads} threads): {sum(p.numel() for p in model.parameters())} parameters, "
        f"{data.x_train.shape[0]} train / {data.x_val.shape[0]} val / {data.x_test.shape[0]} test"
    )
    what = f"float {spec.study} width {spec.width} seed {spec.seed}"
    setting = f"studies.{spec.study}.training"
    fail = spec.fail_on_divergence
    res = fit(model, data, spec.training, seed=spec.seed, log=log, label=what, setting=setting, fail_on_divergence=fail)
    model.load_state_dict(res.best_state)
    val_err = res.best_val_error  # fit evaluated exactly this state
    test_err = clock.timed("evaluate", evaluate, model, data.x_test, data.y_test)
    n_layers = len(weight_layers(model))
    row = _base_row(spec, spec.key, model, Precision.float_(), None, [None] * n_layers, data, device, threads)
    row.update(
        {
            "test_error": test_err,
            "val_error": val_err,
            "direct_test_error": float("nan"),
            "direct_val_error": float("nan"),
            "steps": [],
            "quantized_layers": 0,
            "diverged": res.diverged is not None,
        }
    )
    check = (
        f"best epoch {res.best_epoch}/{res.epochs_run}; check {setting}.lr (now {spec.training['lr']:g}) "
        f"and the other {setting} settings, "
        f"or set studies.{spec.study}.fail_on_divergence: false to record such cells"
    )
    _flag_chance(row, data, log, what, check if fail else None)
    _write_cell(
        out_dir,
        row,
        res,
        clock,
        data,
        {
            "kind": "float",
            "spec": spec.to_dict(),
            "test_error": test_err,
            "val_error": val_err,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
    )
    log(f"done: test_err {test_err:.4f} val_err {val_err:.4f} best epoch {res.best_epoch} train {res.seconds:.1f}s")
    return row


def _load_float(spec: FloatSpec, float_checkpoint: str | Path) -> dict:
    """The float checkpoint of ``spec``, or a one-line error: its whole spec
    must be ``spec`` (a stale or foreign network is refused)."""
    ckpt = load_checkpoint(float_checkpoint)
    if ckpt.get("kind") != "float":
        raise CheckpointError(f"{float_checkpoint} is not a float network (kind {ckpt.get('kind')!r})")
    want = spec.to_dict()
    if ckpt["spec"] != want:
        diff = sorted(k for k in set(want) | set(ckpt["spec"]) if ckpt["spec"].get(k) != want.get(k))
        raise CheckpointError(
            f"{float_checkpoint} was trained with a different {', '.join(diff)} than this cell "
            "needs (stale float network: rerun its train_float job)"
        )
    return ckpt


def retrain(
    spec: QuantSpec,
    data_path: str | Path,
    float_checkpoint: str | Path,
    out_dir: str | Path,
    threads: int = 1,
    sensitivity: str | Path | None = None,
) -> dict:
    """Quantize one float network (L2-optimal steps), record the
    direct-quantization error, retrain with the spec's method, record the result.

    A mean-bits budget cell first allocates its word lengths from the float
    network's ``sensitivity`` table (:func:`allocate_bits`)."""
    log = _logger()
    clock = _Clock()
    fspec = spec.float
    ckpt = clock.timed("load", _load_float, spec.float, float_checkpoint)
    allocation, requested = None, spec
    if not spec.precision.is_allocated:
        if sensitivity is None:
            raise CheckpointError("a budget cell needs the float network's sensitivity table (--sensitivity)")
        allocation = allocate_bits(spec, sensitivity)
        spec = spec.allocated(allocation.pattern)
        log(f"budget {spec.precision}, predicted val loss increase {allocation.cost:.4g}")
    device, data = clock.timed("load", _prepare, fspec, data_path, threads)
    model = build_model(fspec.model, fspec.width, data.input_shape, data.n_classes)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {float_checkpoint} does not fit its model: {str(exc).splitlines()[0]}"
        ) from None
    model.to(device)
    data = use_channels_last(model, data)
    float_test = ckpt["test_error"]

    rcfg = spec.retraining
    method = get_method(spec.method)
    loss = clock.timed("train", method.loss, model, data, rcfg)  # distillation: the float outputs, once (training)
    t_q = time.perf_counter()
    precision = spec.precision
    qmodel = to_quantized(model, precision, float_first=rcfg["float_first"], float_last=rcfg["float_last"])
    steps0 = [float(layer.step) for _, layer in quantized_layers(qmodel)]
    log(
        f"{precision} ({spec.method}) {spec.study} width {spec.width} seed {spec.seed} on {device}: "
        f"steps {', '.join(f'{s:.4g}' for s in steps0)} ({time.perf_counter() - t_q:.2f}s)"
    )
    # the direct validation error is fit's epoch 0 (it takes part in the best-epoch
    # selection, as every epoch's validation does): training time, not a reported evaluation
    direct_val = clock.timed("train", evaluate, qmodel, data.x_val, data.y_val)
    direct_test = clock.timed("evaluate", evaluate, qmodel, data.x_test, data.y_test)
    log(f"float test_err {float_test:.4f}; direct quantization test_err {direct_test:.4f} val_err {direct_val:.4f}")

    qmodel = method.prepare(qmodel)
    epoch_start = method.hook(qmodel)

    torch.manual_seed(int(spec.seed))
    what = f"{precision} ({spec.method}) {spec.study} width {spec.width} seed {spec.seed}"
    res = fit(
        qmodel,
        data,
        rcfg,
        seed=spec.seed,
        log=log,
        epoch_start=epoch_start,
        keep_start=True,
        start_val_error=direct_val,
        label=what,
        setting=f"studies.{spec.study}.retraining",
        fail_on_divergence=fspec.fail_on_divergence,
        loss=loss,
    )
    qmodel.load_state_dict(res.best_state)
    val_err = res.best_val_error
    test_err = (
        direct_test if res.best_epoch == 0 else clock.timed("evaluate", evaluate, qmodel, data.x_test, data.y_test)
    )

    qnames = {name for name, _ in quantized_layers(qmodel)}
    layer_bits = [
        layer.bits if name in qnames else None
        for name, layer in ((n, qmodel.get_submodule(n)) for n, _, _ in weight_layers(qmodel))
    ]
    row = _base_row(spec.float, requested.key, qmodel, precision, spec.method, layer_bits, data, device, threads)
    if precision.is_mixed:
        row.update(precision.mixed_columns(math.nan if allocation is None else allocation.cost))
    codes = integer_codes(qmodel)
    row.update(
        {
            "test_error": test_err,
            "val_error": val_err,
            "direct_test_error": direct_test,
            "direct_val_error": direct_val,
            "steps": [codes[name].step for name, _ in quantized_layers(qmodel)],
            "quantized_layers": len(codes),
            "diverged": res.diverged is not None,
        }
    )
    _flag_chance(row, data, log, what)
    _write_cell(
        out_dir,
        row,
        res,
        clock,
        data,
        {
            "kind": "quantized",
            "spec": requested.to_dict(),
            "float_spec": fspec.to_dict(),
            "bits": precision.bits if precision.kind == "uniform" else precision.pattern,
            "layer_bits": layer_bits,
            "state_dict": {k: v.cpu() for k, v in bake(qmodel).state_dict().items()},
            "codes": {name: {"codes": qt.codes, "step": qt.step, "bits": qt.bits} for name, qt in codes.items()},
            "nchw_layers": nchw_layers(qmodel),  # the layout it was evaluated in (export verification)
        },
    )
    log(
        f"done: test_err {test_err:.4f} (direct {direct_test:.4f}, float {float_test:.4f}) "
        f"best epoch {res.best_epoch} train {res.seconds:.1f}s"
    )
    return row


# ------------------------------------------------------------ mixed precision


def allocate_bits(spec: QuantSpec, sensitivity: str | Path):
    """The word lengths of a budget cell, from its float network's sensitivity
    table (refused if the table is of another network)."""
    from ..analysis.allocation import allocate  # noqa: PLC0415
    from .sensitivity import costs_from_table, read_sensitivity  # noqa: PLC0415

    table = read_sensitivity(sensitivity, float_hash=spec.float.key)
    try:
        costs, n_weights = costs_from_table(table, spec.precision.candidate_bits)
    except ValueError as exc:
        raise CheckpointError(f"{sensitivity}: {exc} (rerun its sensitivity job)") from None
    return allocate(costs, n_weights, spec.precision.mean_bits, spec.precision.allocation)


def sensitivity(
    spec: FloatSpec, data_path: str | Path, float_checkpoint: str | Path, out: str | Path, bits, threads: int = 1
):
    """The layer sensitivity table of one float network (see :mod:`qdesign.nn.sensitivity`)."""
    from .sensitivity import layer_sensitivity  # noqa: PLC0415

    log = _logger()
    t0 = time.perf_counter()
    ckpt = _load_float(spec, float_checkpoint)
    device, data = _prepare(spec, data_path, threads)
    model = build_model(spec.model, spec.width, data.input_shape, data.n_classes)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device)
    data = use_channels_last(model, data)
    table = layer_sensitivity(model, data, bits)
    table.insert(0, "seed", int(spec.seed))
    table.insert(0, "width", int(spec.width))
    table.insert(0, "study", spec.study)
    table["float_hash"] = spec.key
    parquet_write_atomic(table, Path(out))
    worst = table.loc[table["d_val_loss"].idxmax()]
    log(
        f"sensitivity {spec.study} width {spec.width} seed {spec.seed}: {table['layer'].nunique()} layers x "
        f"{len(set(bits))} bits in {time.perf_counter() - t0:.1f}s; most sensitive: layer {int(worst['layer'])} "
        f"at {int(worst['bits'])} bits (val loss +{worst['d_val_loss']:.4g})"
    )
    return table
