"""Screen retraining settings on validation data (never test data, never the
peer benchmark's cells): the learned steps' optimizer settings and the
distillation loss, over a grid of widths and word lengths.

Protocol: MNIST FCDNN (3 hidden layers), the peer benchmark's training recipe
(float: Adam 1e-3 cosine, 3 epochs; retraining: Adam 5e-4 cosine, 2 epochs,
batch 128, best validation epoch with the start as epoch 0), but other widths
(48..768 by default; the benchmark has 32..512 in powers of 2), other float
networks (seeds 100..), another train/validation split (``--split-seed 1``;
the benchmark's is 0) and a score that no selection saw: the error on
``--screen-size`` examples of the training pool that neither training nor
validation uses (the pool has 54000 examples; training takes 20000). The test
set is never read.

    python benchmarks/screen_retraining.py [--quick] [--variants NAME ...] [--rows out.jsonl]

Every finished run is appended to ``--rows`` (JSON lines), and a rerun skips
the runs already there, so an interrupted screen resumes. Prints, per variant,
the mean screen error and its paired difference to ``--baseline`` (mean over
cells, standard error over the cells' seeds, worst cell).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from qdesign.core.config import retraining_defaults
from qdesign.core.registry import DISTILL_KEYS, STEP_KEYS
from qdesign.nn.data import Splits, make_splits, prepare_dataset
from qdesign.nn.methods import get_method
from qdesign.nn.models import build_model
from qdesign.nn.train import evaluate, fit
from qdesign.quantize import integer_codes, quantized_layers, to_quantized

REPO = Path(__file__).resolve().parents[1]
FC = {"type": "fcdnn", "depth": 3, "dropout": 0.0}
FLOAT_CFG = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "batch_size": 128}
RETRAIN_CFG = {"optimizer": "adam", "lr": 5e-4, "weight_decay": 0.0, "schedule": "cosine", "batch_size": 128}
NEUTRAL_STEP = {"step_lr_factor": 1.0, "step_weight_decay": 0.0, "step_warmup_epochs": 0.0}
"""The learned steps in the weights' optimizer settings: ``learned`` before its own parameter group."""


def variant(method: str, **settings) -> tuple[str, dict]:
    return method, settings


VARIANTS: dict[str, tuple[str, dict]] = {
    "fixed": variant("fixed"),
    "learned": variant("learned", **NEUTRAL_STEP),
    "learned lr x0.25": variant("learned", **{**NEUTRAL_STEP, "step_lr_factor": 0.25}),
    "learned lr x0.5": variant("learned", **{**NEUTRAL_STEP, "step_lr_factor": 0.5}),
    "learned lr x2": variant("learned", **{**NEUTRAL_STEP, "step_lr_factor": 2.0}),
    "learned warm-up 0.5": variant("learned", **{**NEUTRAL_STEP, "step_warmup_epochs": 0.5}),
    "learned warm-up 1": variant("learned", **{**NEUTRAL_STEP, "step_warmup_epochs": 1.0}),
    "learned wd 0.1": variant("learned", **{**NEUTRAL_STEP, "step_weight_decay": 0.1}),
    "learned wd 1": variant("learned", **{**NEUTRAL_STEP, "step_weight_decay": 1.0}),
    **{
        f"distill T{t:g} a{a:g}": variant("distill", **NEUTRAL_STEP, distill_temperature=t, distill_weight=a)
        for t in (1.0, 2.0, 4.0)
        for a in (0.5, 0.9)
    },
    **{
        f"distill T{t:g} a{a:g}": variant("distill", **NEUTRAL_STEP, distill_temperature=t, distill_weight=a)
        for t in (1.0, 2.0)
        for a in (0.1, 0.25)
    },
    **{
        f"distill-fixed T{t:g} a{a:g}": variant("distill-fixed", distill_temperature=t, distill_weight=a)
        for t in (1.0, 2.0, 4.0)
        for a in (0.25, 0.5, 0.9)
    },
}
"""Named settings; a variant's settings override the retraining defaults of the
config schema for its method's own keys (:data:`qdesign.core.registry.METHOD_KEYS`)."""

