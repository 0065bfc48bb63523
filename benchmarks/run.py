"""qdesign benchmarks: training speed against the machine's limit and against
what a user would otherwise use, and the orchestration overhead.

Every comparison is measured side by side in this one run (alternating the
contenders, median of several repeats), printed as a table of ratios with its
target, and written to ``benchmarks/out/results.json``.

    python benchmarks/run.py [--threads 2] [--quick]

Needs the `bench` extra (Brevitas): ``pip install -r benchmarks/requirements.txt``.
MNIST comes from ``--data-dir`` (default ``../shared/data``, else ``data``);
without it the step benchmarks use random data of MNIST's shape (reported).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401 - imported by the first optimizer anyway; keep it out of timings
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from qdesign.nn.allocator import reuse_freed_memory
from qdesign.nn.data import DatasetError, make_splits, prepare_dataset
from qdesign.nn.models import build_model
from qdesign.nn.train import make_optimizer, train_epoch
from qdesign.quantize import step_search, to_quantized, update_steps
from qdesign.run.invocation import snakemake_command

REPO = Path(__file__).resolve().parents[1]
FC = {"type": "fcdnn", "depth": 3, "dropout": 0.0}
CNN_PAPER = {
    "type": "cnn",
    "channel_multipliers": [1, 2, 4],
    "convs_per_block": 2,
    "kernel_size": 3,
    "pool": "max",
    "fc_units": 0,
    "dropout": 0.0,
}
ADAM = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0}
RESULTS: list[dict] = []


def record(item: str, name: str, value: float, unit: str, target: str = "", ok: bool | None = None, **extra):
    RESULTS.append(dict(item=item, name=name, value=value, unit=unit, target=target, ok=ok, **extra))
    mark = "" if ok is None else ("  ok" if ok else "  MISSED")
    print(f"{item:>3}  {name:<58} {value:>10.4g} {unit:<9} {target:<10}{mark}", flush=True)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calls alternated A, B, A, B..."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------ data


def mnist(data_dir: Path | None):
    for d in [data_dir] if data_dir else [REPO.parent / "shared" / "data", REPO / "data"]:
        try:
            return make_splits(prepare_dataset("mnist", d, download=False), 0.1, 0), f"MNIST from {d}"
        except DatasetError:
            continue
    g = torch.Generator().manual_seed(0)
    payload = {
        "x_train": torch.randint(0, 256, (60000, 1, 28, 28), dtype=torch.uint8, generator=g),
        "y_train": torch.randint(0, 10, (60000,), generator=g),
        "x_test": torch.randint(0, 256, (1000, 1, 28, 28), dtype=torch.uint8, generator=g),
        "y_test": torch.randint(0, 10, (1000,), generator=g),
        "mean": [33.3],
        "std": [78.6],
        "n_classes": 10,
    }
    return make_splits(payload, 0.1, 0), "random data of MNIST's shape (no MNIST found)"


def fc_train_flops(width: int, depth: int = 3, n_in: int = 784, n_out: int = 10) -> float:
    """Exact matmul FLOPs of one training example: forward, weight gradients,
    and input gradients of every layer but the first."""
    macs = [n_in * width] + [width * width] * (depth - 1) + [width * n_out]
    return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])


def steps_of(model, x, y, bs, n_steps, seed=0):
    """A function running ``n_steps`` steps of qdesign's trainer."""
    opt = make_optimizer(model.parameters(), {**ADAM, "batch_size": bs})
    xs, ys = x[: bs * n_steps], y[: bs * n_steps]
    gen = torch.Generator().manual_seed(seed)
    return lambda: train_epoch(model, opt, xs, ys, bs, gen)


# ------------------------------------------------------------------ items


