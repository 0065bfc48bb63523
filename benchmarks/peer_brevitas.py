"""qdesign's retraining methods against Brevitas's weight quantizers, on real MNIST.

Grid: FCDNNs with 3 hidden layers of 32, 64, 128, 256 and 512 units, at 2, 3
and 4 bits, 6 seeds. Each seed is its own float network (its own
initialisation, trained with its own data order: ``torch.manual_seed(seed)``
then ``fit(seed=seed)``), so the seed-to-seed spread includes the float
network's. Every contender retrains the same float network with the same
protocol (Adam 5e-4, cosine schedule, batch 128, 2 epochs, best validation
epoch with the start counted as epoch 0: qdesign's ``fit``) and the same data
order; contenders are interleaved in one process on 1 torch thread.

Contenders: qdesign's methods (``fixed``, ``epoch``, ``learned``, ``distill``,
``distill-fixed``, with the retraining defaults of the config schema);
Brevitas as its users run it, ``brevitas.nn.QuantLinear(weight_bit_width=b)``
with the default weight quantizer (Int8WeightPerTensorFloat: max-abs
statistics scale, narrow range) and with ``Int8WeightPerTensorFloatMSE``
(MSE-initialised, then learned scale); and, as a fairness row, Brevitas MSE
trained with qdesign's distillation loss (same teacher, temperature and
weight), which says what comes from the loss and what from the quantizer.
Activations and biases stay float for everyone.

Per cell, the best qdesign method and the best Brevitas contender (users' way:
default or MSE) are each chosen on the mean validation error (never on test
error) and compared on test error; the difference is taken seed by seed (same
float network, same data order) and its standard error printed. Target (issue
27): qdesign's best <= Brevitas's best + 0.05 points at 3-4 bits, <= at 2 bits.

    python benchmarks/peer_brevitas.py [--quick] [--seeds 6] [--widths ...] [--bits ...] [--data-dir DIR]
    python benchmarks/peer_brevitas.py --timing-only    # only the interleaved ms/step comparison
    python benchmarks/peer_brevitas.py --merge a.json b.json   # pool runs (e.g. one per width) into one table

Timing: ``seconds_per_epoch`` of the single runs follows the machine's load;
the interleaved ms/step comparison (``timing``: forward, loss, backward and
optimizer step of each contender on the same batch, alternated, median of
bursts) is the robust speed measure: each qdesign method against Brevitas MSE
(target <= 0.6).

Prints the tables and writes ``benchmarks/out/peer_brevitas.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from qdesign.core.config import retraining_defaults
from qdesign.core.registry import METHOD_KEYS
from qdesign.nn.data import make_splits, prepare_dataset
from qdesign.nn.methods import METHODS
from qdesign.nn.models import build_model
from qdesign.nn.train import evaluate, fit, make_optimizer, training_optimizer
from qdesign.quantize import integer_codes, to_learned, to_quantized, update_steps
from qdesign.quantize.lsq import DEFAULT_RATE

REPO = Path(__file__).resolve().parents[1]
FC = {"type": "fcdnn", "depth": 3, "dropout": 0.0}
FLOAT_CFG = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine", "batch_size": 128}
RETRAIN_CFG = {"optimizer": "adam", "lr": 5e-4, "weight_decay": 0.0, "schedule": "cosine", "batch_size": 128}
QDESIGN_METHODS = ("fixed", "epoch", "learned", "distill", "distill-fixed")
USERS_BREVITAS = ("brevitas default", "brevitas MSE learned")
FAIRNESS = "brevitas MSE learned + distill"
TARGET = {2: 0.0}  # allowed qdesign best - Brevitas best (points), by bits; others: DEFAULT_TARGET
DEFAULT_TARGET = 0.05
TIME_TARGET = 0.6


def silent(_msg: str) -> None:
    pass


def method_cfg(method: str, epochs: int) -> dict:
    """The benchmark's retraining recipe plus the config schema's defaults of
    the method's own keys (learned steps, distillation): what a study's cell
    of that method gets with those defaults."""
    defaults = retraining_defaults()
    return {**RETRAIN_CFG, "epochs": epochs, **{k: defaults[k] for k in METHOD_KEYS[method]}}


# ---------------------------------------------------------------- contenders


class Contender:
    """``build(fmodel, bits) -> (model, epoch hook)``; ``method``: the qdesign
    method whose retraining settings (and loss) it uses; ``family``: qdesign,
    brevitas (users' way) or fairness."""

    def __init__(self, build, levels, family: str, method: str):
        self.build, self.levels, self.family, self.method = build, levels, family, method

    def cfg(self, epochs: int) -> dict:
        return method_cfg(self.method, epochs)

    def loss(self, fmodel, data, epochs: int):
        return METHODS[self.method].loss(fmodel, data, self.cfg(epochs))


def qdesign_build(method: str, rate: float | None = None, clip_grad: bool = True, reinit: bool = False):
    """A registry method; for the learned-step variants of the 2026-12-02
    screening, ``rate``/``clip_grad`` re-set its options and ``reinit``
    restarts the steps at the L2-optimal steps of the shadow weights before epoch 2."""

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


def brevitas_build(mse: bool):
    def build(fmodel, bits):
        import brevitas.nn as qnn  # noqa: PLC0415
        from brevitas.quant import Int8WeightPerTensorFloat, Int8WeightPerTensorFloatMSE  # noqa: PLC0415

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


CONTENDERS: dict[str, Contender] = {
    **{f"qdesign {m}": Contender(qdesign_build(m), qdesign_levels, "qdesign", m) for m in QDESIGN_METHODS},
    "brevitas default": Contender(brevitas_build(False), brevitas_levels, "brevitas", "fixed"),
    "brevitas MSE learned": Contender(brevitas_build(True), brevitas_levels, "brevitas", "fixed"),
    FAIRNESS: Contender(brevitas_build(True), brevitas_levels, "fairness", "distill-fixed"),
}
"""Brevitas contenders take qdesign's retraining recipe; only the fairness row
takes a method's loss (distillation, with the defaults of the config schema)."""
FUSED_SUFFIX = ", fused Adam"
FUSED_PEER = "brevitas MSE learned" + FUSED_SUFFIX
"""Timing only: Brevitas MSE with the fused Adam kernel that ``fit`` gives qdesign's
learned-step models (its users' ``torch.optim.Adam`` runs the per-tensor or foreach
kernels), so that the ratios show what comes from the optimizer kernel."""


def extra_rates(rates):
    return {
        f"qdesign learned rate={r:g}": Contender(qdesign_build("learned", r), qdesign_levels, "qdesign", "learned")
        for r in rates
    }


VARIANTS = {
    "learned identity": dict(clip_grad=False),
    "learned reinit": dict(reinit=True),
    "learned identity reinit": dict(clip_grad=False, reinit=True),
    "learned identity rate=20": dict(clip_grad=False, rate=20.0),
    "learned identity rate=30": dict(clip_grad=False, rate=30.0),
    "learned rate=20": dict(rate=20.0),
}
"""Learned-step variants for ``--variants`` (the 2026-12-02 screening; see docs/methods.md)."""


def extra_variants(names):
    return {
        f"qdesign {n}": Contender(qdesign_build("learned", **VARIANTS[n]), qdesign_levels, "qdesign", "learned")
        for n in names
    }


# ---------------------------------------------------------------- run


def run(args) -> dict:
    torch.set_num_threads(1)
    payload = prepare_dataset("mnist", args.data_dir, download=False)
    data = make_splits(payload, 0.1, 0, args.train_subset or None)
    contenders = {**CONTENDERS, **extra_rates(args.rates), **extra_variants(args.variants)}
    extra = set(contenders) - set(CONTENDERS)
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only or k in extra}
    rows = []
    for width in args.widths:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            torch.manual_seed(seed)  # this seed's own float network: its initialisation and data order
            fmodel = build_model(FC, width, data.input_shape, data.n_classes)
            fres = fit(fmodel, data, {**FLOAT_CFG, "epochs": args.float_epochs}, seed=seed, log=silent)
            fmodel.load_state_dict(fres.best_state)
            float_err = evaluate(fmodel, data.x_test, data.y_test)
            for bits in args.bits:
                for name, c in contenders.items():
                    model, hook = c.build(fmodel, bits)
                    direct = evaluate(model, data.x_test, data.y_test)
                    loss = c.loss(fmodel, data, args.epochs)
                    torch.manual_seed(seed)
                    res = fit(
                        model,
                        data,
                        c.cfg(args.epochs),
                        seed=seed,
                        log=silent,
                        epoch_start=hook,
                        keep_start=True,
                        loss=loss,
                    )
                    model.load_state_dict(res.best_state)
                    row = dict(
                        width=width,
                        bits=bits,
                        seed=seed,
                        contender=name,
                        family=c.family,
                        float_error=float_err,
                        direct_error=direct,
                        val_error=res.best_val_error,
                        retrained_error=evaluate(model, data.x_test, data.y_test),
                        best_epoch=res.best_epoch,
                        levels=c.levels(model),
                        seconds_per_epoch=res.seconds / max(1, res.epochs_run),
                    )
                    rows.append(row)
                    print(
                        f"  w{width} b{bits} s{seed} {name:<32} direct {100 * direct:6.2f}% "
                        f"val {100 * row['val_error']:5.2f}% test {100 * row['retrained_error']:6.2f}% "
                        f"levels {row['levels']} {row['seconds_per_epoch']:.2f}s/epoch",
                        flush=True,
                    )
            # what is finished so far, in case the run is interrupted (a final run overwrites it)
            write({"rows": rows, "setup": setup(args, data), "partial": True}, Path(args.out))
    return {"rows": rows, "setup": setup(args, data)}


