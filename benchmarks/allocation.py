"""Knapsack against greedy bit allocation, measured on a finished mixed study.

For every float network of the study and every budget, both allocations are
computed from that network's sensitivity table; each pattern is then applied
to the float network (L2-optimal steps, no retraining) and its validation loss
and error measured. Prints per budget: how often the two differ, the mean
predicted cost and the mean measured validation loss and error of each, and
the ratio greedy / knapsack (above 1: knapsack better).

    python benchmarks/allocation.py --results /work/runs-mixed/results --study mnist-mixed \\
        --config config/cpu-mixed.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from qdesign.analysis.allocation import allocate
from qdesign.core.config import load_config
from qdesign.core.layout import float_dir, sensitivity_file
from qdesign.nn.cells import load_checkpoint
from qdesign.nn.data import load_prepared, make_splits
from qdesign.nn.models import build_model
from qdesign.nn.sensitivity import costs_from_table, loss_and_error
from qdesign.quantize import to_quantized


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True, help="the run's results/ folder")
    ap.add_argument("--study", required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    s = cfg["studies"][args.study]
    root = args.results.parent
    payload = load_prepared(root / "results" / "data" / f"{s['dataset']}.pt")
    data = make_splits(payload, s["val_fraction"], cfg["split_seed"], s["train_subset"])
    rows = []
    for width in s["model"]["widths"]:
        for seed in s["seeds"]:
            sens = pd.read_parquet(root / sensitivity_file(args.study, width, seed))
            costs, n = costs_from_table(sens, s["mixed"]["candidate_bits"])
            ckpt = load_checkpoint(root / float_dir(args.study, width, seed) / "model.pt")
            model = build_model(s["model"], width, data.input_shape, data.n_classes)
            model.load_state_dict(ckpt["state_dict"])
            for mean in s["mixed"]["mean_bits"]:
                for method in ("knapsack", "greedy"):
                    a = allocate(costs, n, mean, method)
                    q = to_quantized(model, list(a.pattern)).eval()
                    loss, err = loss_and_error(q, data.x_val, data.y_val)
                    rows.append(
                        dict(width=width, seed=seed, mean_bits=mean, method=method, pattern=a.tag,
                             predicted=a.cost, val_loss=loss, val_error=err, memory=a.memory_bits)
                    )  # fmt: skip
    df = pd.DataFrame(rows)
    piv = df.pivot_table(index=["mean_bits", "width", "seed"], columns="method", values=["pattern"], aggfunc="first")
    differ = (piv[("pattern", "greedy")] != piv[("pattern", "knapsack")]).groupby("mean_bits").mean()
    means = df.groupby(["mean_bits", "method"])[["predicted", "val_loss", "val_error"]].mean().unstack("method")
    print(f"{args.study}: {df.groupby(['width', 'seed']).ngroups} float networks; direct quantization, no retraining")
    print(f"{'mean bits':>9} {'differ':>7} {'pred k':>8} {'pred g':>8} {'loss k':>8} {'loss g':>8} "
          f"{'err k %':>8} {'err g %':>8} {'loss g/k':>8}")  # fmt: skip
    for mean, r in means.iterrows():
        print(
            f"{mean:>9g} {differ[mean]:>7.0%} {r[('predicted', 'knapsack')]:>8.4f} {r[('predicted', 'greedy')]:>8.4f} "
            f"{r[('val_loss', 'knapsack')]:>8.4f} {r[('val_loss', 'greedy')]:>8.4f} "
            f"{100 * r[('val_error', 'knapsack')]:>8.2f} {100 * r[('val_error', 'greedy')]:>8.2f} "
            f"{r[('val_loss', 'greedy')] / r[('val_loss', 'knapsack')]:>8.3f}"
        )


if __name__ == "__main__":
    main()