PHASE1 = [
    "fixed",
    "learned",
    "learned lr x0.25",
    "learned lr x0.5",
    "learned lr x2",
    "learned warm-up 0.5",
    "learned warm-up 1",
    "learned wd 0.1",
    "learned wd 1",
    "distill T1 a0.5",
    "distill T2 a0.5",
    "distill T4 a0.5",
    "distill T1 a0.9",
    "distill T2 a0.9",
    "distill T4 a0.9",
    "distill-fixed T2 a0.5",
    "distill-fixed T4 a0.9",
]
PHASE2 = [
    "learned",
    "distill T1 a0.1",
    "distill T1 a0.25",
    "distill T2 a0.1",
    "distill T2 a0.25",
    "distill-fixed T1 a0.25",
    "distill-fixed T1 a0.5",
]
"""Second round (after PHASE1 showed that the distillation term helps only at T = 1 and weights <= 0.5)."""


def silent(_msg: str) -> None:
    pass


def retrain_cfg(method: str, settings: dict, epochs: int) -> dict:
    """The retraining settings of one run: the benchmark recipe, the schema's
    defaults for this method's own keys, then the variant's settings."""
    defaults = retraining_defaults()
    own = {k: defaults[k] for k in STEP_KEYS + DISTILL_KEYS if k in _method_keys(method)}
    return {**RETRAIN_CFG, "epochs": epochs, **own, **settings}


def _method_keys(method: str) -> tuple[str, ...]:
    from qdesign.core.registry import METHOD_KEYS  # noqa: PLC0415

    return METHOD_KEYS[method]


def screen_splits(args) -> Splits:
    """Training, validation, and the held-out screen set in the place of the
    test set: the screen examples follow the training examples in the split's
    permutation (``make_splits`` keeps a prefix), so they are disjoint from both."""
    payload = prepare_dataset("mnist", args.data_dir, download=False)
    d = make_splits(payload, 0.1, args.split_seed, args.train_subset + args.screen_size)
    n = args.train_subset
    return Splits(d.x_train[:n], d.y_train[:n], d.x_val, d.y_val, d.x_train[n:], d.y_train[n:], d.n_classes)


def diagnostics(qmodel) -> dict:
    """How far each learned step moved, and the share of zero codes per layer."""
    codes = integer_codes(qmodel)
    out = {"zero_share": [float((qt.codes == 0).float().mean()) for qt in codes.values()]}
    moved = [float(layer.step / layer.step0) for _, layer in quantized_layers(qmodel) if hasattr(layer, "step0")]
    if moved:
        out["step_ratio"] = moved
    return out


def run(args) -> list[dict]:
    torch.set_num_threads(1)
    data = screen_splits(args)
    rows_path = Path(args.rows)
    done = set()
    rows = []
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            r = json.loads(line)
            rows.append(r)
            done.add((r["width"], r["seed"], r["bits"], r["variant"]))
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    for width in args.widths:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            todo = [(b, v) for b in args.bits for v in args.variants if (width, seed, b, v) not in done]
            if not todo:
                continue
            torch.manual_seed(seed)
            fmodel = build_model(FC, width, data.input_shape, data.n_classes)
            fres = fit(fmodel, data, {**FLOAT_CFG, "epochs": args.float_epochs}, seed=seed, log=silent)
            fmodel.load_state_dict(fres.best_state)
            for bits, name in todo:
                method_name, settings = VARIANTS[name]
                method = get_method(method_name)
                cfg = retrain_cfg(method_name, settings, args.epochs)
                t0 = time.perf_counter()
                loss = method.loss(fmodel, data, cfg)
                teacher_seconds = time.perf_counter() - t0
                qmodel = method.prepare(to_quantized(fmodel, bits))
                torch.manual_seed(seed)
                res = fit(
                    qmodel,
                    data,
                    cfg,
                    seed=seed,
                    log=silent,
                    epoch_start=method.hook(qmodel),
                    keep_start=True,
                    loss=loss,
                )
                qmodel.load_state_dict(res.best_state)
                row = dict(
                    width=width,
                    bits=bits,
                    seed=seed,
                    variant=name,
                    method=method_name,
                    settings=settings,
                    val_error=res.best_val_error,
                    screen_error=evaluate(qmodel, data.x_test, data.y_test),
                    best_epoch=res.best_epoch,
                    seconds_per_epoch=res.seconds / max(1, res.epochs_run),
                    teacher_seconds=teacher_seconds,
                    **diagnostics(qmodel),
                )
                rows.append(row)
                with rows_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"  w{width} b{bits} s{seed} {name:<24} val {100 * row['val_error']:5.2f}% "
                    f"screen {100 * row['screen_error']:5.2f}% epoch {res.best_epoch} "
                    f"{row['seconds_per_epoch']:.2f}s/epoch",
                    flush=True,
                )
    return rows


