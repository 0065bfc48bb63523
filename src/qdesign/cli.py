"""Command line: ``python -m qdesign <command> ...``, used by the Snakemake rules.

Kept import-light: the module loads in milliseconds and each command imports
what it needs. Training commands go to the warm worker when one is running
(see :mod:`qdesign.worker`). Known problems (bad config, missing dataset,
corrupt checkpoint) end with one ``qdesign: error: ...`` line and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

WORKER_COMMANDS = {"train-float", "retrain"}
# what the warm worker serves and imports up front (torch.optim imports torch._dynamo, ~2.5 s, when the first
# optimizer is built: preload it too, or every job pays it again)
WORKER_HANDLER = "qdesign.cli:run"
WORKER_PRELOAD = ("torch", "torch._dynamo", "numpy", "pandas", "pyarrow.parquet", "qdesign.cells", "qdesign.quantize",
                  "qdesign.train", "qdesign.data", "qdesign.cli")


def _spec(text: str) -> dict:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--spec is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("--spec must be a JSON object")
    return spec


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m qdesign", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-config", help="validate a config file and print the studies' grid sizes")
    p.add_argument("config", type=Path)

    p = sub.add_parser("prepare-data", help="read a dataset into the cached tensor file")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)

    def cell_args(p, float_checkpoint: bool) -> None:
        p.add_argument("--spec", required=True, type=_spec, help="cell spec as JSON (from the rule's params)")
        p.add_argument("--data", required=True, type=Path)
        if float_checkpoint:
            p.add_argument("--float-checkpoint", required=True, type=Path)
        p.add_argument("--out-dir", required=True, type=Path)
        p.add_argument("--threads", type=int, default=1)

    def table_args(p) -> None:
        for name in ("summary", "ecr", "frontier"):
            p.add_argument(f"--{name}", required=True, type=Path)

    cell_args(sub.add_parser("train-float", help="train one float network (one cell)"), float_checkpoint=False)
    cell_args(sub.add_parser("retrain", help="quantize one float network to b bits and retrain it (one cell)"),
              float_checkpoint=True)

    p = sub.add_parser("aggregate", help="summary, ECR and frontier tables of one study")
    p.add_argument("--cells", nargs="+", required=True, type=Path, help="per-cell metrics.parquet files")
    table_args(p)
    p.add_argument("--reference-bits", type=int, default=32)
    p.add_argument("--frontier-memory", choices=["weights", "total"], default="weights")
    p.add_argument("--n-budgets", type=int, default=25)

    p = sub.add_parser("plot", help="figures of one study from its tables")
    table_args(p)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--dpi", type=int, default=150)

    p = sub.add_parser("export-reference", help="ship a finished study's tables (no checkpoints) as reference results")
    p.add_argument("--config", required=True, type=Path, help="the config the study ran with")
    p.add_argument("--results", default=Path("results"), type=Path)
    p.add_argument("--out", required=True, type=Path, help="e.g. reference/cpu")
    p.add_argument("--wall-seconds", type=float, default=None, help="measured wall time of the run, for the record")
    p.add_argument("--note", default=None, help="free text for the provenance record (machine, command)")
    p = sub.add_parser("findings", help="the paper's four findings measured on study tables (markdown)")
    p.add_argument("study_dirs", nargs="+", type=Path, help="folders holding summary/ecr/frontier.parquet")
    return ap


def _cmd_findings(args) -> None:
    from .findings import report  # noqa: PLC0415

    print("\n\n".join(report(d) for d in args.study_dirs))


def _cmd_export_reference(args) -> None:
    from .reference import export_reference  # noqa: PLC0415

    paths = export_reference(args.config, args.results, args.out, args.wall_seconds, args.note)
    print(f"wrote {len(paths)} files to {args.out}", flush=True)


def _cmd_validate(args) -> None:
    from .config import load_config, study_cells  # noqa: PLC0415

    cfg = load_config(args.config)
    for name in cfg["studies"]:
        cells = study_cells(cfg, name)
        print(f"{name}: {len(cells)} cells ({sum(c.is_float for c in cells)} float)")


def _cmd_prepare(args) -> None:
    from .data import prepare_dataset, write_prepared  # noqa: PLC0415

    t0 = time.perf_counter()
    payload = prepare_dataset(args.dataset, args.data_dir, args.download, args.split_seed)
    write_prepared(payload, args.out)
    print(f"{args.dataset}: {payload['x_train'].shape[0]} train pool / {payload['x_test'].shape[0]} test, "
          f"shape {tuple(payload['x_train'].shape[1:])}, from {payload['source']} "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)


def _cmd_train_float(args) -> None:
    from .cells import run_float  # noqa: PLC0415

    run_float(args.spec, args.data, args.out_dir, args.threads)


def _cmd_retrain(args) -> None:
    from .cells import run_quantized  # noqa: PLC0415

    run_quantized(args.spec, args.data, args.float_checkpoint, args.out_dir, args.threads)


def _cmd_aggregate(args) -> None:
    from .aggregate import aggregate  # noqa: PLC0415
    from .io import parquet_write_atomic  # noqa: PLC0415

    summary, ecr, frontier = aggregate(args.cells, args.reference_bits, args.frontier_memory, args.n_budgets)
    parquet_write_atomic(summary, args.summary)
    parquet_write_atomic(ecr, args.ecr)
    parquet_write_atomic(frontier, args.frontier)
    print(f"{len(summary)} cells -> {args.summary}, {len(ecr)} ECR rows -> {args.ecr}, "
          f"{len(frontier)} frontier rows -> {args.frontier}", flush=True)


def _cmd_plot(args) -> None:
    import pandas as pd  # noqa: PLC0415

    from .plots import make_figures  # noqa: PLC0415

    tables = [pd.read_parquet(p) for p in (args.summary, args.ecr, args.frontier)]
    paths = make_figures(*tables, args.out_dir, formats=tuple(args.formats), dpi=args.dpi)
    print(f"wrote {len(paths)} figures to {args.out_dir}", flush=True)


_COMMANDS = {
    "validate-config": _cmd_validate,
    "prepare-data": _cmd_prepare,
    "train-float": _cmd_train_float,
    "retrain": _cmd_retrain,
    "aggregate": _cmd_aggregate,
    "plot": _cmd_plot,
    "export-reference": _cmd_export_reference,
    "findings": _cmd_findings,
}


def _known_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError  # noqa: PLC0415

    errors: list[type[BaseException]] = [ConfigError, FileNotFoundError]
    if "qdesign.data" in sys.modules:
        errors.append(sys.modules["qdesign.data"].DatasetError)
    if "qdesign.cells" in sys.modules:
        errors.append(sys.modules["qdesign.cells"].CheckpointError)
    return tuple(errors)


def run(argv: list[str]) -> int:
    """Run one command in this process; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        _COMMANDS[args.command](args)
    except Exception as exc:
        if isinstance(exc, (*_known_errors(), ValueError)) and not os.environ.get("QDESIGN_DEBUG"):
            print(f"qdesign: error: {exc}", file=sys.stderr, flush=True)
            return 1
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in WORKER_COMMANDS:
        from .worker import submit  # noqa: PLC0415 - stdlib only

        code = submit(argv)
        if code is not None:
            return code
    return run(argv)