def timing(args, data) -> list[dict]:
    """Milliseconds per retraining step (forward, loss, backward and optimizer
    update on a batch of 128, with each contender's optimizer groups and
    loss; a burst steps through ``steps`` different batches of a seeded
    shuffle, as training does, the same ones for every contender: one batch
    repeated leaves the gradients of the weights of its always-zero pixels
    exactly zero, whose Adam second moments hit a slow path of the vectorised
    sqrt), contenders interleaved A, B, C, A, B, C... and the median of
    ``repeats`` bursts: robust to the load of a shared machine, unlike the
    per-epoch times of single runs. Ratios are to Brevitas MSE's step in the
    same round, median over the rounds."""
    from torch.nn import functional as F  # noqa: PLC0415

    out = []
    order = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(0))
    batches = [order[i * 128 : (i + 1) * 128] for i in range(args.timing_steps)]
    batches = [(data.x_train[i], data.y_train[i], i) for i in batches]
    names = [n for n in CONTENDERS if n != FAIRNESS] + [FUSED_PEER]
    for width in args.widths:
        torch.manual_seed(0)
        fmodel = build_model(FC, width, data.input_shape, data.n_classes)
        for bits in args.bits:
            fns = {}
            for name in names:
                c = CONTENDERS[name.removesuffix(FUSED_SUFFIX)]
                model, _hook = c.build(fmodel, bits)
                model.train()
                cfg = c.cfg(1)
                # the optimizer fit gives this model; the extra peer row: Brevitas with the fused Adam too
                opt = (
                    make_optimizer(model.parameters(), cfg, fused=True)
                    if name == FUSED_PEER
                    else training_optimizer(model, cfg)
                )
                loss_fn = c.loss(fmodel, data, 1) or (lambda out, yb, _i: F.cross_entropy(out, yb))

                def burst(model=model, opt=opt, loss_fn=loss_fn):
                    for x, y, idx in batches:
                        loss = loss_fn(model(x), y, idx)
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
            ref = times["brevitas MSE learned"]
            for k, v in ms.items():
                # the ratio within each round (its bursts ran seconds apart), then the median over
                # rounds: a load that changes between rounds cancels, unlike in a ratio of medians
                ratio = statistics.median(a / b for a, b in zip(times[k], ref))
                out.append(dict(width=width, bits=bits, contender=k, ms_per_step=v, vs_brevitas_mse=ratio))
                print(f"  timing w{width} b{bits} {k:<24} {v:7.2f} ms/step  x{ratio:.2f} of Brevitas MSE", flush=True)
    return out