def item1_trainer_vs_dataloader(data, bs, n_steps, repeats):
    """qdesign's trainer (in-memory tensors, index batches, multi-tensor Adam)
    against the loop most users write (DataLoader over a TensorDataset, Adam's
    defaults), on the same FCDNN and data, at the paper's largest and a small width."""
    for width in (1024, 64):
        torch.manual_seed(0)
        ours_model = build_model(FC, width, (1, 28, 28), 10)
        plain_model = build_model(FC, width, (1, 28, 28), 10)
        ours = steps_of(ours_model, data.x_train, data.y_train, bs, n_steps)
        x, y = data.x_train[: bs * n_steps], data.y_train[: bs * n_steps]
        loader = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
        opt = torch.optim.Adam(plain_model.parameters(), lr=1e-3)

        def plain():
            plain_model.train()
            for xb, yb in loader:
                opt.zero_grad()
                loss = F.cross_entropy(plain_model(xb), yb)
                loss.backward()
                opt.step()

        ours(), plain()  # warm-up
        t = interleaved({"ours": ours, "plain": plain}, repeats)
        record(
            "1",
            f"float step: qdesign trainer / DataLoader loop (3x{width})",
            t["ours"] / t["plain"],
            "ratio",
            "",
            None,
            ours_ms=1e3 * t["ours"] / n_steps,
            plain_ms=1e3 * t["plain"] / n_steps,
        )


def matmul_flops(threads: int) -> float:
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_time(lambda: torch.mm(a, b)) for _ in range(5))
    flops = 2 * n**3 / best
    record("2", f"torch.matmul 2048^3 throughput ({threads} threads)", flops / 1e9, "GFLOP/s")
    return flops


