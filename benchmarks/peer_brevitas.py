"""qdesign's retraining methods against Brevitas's weight quantizers, on real MNIST.

Every contender retrains the same float network (3 hidden layers, trained once
per width and seed) with the same protocol (Adam, cosine schedule, batch 128,
best validation epoch with the start counted as epoch 0: qdesign's ``fit``)
and the same data order (``fit``'s seeded permutation); contenders are
interleaved in one process on 1 torch thread. Brevitas contenders are
``brevitas.nn.QuantLinear(weight_bit_width=b)`` with the default weight
quantizer (Int8WeightPerTensorFloat: max-abs statistics scale, narrow range)
and with ``Int8WeightPerTensorFloatMSE`` (MSE-initialised, then learned scale);
activations and biases stay float for everyone.

    python benchmarks/peer_brevitas.py [--quick] [--seeds 12] [--first-seed 0] [--data-dir ../shared/data]

``--rates R...`` and ``--variants NAME...`` add learned-step variants (the
screening in docs/methods.md). Timing: ``seconds_per_epoch`` of the single
runs (``fit``'s wall time: training epoch plus validation, the same for every
contender) follows the machine's load; the interleaved ms/step comparison at
the end (``timing``) is the robust speed measure.

Prints a table and writes ``benchmarks/out/peer_brevitas.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from qdesign.nn.data import make_splits, prepare_dataset
from qdesign.nn.methods import METHODS
from qdesign.nn.models import build_model
from qdesign.nn.train import evaluate, fit
from qdesign.quantize import integer_codes, to_learned, to_quantized, update_steps
from qdesign.quantize.lsq import DEFAULT_RATE

REPO = Path(__file__).resolve().parents[1]
FC = {"type": "fcdnn", "depth": 3, "dropout": 0.0}
FLOAT_CFG = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "batch_size": 128}
RETRAIN_CFG = {"optimizer": "adam", "lr": 5e-4, "weight_decay": 0.0, "schedule": "cosine", "batch_size": 128}


def silent(_msg: str) -> None:
    pass


# ---------------------------------------------------------------- contenders


def qdesign_contender(method: str, rate: float | None = None, clip_grad: bool = True, reinit: bool = False):
    """A registry method; for the learned-step variants of the screening,
    ``rate``/``clip_grad`` re-set its options and ``reinit`` restarts the steps
    at the L2-optimal steps of the shadow weights before epoch 2."""

    def build(fmodel, bits):
        m = METHODS[method]
        qmodel = m.prepare(to_quantized(fmodel, bits))
        if rate is not None or not clip_grad:
            to_learned(qmodel, DEFAULT_RATE if rate is None else rate, clip_grad=clip_grad)
        hook = m.hook(qmodel)
        if reinit:
            assert hook is None

            def hook(epoch):
                if epoch == 2:
                    update_steps(qmodel)

        return qmodel, hook

    return build


def qdesign_levels(qmodel) -> int:
    return max(int(torch.unique(qt.codes).numel()) for qt in integer_codes(qmodel).values())


def brevitas_contender(mse: bool):
    def build(fmodel, bits):
        import brevitas.nn as qnn
        from brevitas.quant import Int8WeightPerTensorFloat, Int8WeightPerTensorFloatMSE

        quant = Int8WeightPerTensorFloatMSE if mse else Int8WeightPerTensorFloat
        layers: list[nn.Module] = []
        for mod in fmodel:
            if isinstance(mod, nn.Linear):
                q = qnn.QuantLinear(
                    mod.in_features, mod.out_features, bias=True, weight_quant=quant, weight_bit_width=bits
                )
                with torch.no_grad():
                    q.weight.copy_(mod.weight)
                    q.bias.copy_(mod.bias)
                layers.append(q)
            else:
                layers.append(type(mod)())
        return nn.Sequential(*layers), None

    return build


@torch.no_grad()
def brevitas_levels(model) -> int:
    out = 0
    for mod in model.modules():
        if hasattr(mod, "quant_weight") and isinstance(mod, nn.Linear):
            qw = mod.quant_weight()
            out = max(out, int(torch.unique(torch.round(qw.value / qw.scale)).numel()))
    return out


CONTENDERS = {
    "qdesign fixed": (qdesign_contender("fixed"), qdesign_levels, "qdesign"),
    "qdesign epoch": (qdesign_contender("epoch"), qdesign_levels, "qdesign"),
    "qdesign learned": (qdesign_contender("learned"), qdesign_levels, "qdesign"),
    "brevitas default": (brevitas_contender(False), brevitas_levels, "brevitas"),
    "brevitas MSE learned": (brevitas_contender(True), brevitas_levels, "brevitas"),
}


def extra_rates(rates):
    return {f"qdesign learned rate={r:g}": (qdesign_contender("learned", r), qdesign_levels, "qdesign") for r in rates}


VARIANTS = {
    "learned identity": dict(clip_grad=False),
    "learned reinit": dict(reinit=True),
    "learned identity reinit": dict(clip_grad=False, reinit=True),
    "learned identity rate=20": dict(clip_grad=False, rate=20.0),
    "learned identity rate=30": dict(clip_grad=False, rate=30.0),
    "learned rate=20": dict(rate=20.0),
}
"""Learned-step variants for ``--variants`` (screening; see docs/methods.md)."""


def extra_variants(names):
    return {f"qdesign {n}": (qdesign_contender("learned", **VARIANTS[n]), qdesign_levels, "qdesign") for n in names}


# ---------------------------------------------------------------- run


def run(args) -> dict:
    torch.set_num_threads(1)
    payload = prepare_dataset("mnist", args.data_dir, download=False)
    data = make_splits(payload, 0.1, 0, args.train_subset or None)
    contenders = dict(CONTENDERS)
    contenders.update(extra_rates(args.rates))
    contenders.update(extra_variants(args.variants))
    extra = set(contenders) - set(CONTENDERS)
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only or k in extra}
    rows = []
    for width in args.widths:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            torch.manual_seed(seed)
            fmodel = build_model(FC, width, data.input_shape, data.n_classes)
            fres = fit(fmodel, data, {**FLOAT_CFG, "epochs": args.float_epochs}, seed=seed, log=silent)
            fmodel.load_state_dict(fres.best_state)
            float_err = evaluate(fmodel, data.x_test, data.y_test)
            for bits in args.bits:
                for name, (build, levels, family) in contenders.items():
                    model, hook = build(fmodel, bits)
                    direct = evaluate(model, data.x_test, data.y_test)
                    torch.manual_seed(seed)
                    res = fit(
                        model,
                        data,
                        {**RETRAIN_CFG, "epochs": args.epochs},
                        seed=seed,
                        log=silent,
                        epoch_start=hook,
                        keep_start=True,
                    )
                    model.load_state_dict(res.best_state)
                    row = dict(
                        width=width,
                        bits=bits,
                        seed=seed,
                        contender=name,
                        family=family,
                        float_error=float_err,
                        direct_error=direct,
                        retrained_error=evaluate(model, data.x_test, data.y_test),
                        best_epoch=res.best_epoch,
                        levels=levels(model),
                        seconds_per_epoch=res.seconds / max(1, res.epochs_run),
                    )
                    rows.append(row)
                    print(
                        f"  w{width} b{bits} s{seed} {name:<28} direct {100 * direct:6.2f}% "
                        f"retrained {100 * row['retrained_error']:6.2f}% levels {row['levels']} "
                        f"{row['seconds_per_epoch']:.2f}s/epoch",
                        flush=True,
                    )
    return {"rows": rows, "summary": summarise(rows), "setup": setup(args, data)}


def timing(args, data) -> list[dict]:
    """Milliseconds per retraining step (forward, backward, Adam update on one
    batch of 128), contenders interleaved A, B, C, A, B, C... and the median of
    ``repeats`` bursts: robust to the load of a shared machine, unlike the
    per-epoch times of single runs."""
    from torch.nn import functional as F

    out = []
    x, y = data.x_train[:128], data.y_train[:128]
    for width in args.widths:
        torch.manual_seed(0)
        fmodel = build_model(FC, width, data.input_shape, data.n_classes)
        for bits in args.bits:
            fns = {}
            for name, (build, _levels, _family) in CONTENDERS.items():
                model, _hook = build(fmodel, bits)
                model.train()
                opt = torch.optim.Adam(model.parameters(), lr=5e-4, foreach=True)

                def burst(model=model, opt=opt, n=args.timing_steps):
                    for _ in range(n):
                        loss = F.cross_entropy(model(x), y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()

                fns[name] = burst
                burst()  # warm-up (Brevitas initialises its MSE scale on the first call)
            times = {k: [] for k in fns}
            for _ in range(args.timing_repeats):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(1e3 * (time.perf_counter() - t0) / args.timing_steps)
            ms = {k: statistics.median(v) for k, v in times.items()}
            fastest_b = min(v for k, v in ms.items() if CONTENDERS[k][2] == "brevitas")
            for k, v in ms.items():
                out.append(dict(width=width, bits=bits, contender=k, ms_per_step=v, vs_fastest_brevitas=v / fastest_b))
                print(
                    f"  timing w{width} b{bits} {k:<24} {v:7.2f} ms/step  x{v / fastest_b:.2f} of the fastest Brevitas",
                    flush=True,
                )
    return out


def summarise(rows) -> list[dict]:
    out = []
    cells = sorted({(r["width"], r["bits"]) for r in rows})
    for width, bits in cells:
        by = {}
        for r in rows:
            if (r["width"], r["bits"]) == (width, bits):
                by.setdefault(r["contender"], []).append(r)
        stats = {}
        for name, rs in by.items():
            errs = [100 * r["retrained_error"] for r in rs]
            stats[name] = dict(
                contender=name,
                family=rs[0]["family"],
                width=width,
                bits=bits,
                n_seeds=len(rs),
                direct_error=statistics.mean(100 * r["direct_error"] for r in rs),
                retrained_error=statistics.mean(errs),
                retrained_spread=(max(errs) - min(errs)) / 2,
                retrained_std=statistics.stdev(errs) if len(errs) > 1 else 0.0,
                levels=max(r["levels"] for r in rs),
                seconds_per_epoch=statistics.median(r["seconds_per_epoch"] for r in rs),
            )
        best_b = min(
            (s for s in stats.values() if s["family"] == "brevitas"), key=lambda s: s["retrained_error"], default=None
        )
        for s in stats.values():
            if best_b is not None:
                s["minus_best_brevitas"] = s["retrained_error"] - best_b["retrained_error"]
                s["time_vs_best_brevitas"] = s["seconds_per_epoch"] / best_b["seconds_per_epoch"]
                # the same difference seed by seed (same float network and data order):
                # its standard error says how far 'minus_best_brevitas' can be trusted
                theirs = {r["seed"]: r["retrained_error"] for r in by[best_b["contender"]]}
                paired = [100 * (r["retrained_error"] - theirs[r["seed"]]) for r in by[s["contender"]]]
                s["gap_se"] = statistics.stdev(paired) / len(paired) ** 0.5 if len(paired) > 1 else float("nan")
            out.append(s)
    return out


def setup(args, data) -> dict:
    import brevitas

    return dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=platform.machine(),
        cpu_count=__import__("os").cpu_count(),
        torch=torch.__version__,
        brevitas=brevitas.__version__,
        threads=1,
        widths=args.widths,
        bits=args.bits,
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        float_epochs=args.float_epochs,
        retrain_epochs=args.epochs,
        float_cfg=FLOAT_CFG,
        retrain_cfg=RETRAIN_CFG,
        n_train=int(data.x_train.shape[0]),
        n_val=int(data.x_val.shape[0]),
        n_test=int(data.x_test.shape[0]),
    )


def print_table(summary) -> None:
    print(
        f"\n{'width':>5} {'bits':>4} {'contender':<28} {'direct %':>9} {'retrained %':>16} {'levels':>6} "
        f"{'s/epoch':>8} {'- best Brevitas ± SE':>21} {'time ratio':>10}"
    )
    for s in summary:
        print(
            f"{s['width']:>5} {s['bits']:>4} {s['contender']:<28} {s['direct_error']:>9.2f} "
            f"{s['retrained_error']:>9.2f} ± {s['retrained_spread']:<4.2f} {s['levels']:>6} "
            f"{s['seconds_per_epoch']:>8.2f} {s.get('minus_best_brevitas', float('nan')):>+14.2f} ± "
            f"{s.get('gap_se', float('nan')):<4.2f} {s.get('time_vs_best_brevitas', float('nan')):>10.2f}"
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("QDESIGN_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--quick", action="store_true", help="smoke run: width 64, 1 seed, 1+1 epochs, 6000 examples")
    p.add_argument(
        "--seeds",
        type=int,
        default=12,
        help="seeds per cell (default 12: the seed-to-seed spread of 0.2-0.5 points needs that many "
        "for a standard error of the learned-minus-Brevitas gap near 0.05)",
    )
    p.add_argument("--first-seed", type=int, default=0, help="seeds first_seed .. first_seed + seeds - 1")
    p.add_argument("--widths", type=int, nargs="+", default=[64, 256])
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    p.add_argument("--float-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="retraining epochs")
    p.add_argument("--train-subset", type=int, default=20000, help="training examples (0: all 54000)")
    p.add_argument("--only", nargs="*", help="contender names to run (default: all)")
    p.add_argument("--rates", type=float, nargs="*", default=[], help="extra learned-step rates to try")
    p.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS), help="extra learned-step variants")
    p.add_argument("--timing-only", action="store_true", help="only the interleaved ms/step comparison")
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--timing-repeats", type=int, default=7)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "peer_brevitas.json"))
    args = p.parse_args(argv)
    # nothing to measure must not look like a measurement: refuse it before any training
    if args.seeds < 1 or args.epochs < 1 or args.float_epochs < 1:
        p.error("--seeds, --epochs and --float-epochs must be at least 1")
    if not args.widths or not args.bits:
        p.error("--widths and --bits need at least one value")
    known = set(CONTENDERS) | set(VARIANTS)
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        p.error(f"unknown contender(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(CONTENDERS))}")
    if args.quick:
        args.seeds, args.widths, args.float_epochs, args.epochs, args.train_subset = 1, [64], 1, 1, 6000
        args.timing_steps, args.timing_repeats = 5, 3
    t0 = time.perf_counter()
    if args.timing_only:
        torch.set_num_threads(1)
        data = make_splits(prepare_dataset("mnist", args.data_dir, download=False), 0.1, 0, 1000)
        result = {"timing": timing(args, data), "setup": setup(args, data)}
        out = Path(args.out).with_name(Path(args.out).stem + "_timing.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
        return
    result = run(args)
    result["timing"] = timing(args, make_splits(prepare_dataset("mnist", args.data_dir, download=False), 0.1, 0, 1000))
    result["setup"]["wall_seconds"] = time.perf_counter() - t0
    print_table(result["summary"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out} ({result['setup']['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
