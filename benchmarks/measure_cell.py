"""Measure one float cell's peak memory and training throughput, as a fresh
process (what a cluster job is), to calibrate :mod:`qdesign.run.resources`.

    python benchmarks/measure_cell.py --dataset cifar10 --model cnn --width 128 --n-train 256 --epochs 1

Data are random uint8 images of the dataset's shape (``--fake``, the default
for cifar10) or a prepared dataset file (``--data``). Prints one JSON line:
max_rss_mb, train_seconds, n_train, epochs, the training FLOPs and GFLOP/s,
and the estimate of :func:`qdesign.run.resources.job_peak_mb` for the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import pandas as pd
import torch

from qdesign.core.architecture import training_flops_per_example
from qdesign.core.config import validate_config
from qdesign.core.specs import float_spec
from qdesign.nn.cells import train_float
from qdesign.nn.data import write_prepared
from qdesign.run.resources import DATASET_SHAPES, job_peak_mb

MODELS = {
    "fcdnn": {"type": "fcdnn", "depth": 2, "widths": [8], "dropout": 0.0},
    "cnn": {
        "type": "cnn",
        "widths": [8],
        "channel_multipliers": [1, 2, 4],
        "convs_per_block": 2,
        "kernel_size": 3,
        "pool": "max",
        "fc_units": 0,
        "dropout": 0.0,
    },
}


def fake_payload(dataset: str, n_train: int, n_test: int) -> dict:
    _, shape = DATASET_SHAPES[dataset]
    g = torch.Generator().manual_seed(0)
    return {
        "format_version": 1,
        "name": dataset,
        "source": "random",
        "n_classes": 10,
        "x_train": torch.randint(0, 256, (n_train, *shape), dtype=torch.uint8, generator=g),
        "y_train": torch.randint(0, 10, (n_train,), generator=g),
        "x_test": torch.randint(0, 256, (n_test, *shape), dtype=torch.uint8, generator=g),
        "y_test": torch.randint(0, 10, (n_test,), generator=g),
        "mean": [120.0] * shape[0],
        "std": [60.0] * shape[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--model", choices=sorted(MODELS), default="cnn")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=256, help="fake: training pool size")
    ap.add_argument("--n-test", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=0, help="real data: train on this many (0: all)")
    ap.add_argument("--data", help="a prepared dataset file instead of random data")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = dict(MODELS[args.model], widths=[args.width])
    if args.model == "fcdnn":
        model["depth"] = args.depth
    study = {
        "dataset": args.dataset,
        "model": model,
        "bits": [2],
        "seeds": [0],
        "val_fraction": 0.1,
        "train_subset": args.train_subset or None,
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 0.01},
        "retraining": {"epochs": 1, "batch_size": args.batch_size, "lr": 0.001},
        # random images and labels are learned to chance level by design: record the cell, flagged
        "fail_on_divergence": False,
    }
    cfg = validate_config({"device": args.device, "studies": {"s": study}})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data.pt"
        n_pool = None
        if not args.data:
            write_prepared(fake_payload(args.dataset, args.n_train, args.n_test), data)
            n_pool = args.n_train + args.n_test
        spec = float_spec(cfg, "s", args.width, 0)
        train_float(spec, data, Path(tmp) / "cell", threads=args.threads)
        row = pd.read_parquet(Path(tmp) / "cell" / "metrics.parquet").iloc[0]
    shape = DATASET_SHAPES[args.dataset][1]
    flops = training_flops_per_example(model, args.width, shape) * int(row["n_train"]) * int(row["epochs_run"])
    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "model": args.model,
                "width": args.width,
                "threads": args.threads,
                "n_train": int(row["n_train"]),
                "epochs": int(row["epochs_run"]),
                "max_rss_mb": round(float(row["max_rss_mb"]), 1),
                "train_seconds": round(float(row["train_seconds"]), 2),
                "job_seconds": round(float(row["job_seconds"]), 2),
                "gflop_per_s": round(flops / float(row["train_seconds"]) / 1e9, 2),
                "estimated_peak_mb": job_peak_mb(cfg["studies"]["s"], args.width, n_examples=n_pool),
                "flops": math.floor(flops),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