# ---------------------------------------------------------------- tables


def _mean(xs) -> float:
    return statistics.mean(xs) if xs else float("nan")


def _paired(a: dict, b: dict) -> tuple[float, float]:
    """Mean and standard error of a - b over their common seeds (points)."""
    seeds = sorted(set(a) & set(b))
    d = [100 * (a[s] - b[s]) for s in seeds]
    if not d:
        return float("nan"), float("nan")
    return statistics.mean(d), (statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan"))


def summarise(rows) -> list[dict]:
    """One entry per (width, bits): every contender's means, the best qdesign
    method and the best Brevitas contender (users' way), each chosen on mean
    validation error, and their test-error difference with its paired SE;
    also against the fairness row. ``meets``: within the issue's target."""
    out = []
    for width, bits in sorted({(r["width"], r["bits"]) for r in rows}):
        by: dict[str, list[dict]] = {}
        for r in rows:
            if (r["width"], r["bits"]) == (width, bits):
                by.setdefault(r["contender"], []).append(r)
        stats = {
            name: dict(
                family=rs[0]["family"],
                n_seeds=len(rs),
                val_error=100 * _mean([r["val_error"] for r in rs]),
                test_error=100 * _mean([r["retrained_error"] for r in rs]),
                test_std=100 * statistics.stdev([r["retrained_error"] for r in rs]) if len(rs) > 1 else float("nan"),
                direct_error=100 * _mean([r["direct_error"] for r in rs]),
                levels=max(r["levels"] for r in rs),
                seconds_per_epoch=statistics.median(r["seconds_per_epoch"] for r in rs),
                test_by_seed={r["seed"]: r["retrained_error"] for r in rs},
            )
            for name, rs in by.items()
        }

        def best(family, stats=stats):
            names = [n for n, s in stats.items() if s["family"] == family]
            return min(names, key=lambda n: stats[n]["val_error"]) if names else None

        q, b, fair = best("qdesign"), best("brevitas"), FAIRNESS if FAIRNESS in stats else None
        cell = dict(width=width, bits=bits, contenders=stats, best_qdesign=q, best_brevitas=b)
        target = TARGET.get(bits, DEFAULT_TARGET)
        if q and b:
            d, se = _paired(stats[q]["test_by_seed"], stats[b]["test_by_seed"])
            cell.update(minus_brevitas=d, minus_brevitas_se=se, target=target, meets=d <= target + 1e-9)
        if q and fair:
            cell["minus_fairness"], cell["minus_fairness_se"] = _paired(
                stats[q]["test_by_seed"], stats[fair]["test_by_seed"]
            )
        out.append(cell)
    return out


def print_table(summary, names) -> None:
    short = {n: n.replace("qdesign ", "").replace("brevitas ", "B ").replace(" learned", "") for n in names}
    head = " ".join(f"{short[n]:>15}" for n in names)
    print("\ntest error %, mean over seeds (qdesign's best and Brevitas's best chosen on validation error)\n")
    print(
        f"{'width':>5} {'bits':>4} {head}   {'qdesign best':>15} {'Brevitas best':>15} "
        f"{'q - B ± SE':>14} {'target':>6} {'q - fair ± SE':>14}"
    )
    for c in summary:
        s = c["contenders"]
        vals = " ".join(f"{s[n]['test_error']:>15.2f}" if n in s else f"{'':>15}" for n in names)
        q, b = c.get("best_qdesign"), c.get("best_brevitas")
        gap = f"{c['minus_brevitas']:+.2f} ± {c['minus_brevitas_se']:.2f}" if "minus_brevitas" in c else ""
        fair = f"{c['minus_fairness']:+.2f} ± {c['minus_fairness_se']:.2f}" if "minus_fairness" in c else ""
        verdict = "" if "meets" not in c else ("ok" if c["meets"] else f"miss {c['minus_brevitas'] - c['target']:.2f}")
        print(
            f"{c['width']:>5} {c['bits']:>4} {vals}   {short.get(q, q) or '':>15} {short.get(b, b) or '':>15} "
            f"{gap:>14} {verdict:>6} {fair:>14}"
        )


def print_timing(timing_rows) -> None:
    if not timing_rows:
        return
    names = list(dict.fromkeys(r["contender"] for r in timing_rows))
    print(f"\nms per retraining step, interleaved (in brackets: / Brevitas MSE's; target <= {TIME_TARGET})\n")
    print(f"{'width':>5} {'bits':>4} " + " ".join(f"{n.replace('qdesign ', ''):>22}" for n in names))
    for width, bits in sorted({(r["width"], r["bits"]) for r in timing_rows}):
        rs = {r["contender"]: r for r in timing_rows if (r["width"], r["bits"]) == (width, bits)}
        cells = " ".join(
            f"{rs[n]['ms_per_step']:>13.2f} ({rs[n]['vs_brevitas_mse']:.2f})" if n in rs else f"{'':>22}" for n in names
        )
        print(f"{width:>5} {bits:>4} {cells}")


def setup(args, data) -> dict:
    import brevitas  # noqa: PLC0415

    return dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=platform.machine(),
        processor=platform.processor(),
        cpu_count=os.cpu_count(),
        load_average=os.getloadavg(),
        torch=torch.__version__,
        brevitas=brevitas.__version__,
        threads=1,
        widths=args.widths,
        bits=args.bits,
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        float_epochs=args.float_epochs,
        retrain_epochs=args.epochs,
        float_cfg=FLOAT_CFG,
        retrain_cfg={m: method_cfg(m, args.epochs) for m in QDESIGN_METHODS},
        n_train=int(data.x_train.shape[0]),
        n_val=int(data.x_val.shape[0]),
        n_test=int(data.x_test.shape[0]),
    )