def _time(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def item2_flops_fraction(data, bs, n_steps, repeats, peak):
    out = {}
    for width in (256, 1024):
        torch.manual_seed(0)
        run = steps_of(build_model(FC, width, (1, 28, 28), 10), data.x_train, data.y_train, bs, n_steps)
        run()
        sec = statistics.median(_time(run) for _ in range(repeats)) / n_steps
        achieved = fc_train_flops(width) * bs / sec
        frac = achieved / peak
        out[width] = sec
        target = ">= 0.5" if width == 1024 else ""
        record(
            "2",
            f"training FLOP/s / matmul peak, width {width} ({achieved / 1e9:.0f} GFLOP/s)",
            frac,
            "fraction",
            target,
            frac >= 0.5 if width == 1024 else None,
            step_ms=1e3 * sec,
        )
    return out


def item3_retrain_vs_float(data, bs, n_steps, repeats, bits=2):
    torch.manual_seed(0)
    float_model = build_model(FC, 1024, (1, 28, 28), 10)
    qmodel = to_quantized(float_model, bits)
    fl = steps_of(float_model, data.x_train, data.y_train, bs, n_steps)
    qa = steps_of(qmodel, data.x_train, data.y_train, bs, n_steps)
    fl(), qa()
    t = interleaved({"float": fl, "retrain": qa}, repeats)
    ratio = t["retrain"] / t["float"]
    record("3", f"retraining step ({bits}-bit, STE) / float step (3x1024)", ratio, "ratio", "<= 1.10", ratio <= 1.10)
    return qmodel, t["retrain"] / n_steps


def cpu_cnn_study() -> tuple[str, dict]:
    """The convolutional study of config/cpu.yaml (name, study config)."""
    import yaml  # noqa: PLC0415

    studies = yaml.safe_load((REPO / "config" / "cpu.yaml").read_text())["studies"]
    return next((name, s) for name, s in studies.items() if s["model"]["type"] == "cnn")


def item3_cnn_retrain_vs_float(n_steps, repeats, bits=2, threads=None):
    """Quantized CNN retraining step / float step at every width of
    config/cpu.yaml's CNN, on its threads and batch (as its jobs run), both
    channels-last as the cells hold them, alternated: the cost of quantizing in
    the forward pass and of the quantized layers' own kernels."""
    study, s = cpu_cnn_study()
    before = torch.get_num_threads()
    torch.set_num_threads(threads or int(s.get("threads", 1)))
    bs = int(s["retraining"]["batch_size"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs * n_steps, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs * n_steps,), generator=g)
    out = {}
    try:
        for width in s["model"]["widths"]:
            torch.manual_seed(0)
            float_model = build_model(s["model"], width, (1, 28, 28), 10).to(memory_format=torch.channels_last)
            qmodel = to_quantized(float_model, bits)
            fl, qa = steps_of(float_model, x, y, bs, n_steps), steps_of(qmodel, x, y, bs, n_steps)
            fl(), qa()
            t = interleaved({"float": fl, "retrain": qa}, repeats)
            ratio = t["retrain"] / t["float"]
            out[width] = ratio
            record(
                "3",
                f"CNN retraining step ({bits}-bit) / float step, {study} w{width}",
                ratio,
                "ratio",
                "<= 1.10",
                ratio <= 1.10,
                float_ms=1e3 * t["float"] / n_steps,
                retrain_ms=1e3 * t["retrain"] / n_steps,
                batch=bs,
                threads=torch.get_num_threads(),
            )
    finally:
        torch.set_num_threads(before)
    return out


def brevitas_fcdnn(width, bits):
    import brevitas.nn as qnn  # noqa: PLC0415

    dims = [784] + [width] * 3
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [qnn.QuantLinear(a, b, bias=True, weight_bit_width=bits), nn.ReLU()]
    layers.append(qnn.QuantLinear(width, 10, bias=True, weight_bit_width=bits))
    return nn.Sequential(*layers)


def item4_vs_brevitas(data, bs, n_steps, repeats, bits=2):
    try:
        bmodel = brevitas_fcdnn(1024, bits)
    except ImportError:
        record(
            "4",
            "retraining step / Brevitas QuantLinear step",
            float("nan"),
            "ratio",
            "<= 0.75",
            None,
            note="brevitas not installed: pip install -r benchmarks/requirements.txt",
        )
        return
    torch.manual_seed(0)
    qmodel = to_quantized(build_model(FC, 1024, (1, 28, 28), 10), bits)
    ours = steps_of(qmodel, data.x_train, data.y_train, bs, n_steps)
    theirs = steps_of(bmodel, data.x_train, data.y_train, bs, n_steps)
    ours(), theirs()
    t = interleaved({"ours": ours, "brevitas": theirs}, repeats)
    ratio = t["ours"] / t["brevitas"]
    record(
        "4",
        f"retraining step / Brevitas QuantLinear step ({bits}-bit, 3x1024)",
        ratio,
        "ratio",
        "<= 0.75",
        ratio <= 0.75,
        ours_ms=1e3 * t["ours"] / n_steps,
        brevitas_ms=1e3 * t["brevitas"] / n_steps,
    )


def item5_step_search_vs_epoch(data, bs, bits_list=(2, 8), one_thread_bits=(8,)):
    """The step search of every layer against one retraining epoch, both on the
    benchmark's threads; for ``one_thread_bits`` also both on 1 thread, as the
    study's jobs run (``threads: 1`` in config/cpu.yaml)."""
    threads = torch.get_num_threads()
    runs = [(bits, threads) for bits in bits_list] + [(bits, 1) for bits in one_thread_bits if threads != 1]
    for bits, n_threads in runs:
        torch.set_num_threads(n_threads)
        torch.manual_seed(0)
        qmodel = to_quantized(build_model(FC, 1024, (1, 28, 28), 10), bits)
        # three paths to the same steps, alternated: compiled counting and
        # polish; compiled counting with the Python polish (before the sixth
        # pass); NumPy alone (before the compiled kernels)
        polish_kernel = step_search.POLISH_KERNEL
        variants = {"compiled": (True, polish_kernel), "python_polish": (True, False), "numpy": (False, False)}
        searches = {name: [] for name in variants}
        for _ in range(5):
            for name, (kernels, polish) in variants.items():
                step_search.USE_KERNELS, step_search.POLISH_KERNEL = kernels, polish
                searches[name].append(_time(lambda: update_steps(qmodel)))
        step_search.USE_KERNELS, step_search.POLISH_KERNEL = True, polish_kernel
        search = statistics.median(searches["compiled"])
        python_polish_search = statistics.median(searches["python_polish"])
        numpy_search = statistics.median(searches["numpy"])
        opt = make_optimizer(qmodel.parameters(), {**ADAM, "batch_size": bs})
        gen = torch.Generator().manual_seed(0)
        epoch = _time(lambda: train_epoch(qmodel, opt, data.x_train, data.y_train, bs, gen))
        frac = search / epoch
        record(
            "5",
            f"l2_optimal_step, all 4 layers ({bits}-bit) / one retraining epoch, {n_threads} thread(s)",
            frac,
            "fraction",
            "< 0.01",
            frac < 0.01,
            search_s=search,
            epoch_s=epoch,
            threads=n_threads,
            n_train=int(data.x_train.shape[0]),
            compiled=step_search._counting is not None,
            compiled_polish=polish_kernel,
            python_polish_search_s=python_polish_search,
            numpy_search_s=numpy_search,
        )
        record(
            "5",
            f"  the same with the Python Lloyd polish (before the sixth pass), {n_threads} thread(s)",
            python_polish_search / epoch,
            "fraction",
        )
        record(
            "5",
            f"  the same with NumPy's counting (before the compiled kernels), {n_threads} thread(s)",
            numpy_search / epoch,
            "fraction",
        )
    torch.set_num_threads(threads)


def item7_cnn_flops(bs, repeats, peak, width=128):
    torch.manual_seed(0)
    model = build_model(CNN_PAPER, width, (3, 32, 32), 10).to(memory_format=torch.channels_last)
    x = torch.randn(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))
    run = steps_of(model, x, y, bs, 1)
    run()
    sec = statistics.median(_time(run) for _ in range(repeats))
    macs, c, hw = 0, 3, 32
    for mult in CNN_PAPER["channel_multipliers"]:
        for _ in range(CNN_PAPER["convs_per_block"]):
            macs_l = c * width * mult * 9 * hw * hw
            macs += macs_l
            c = width * mult
        hw //= 2
    first = 3 * width * 9 * 32 * 32
    flops = (6 * macs - 2 * first + 6 * c * hw * hw * 10) * bs
    frac = flops / sec / peak
    record(
        "7",
        f"CNN (CIFAR-10 shape, width {width}) FLOP/s / matmul peak ({flops / sec / 1e9:.0f} GFLOP/s)",
        frac,
        "fraction",
        "",
        None,
        step_s=sec,
        batch=bs,
    )