def summarise(rows, baseline: str, variants=None) -> list[dict]:
    """Per variant over the cells it shares with ``baseline``: mean screen
    error, and the difference to the baseline (paired per width, bits and
    seed): its mean, standard error and worst (width, bits) cell mean."""
    by = {(r["width"], r["bits"], r["seed"], r["variant"]): r for r in rows}
    names = variants or sorted({r["variant"] for r in rows})
    out = []
    for name in names:
        pairs = [
            (k[:3], 100 * r["screen_error"], 100 * by[k[:3] + (baseline,)]["screen_error"])
            for k, r in by.items()
            if k[3] == name and k[:3] + (baseline,) in by
        ]
        if not pairs:
            continue
        diffs = [a - b for _, a, b in pairs]
        cells = {}
        for (w, b, _s), a, c in pairs:
            cells.setdefault((w, b), []).append(a - c)
        cell_means = {k: statistics.mean(v) for k, v in cells.items()}
        worst = max(cell_means, key=cell_means.get)
        out.append(
            dict(
                variant=name,
                runs=len(pairs),
                screen_error=statistics.mean(a for _, a, _ in pairs),
                minus_baseline=statistics.mean(diffs),
                se=statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan"),
                worst_cell=f"{worst[0]}/{worst[1]}",
                worst=cell_means[worst],
                by_bits={
                    b: statistics.mean(d for (w, bb), v in cells.items() if bb == b for d in v)
                    for b in sorted({k[1] for k in cells})
                },
            )
        )
    return out


def print_summary(summary, baseline: str) -> None:
    bits = sorted({b for s in summary for b in s["by_bits"]})
    head = " ".join(f"{f'{b}-bit':>7}" for b in bits)
    print(f"\n{'variant':<26} {'runs':>4} {'screen %':>8} {'- ' + baseline:>16} {'± SE':>5} {head} {'worst cell':>16}")
    for s in summary:
        per = " ".join(f"{s['by_bits'].get(b, float('nan')):>+7.3f}" for b in bits)
        print(
            f"{s['variant']:<26} {s['runs']:>4} {s['screen_error']:>8.3f} {s['minus_baseline']:>+16.3f} "
            f"{s['se']:>5.3f} {per} {s['worst_cell']:>9} {s['worst']:>+6.3f}"
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("QDESIGN_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--quick", action="store_true", help="smoke run: width 48, 2 bits, 1 seed, 1+1 epochs")
    p.add_argument("--widths", type=int, nargs="+", default=[48, 96, 192, 384, 768])
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--split-seed", type=int, default=1)
    p.add_argument("--train-subset", type=int, default=20000)
    p.add_argument("--screen-size", type=int, default=10000)
    p.add_argument("--float-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=PHASE1, choices=sorted(VARIANTS))
    p.add_argument("--baseline", default="learned", choices=sorted(VARIANTS))
    p.add_argument("--rows", default=str(REPO / "benchmarks" / "out" / "screen_retraining.jsonl"))
    p.add_argument("--summary-only", action="store_true", help="summarise the rows file, run nothing")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1 or args.float_epochs < 1:
        p.error("--seeds, --epochs and --float-epochs must be at least 1")
    if args.quick:
        args.widths, args.bits, args.seeds, args.float_epochs, args.epochs = [48], [2], 1, 1, 1
        args.train_subset, args.screen_size = 4000, 2000
        args.rows = str(Path(args.rows).with_name("screen_retraining_quick.jsonl"))
    if args.baseline not in args.variants:
        args.variants = [args.baseline, *args.variants]
    if args.summary_only:
        rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines()]
    else:
        rows = run(args)
    print_summary(summarise(rows, args.baseline, args.variants), args.baseline)


if __name__ == "__main__":
    main()