def timing_data(args):
    """The splits of the accuracy runs (``--train-subset`` training images), from
    which the timing's bursts draw their batches."""
    n = args.train_subset or None
    if n is not None and args.timing_steps * 128 > n:
        raise SystemExit(f"--timing-steps {args.timing_steps} needs {args.timing_steps * 128} training images, got {n}")
    return make_splits(prepare_dataset("mnist", args.data_dir, download=False), 0.1, 0, n)


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)


def report(result: dict) -> None:
    names = list(dict.fromkeys(r["contender"] for r in result["rows"]))
    result["summary"] = summarise(result["rows"])
    print_table(result["summary"], names)
    print_timing(result.get("timing", []))
    missed = [c for c in result["summary"] if c.get("meets") is False]
    n = sum("meets" in c for c in result["summary"])
    print(f"\ntarget met in {n - len(missed)} of {n} cells" + (f"; missed: {_cells(missed)}" if missed else ""))
    slow = [r for r in result.get("timing", []) if r["contender"].startswith("qdesign ")]
    if slow:
        worst = max(slow, key=lambda r: r["vs_brevitas_mse"])
        print(
            f"slowest qdesign step / Brevitas MSE's: {worst['vs_brevitas_mse']:.2f} "
            f"({worst['contender']}, width {worst['width']}, {worst['bits']} bits; target <= {TIME_TARGET})"
        )