def item8_cell_outside_training(data_dir: Path | None, subset: int | None, bits: int = 8, widths=None):
    """Per cell, the time outside training: (job_seconds - train_seconds) /
    job_seconds of real train_float and retrain cells on the real datasets of
    config/cpu.yaml, at each of its widths. The cells run 1 epoch (float) and 1
    epoch (retraining); the fraction is projected to cpu.yaml's epochs
    (outside / (outside + train * epochs)), each epoch being the same work.
    With ``subset`` the training sets are cut to that many examples and the
    training time without the epoch's validation is scaled back up by the size
    ratio (the validation time estimated from the cell's own evaluations):
    an approximation, reported beside the full measurement's name.

    A retraining cell's training includes fit's epoch 0, the direct validation
    error (model selection, like every epoch's validation; counted once, not per
    epoch); outside training are the reported test evaluations (direct and
    retrained test error: ``evaluate_fraction``) and the rest (loading, the
    step search, conversions, writing), each printed per cell kind."""
    import pandas as pd  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    from qdesign.core.config import validate_config  # noqa: PLC0415
    from qdesign.core.specs import float_spec, quant_spec, study_split_key  # noqa: PLC0415
    from qdesign.nn import inference  # noqa: PLC0415
    from qdesign.nn.cells import retrain, train_float  # noqa: PLC0415
    from qdesign.nn.data import write_splits  # noqa: PLC0415

    cfg = yaml.safe_load((REPO / "config" / "cpu.yaml").read_text())
    threads_before = torch.get_num_threads()  # the cells set their own
    dirs = [data_dir] if data_dir else [REPO.parent / "shared" / "data", REPO / "data"]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for study, s in cfg["studies"].items():
            payload = None
            for d in dirs:
                try:
                    payload = prepare_dataset(s["dataset"], d, download=False)
                    break
                except DatasetError:
                    continue
            if payload is None:
                record("8", f"outside training, {study}", float("nan"), "fraction", "<= 0.05", None, note="no data")
                continue
            threads = int(s.get("threads", 1))  # as the study's jobs run
            n_pool = payload["x_train"].shape[0] - int(round(s["val_fraction"] * payload["x_train"].shape[0]))
            n_full = min(s.get("train_subset") or n_pool, n_pool)
            n_run = min(subset, n_full) if subset else n_full
            epochs = {"float": s["training"]["epochs"], "retrain": s["retraining"]["epochs"]}
            run_cfg = {**cfg, "data_dir": str(tmp), "download": False}
            run_cfg["studies"] = {
                study: {
                    **s,
                    "train_subset": n_run,
                    "threads": threads,
                    "training": {**s["training"], "epochs": 1},
                    "retraining": {**s["retraining"], "epochs": 1},
                }
            }
            c = validate_config(run_cfg)
            data_path = tmp / f"{study}.splits.pt"  # as the workflow hands it to the cells (split_data)
            write_splits(payload, study_split_key(c, study), data_path)
            for width in widths or s["model"]["widths"]:
                fspec = float_spec(c, study, width, 0)
                cell = tmp / study / str(width)
                qspec = quant_spec(c, study, width, bits, 0)
                inference.forget_blocked_path_verdicts()  # each cell checks its cases, as a job's process does
                with contextlib.redirect_stdout(io.StringIO()):  # the cells' own logs
                    rows = {"float": train_float(fspec, data_path, cell / "float", threads=threads)}
                    rows["retrain"] = retrain(qspec, data_path, cell / "float" / "model.pt", cell / "q", threads)
                blocked = sorted({v for v in inference.blocked_path_verdicts().values()})
                for kind, row in rows.items():
                    job, train = float(row["job_seconds"]), float(row["train_seconds"])
                    evaluate_s = float(row["evaluate_seconds"])  # the test evaluations the cell reports
                    outside = job - train
                    # the per-epoch validation (inside train) does not shrink with a subset: its time is
                    # estimated from the cell's own reported evaluations (the same forward pass per image);
                    # a retraining cell's train also holds fit's epoch 0, the direct validation error
                    n_val, n_test = int(row["n_val"]), int(row["n_test"])
                    n_eval = n_test * (1 if kind == "float" or row["best_epoch"] == 0 else 2)
                    val_s = evaluate_s / n_eval * n_val
                    start_s = 0.0 if kind == "float" else min(val_s, train / 2)
                    epoch_s = train - start_s
                    val_s = min(val_s, epoch_s)
                    train_proj = start_s + epochs[kind] * ((epoch_s - val_s) * n_full / n_run + val_s)
                    cell_s = outside + train_proj
                    frac, eval_frac, rest_frac = outside / cell_s, evaluate_s / cell_s, (outside - evaluate_s) / cell_s
                    what = kind if kind == "float" else f"{bits}-bit"
                    name = f"outside training / job, {study} {what} w{width}{' (subset)' if n_run < n_full else ''}"
                    record(
                        "8",
                        name,
                        frac,
                        "fraction",
                        "<= 0.05",
                        frac <= 0.05,
                        outside_s=outside,
                        train_s=train,
                        train_projected_s=train_proj,
                        measured_fraction=outside / job,
                        evaluate_fraction=eval_frac,
                        **{f"{k}_s": float(row[f"{k}_seconds"]) for k in ("evaluate", "load", "write")},
                    )
                    if kind == "retrain" and s["model"]["type"] == "cnn":
                        # True: its convolutions ran on blocked tensors (qdesign.nn.inference);
                        # [False]: checked, not exact; []: no NCHW convolution to check
                        RESULTS[-1]["blocked_evaluation"] = blocked
                    # what is left besides the reported test evaluations: loading, the step search,
                    # conversions, writing
                    record(
                        "8",
                        "  of it other than its reported test evaluations",
                        rest_frac,
                        "fraction",
                        "<= 0.01",
                        rest_frac <= 0.01,
                    )
                    out.append(
                        dict(
                            study=study,
                            kind=kind,
                            width=width,
                            fraction=frac,
                            evaluate_fraction=eval_frac,
                            rest_fraction=rest_frac,
                            blocked=kind == "retrain" and True in blocked,
                        )
                    )
            for kind in ("float", "retrain"):
                got = [r for r in out if r["study"] == study and r["kind"] == kind]
                if got:

                    def span(key, rows=got):
                        return f"{min(r[key] for r in rows):.1%}-{max(r[key] for r in rows):.1%}"

                    print(
                        f"     {study} {kind}: outside training {span('fraction')} of a cell (target <= 5%); "
                        f"its reported test evaluations {span('evaluate_fraction')}, "
                        f"the rest {span('rest_fraction')} (target <= 1%)",
                        flush=True,
                    )
                    if kind == "retrain" and s["model"]["type"] == "cnn":
                        widths_blocked = [r["width"] for r in got if r["blocked"]]
                        print(f"     {study} retrain: convolutions on blocked tensors at widths {widths_blocked}")
    torch.set_num_threads(threads_before)
    return pd.DataFrame(out)