def _cells(cells) -> str:
    return ", ".join(f"{c['width']}/{c['bits']} by {c['minus_brevitas'] - c['target']:.2f}" for c in cells)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("QDESIGN_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--quick", action="store_true", help="smoke run: width 64, 2 bits, 2 seeds, 1+1 epochs, 6000 images")
    p.add_argument(
        "--seeds",
        type=int,
        default=6,
        help="float networks (seeds) per cell (default 6; the paired difference's SE needs several)",
    )
    p.add_argument("--first-seed", type=int, default=0, help="seeds first_seed .. first_seed + seeds - 1")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--float-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="retraining epochs")
    p.add_argument("--train-subset", type=int, default=20000, help="training examples (0: all 54000)")
    p.add_argument("--only", nargs="*", help="contender names to run (default: all)")
    p.add_argument("--rates", type=float, nargs="*", default=[], help="extra learned-step rates to try")
    p.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS), help="extra learned-step variants")
    p.add_argument("--timing-only", action="store_true", help="only the interleaved ms/step comparison")
    p.add_argument("--no-timing", action="store_true", help="skip the interleaved ms/step comparison")
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--timing-repeats", type=int, default=11)
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="pool the rows and timings of earlier runs' JSON files, print, write --out",
    )
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
    if args.merge:
        runs = [json.loads(Path(f).read_text()) for f in args.merge]
        partial = [f for f, run_ in zip(args.merge, runs) if run_.get("partial")]
        if partial:
            p.error(f"--merge: {', '.join(partial)} is an interrupted run's partial record; rerun it")
        rows = [r for run_ in runs for r in run_.get("rows", [])]
        keys = [(r["width"], r["bits"], r["seed"], r["contender"]) for r in rows]
        if len(set(keys)) != len(keys):
            p.error("--merge: the files share (width, bits, seed, contender) rows; pool disjoint runs only")
        pooled = {
            "rows": rows,
            "timing": [t for run_ in runs for t in run_.get("timing", [])],
            # a pooled file's own setups are carried over (pooling pools again)
            "setups": [
                s
                for f, run_ in zip(args.merge, runs)
                for s in run_.get("setups", [dict(run_.get("setup", {}), file=str(f))])
            ],
        }
        report(pooled)
        write(pooled, Path(args.out))
        print(f"\nwrote {args.out}")
        return
    if args.quick:
        args.seeds, args.widths, args.bits, args.float_epochs, args.epochs = 2, [64], [2], 1, 1
        args.train_subset, args.timing_steps, args.timing_repeats = 6000, 5, 3
    t0 = time.perf_counter()
    if args.timing_only:
        torch.set_num_threads(1)
        data = timing_data(args)
        result = {"timing": timing(args, data), "setup": setup(args, data)}
        print_timing(result["timing"])
        write(result, Path(args.out).with_name(Path(args.out).stem + "_timing.json"))
        return
    result = run(args)
    result["timing"] = [] if args.no_timing else timing(args, timing_data(args))
    result["setup"]["wall_seconds"] = time.perf_counter() - t0
    report(result)
    write(result, Path(args.out))
    print(f"\nwrote {args.out} ({result['setup']['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