# ------------------------------------------------------------------ orchestration


def _smk(workdir, *args, env=None, timeout=900):
    cmd = snakemake_command(workdir, *args)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0, res


def _py(args, env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - t0


def tiny_cell_spec() -> str:
    """The JSON spec of the per-job start-up measurement's cell: 1 epoch of a
    width-8 FCDNN on the offline digits set (what the default study trains),
    at lr 0.01, so that it learns something (test error 0.67): at the default
    lr 0.001 one epoch leaves it at chance level, which fails a float cell."""
    from qdesign.core.config import validate_config  # noqa: PLC0415
    from qdesign.core.specs import float_spec  # noqa: PLC0415

    study = {"dataset": "digits", "model": {"type": "fcdnn", "widths": [8]}, "training": {"epochs": 1, "lr": 0.01}}
    return float_spec(validate_config({"device": "cpu", "studies": {"s": study}}), "s", 8, 0).to_json()


def item6_orchestration(quick: bool):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sec, res = _smk(tmp, "-n", "--configfile", str(REPO / "config" / "paper.yaml"))
        total = re.search(r"^total\s+(\d+)\s*$", res.stdout, re.M)  # Job stats (the profile hides job blocks)
        n_jobs = int(total[1]) if total else 0
        record("6", f"snakemake --dry-run of config/paper.yaml ({n_jobs} jobs)", sec, "s", "<= 10", sec <= 10)

        # per-job start-up: a bare interpreter, torch, and a whole qdesign job
        # that trains one epoch of a width-8 digits network, in its own process and via the worker
        bare = min(_py(["-c", "pass"]) for _ in range(3))
        torch_imp = min(_py(["-c", "import torch"]) for _ in range(3))
        record("6", "process start: python -c pass", bare, "s")
        record("6", "process start + import torch", torch_imp, "s")

        config = tmp / "study.yaml"
        src = (REPO / "config" / "config.yaml").read_text()
        if quick:  # one seed, fewer epochs: the orchestration numbers stay meaningful
            src = (
                src.replace("seeds: [0, 1, 2]", "seeds: [0]")
                .replace("epochs: 40", "epochs: 5")
                .replace("epochs: 15", "epochs: 2")
            )
        config.write_text(src)
        study = tmp / "study"
        sec, _ = _smk(study, "--cores", str(os.cpu_count()), "--configfile", str(config))
        import pandas as pd  # noqa: PLC0415

        cells = pd.concat([pd.read_parquet(p) for p in study.glob("results/*/summary.parquet")])
        work = cells["job_seconds"].sum()
        n = len(cells)
        record(
            "6",
            f"{'quick ' if quick else ''}default study, whole run ({n} cells, {os.cpu_count()} cores)",
            sec,
            "s",
            "<= 600" if not quick else "",
            sec <= 600 if not quick else None,
        )
        overhead = (sec * os.cpu_count() - work) / n
        record(
            "6",
            "orchestration overhead per cell job (core-s, incl. Snakemake)",
            overhead,
            "s",
            "",
            None,
            job_seconds_total=work,
        )
        sec, res = _smk(study, "--cores", "2", "--configfile", str(config))
        assert "Nothing to be done" in res.stdout + res.stderr
        record("6", "no-op rerun of the finished default study", sec, "s", "<= 10", sec <= 10)
        for fig in study.glob("results/*/figures/*"):
            fig.unlink()
        sec, _ = _smk(study, "--cores", "2", "--configfile", str(config), "--allowed-rules", "figures")
        record("6", "regenerate all figures from cached tables (2 studies)", sec, "s", "<= 15", sec <= 15)
        if (REPO / "reference").is_dir():
            ref = tmp / "ref"
            shutil.copytree(REPO / "reference", ref / "reference")
            sec, _ = _smk(ref, "--cores", "2", "reference")
            record("6", "snakemake reference: figures of the shipped tables", sec, "s", "<= 15", sec <= 15)

        # one tiny cell started as a rule starts it: own process vs warm worker
        spec = tiny_cell_spec()
        data = study / "results" / "data" / "digits.pt"
        job = ["-m", "qdesign", "train-float", "--spec", spec, "--data", str(data), "--out-dir", str(tmp / "cell")]
        own = statistics.median(_py(job) for _ in range(3))
        from qdesign.run import cli as qcli  # noqa: PLC0415
        from qdesign.run import worker  # noqa: PLC0415

        # the worker exactly as the workflow starts it (workflow/rules/common.smk)
        proc = worker.start(tmp / "worker.log", handler=qcli.WORKER_HANDLER, preload=qcli.WORKER_PRELOAD)
        if proc is None:
            raise RuntimeError(f"the warm worker did not start; see {tmp / 'worker.log'}")
        try:
            env = {k: os.environ[k] for k in (worker.ENV_SOCKET, worker.ENV_PID)}
            _py(job, env=env)  # waits for the worker's imports
            warm = statistics.median(_py(job, env=env) for _ in range(5))
        finally:
            worker.stop(proc)
        record("6", "per-job start-up: a 1-epoch width-8 digits cell, own process", own, "s")
        record("6", "per-job start-up: same job through the warm worker", warm, "s", "", None, speedup=own / warm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a one-seed study (smoke test)")
    ap.add_argument(
        "--cells-subset", type=int, default=None, help="item 8: train the cells on this many examples (scaled back)"
    )
    ap.add_argument("--only", nargs="+", default=None, help="run only these items (e.g. 5 8)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as the study's jobs run (qdesign.nn.cells), for every item
    t_start = time.perf_counter()
    data, data_note = mnist(args.data_dir)
    reps, n_steps = (3, 10) if args.quick else (7, 30)
    print(
        f"qdesign benchmarks: torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, {data_note}\n"
    )
    print(f"{'#':>3}  {'measurement':<58} {'value':>10} {'unit':<9} {'target':<10}")
    want = set(args.only or "12345678")
    peak = matmul_flops(args.threads) if want & {"2", "7"} else None
    if "1" in want:
        item1_trainer_vs_dataloader(data, args.batch_size, n_steps, reps)
    if "2" in want:
        item2_flops_fraction(data, args.batch_size, n_steps, reps, peak)
    if "3" in want:
        item3_retrain_vs_float(data, args.batch_size, n_steps, reps)
        item3_cnn_retrain_vs_float(n_steps, reps)
    if "4" in want:
        item4_vs_brevitas(data, args.batch_size, n_steps, reps)
    if "5" in want:
        item5_step_search_vs_epoch(data, args.batch_size)
    if "7" in want:
        item7_cnn_flops(32 if args.quick else 128, 2 if args.quick else 3, peak)
    if "8" in want:
        subset = args.cells_subset or (2000 if args.quick else None)
        item8_cell_outside_training(args.data_dir, subset)
    if "6" in want:
        item6_orchestration(args.quick)
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            dict(
                torch=torch.__version__,
                threads=args.threads,
                batch_size=args.batch_size,
                data=data_note,
                machine=platform.machine(),
                cpus=os.cpu_count(),
                seconds=total,
                results=RESULTS,
            ),
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
