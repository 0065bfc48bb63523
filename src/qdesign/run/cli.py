"""Command line: ``python -m qdesign <command> ...``, used by the Snakemake rules.

One name per stage, from rule to command to function: rule ``train_float`` ->
``train-float`` -> :func:`qdesign.nn.cells.train_float`; ``retrain`` ->
:func:`qdesign.nn.cells.retrain`; ``aggregate`` -> :func:`qdesign.analysis.aggregate.aggregate`;
``figures`` -> :func:`qdesign.figures.study.figures`.

Kept import-light: the module loads in milliseconds and each command imports
what it needs. Training commands go to the warm worker when one is running
(see :mod:`qdesign.run.worker`). User errors (:class:`qdesign.core.errors.UserError`:
bad config, missing dataset, corrupt checkpoint, ...) end with one
``qdesign: error: ...`` line and exit code 1; anything else is a bug and shows
its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..core.errors import UserError

# the training jobs wait for the worker (their own process would import torch: 4 s)
WORKER_COMMANDS = {"split-data", "train-float", "retrain", "sensitivity"}
# the local jobs that make a study's tables, figures and pages go to it once it is ready (each would pay
# 0.7-1 s of imports in its own process, on the critical path at the end of a run; a figures-only rerun
# is faster in its own processes than waiting for the worker's imports)
WORKER_COMMANDS_IF_READY = {
    "aggregate",
    "scaling",
    "figures",
    "report-tables",
    "report-provenance",
    "aggregate-mixed",
    "mixed-figures",
    "report-mixed",
}
# what the warm worker serves and imports up front (torch.optim imports torch._dynamo, ~2.5 s, when the first
# optimizer is built: preload it too, or every job pays it again; the table and figure modules add ~0.2 s)
WORKER_HANDLER = "qdesign.run.cli:run"
WORKER_PRELOAD = (
    "torch",
    "torch._dynamo",
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "qdesign.nn.cells",
    "qdesign.quantize",
    "qdesign.nn.train",
    "qdesign.nn.data",
    "qdesign.analysis.aggregate",
    "qdesign.analysis.scaling",
    "qdesign.figures.study",
    "qdesign.figures.report",
    "qdesign.run.cli",
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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

    p = sub.add_parser("split-data", help="normalise and split a prepared dataset once for a study's cells")
    p.add_argument("--data", required=True, type=Path, help="the prepared dataset (results/data/<dataset>.pt)")
    p.add_argument("--split", required=True, help="the split as JSON: dataset, val_fraction, split_seed, train_subset")
    p.add_argument("--out", required=True, type=Path)

    def cell_args(p, float_checkpoint: bool) -> None:
        p.add_argument("--spec", required=True, help="cell spec as JSON (from the rule's params)")
        p.add_argument("--data", required=True, type=Path)
        if float_checkpoint:
            p.add_argument("--float-checkpoint", required=True, type=Path)
        p.add_argument("--out-dir", required=True, type=Path)
        p.add_argument("--threads", type=_positive_int, default=1)

    def table_args(p) -> None:
        for name in ("summary", "ecr", "frontier"):
            p.add_argument(f"--{name}", required=True, type=Path)

    cell_args(sub.add_parser("train-float", help="train one float network (one cell)"), float_checkpoint=False)
    p = sub.add_parser("retrain", help="quantize one float network to b bits and retrain it (one cell)")
    cell_args(p, float_checkpoint=True)
    p.add_argument("--sensitivity", type=Path, default=None, help="budget cells: the float network's sensitivity")

    p = sub.add_parser("sensitivity", help="layer-wise sensitivity of one float network (each layer alone quantized)")
    p.add_argument("--spec", required=True, help="the float network's spec as JSON")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--float-checkpoint", required=True, type=Path)
    p.add_argument("--bits", required=True, type=int, nargs="+")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threads", type=_positive_int, default=1)

    p = sub.add_parser("aggregate-mixed", help="sensitivity, mixed-cell and mixed-vs-uniform tables of one study")
    p.add_argument("--summary", required=True, type=Path, help="the study's summary.parquet (uniform cells)")
    p.add_argument("--cells", nargs="+", required=True, type=Path, help="the mixed cells' metrics.parquet files")
    p.add_argument("--sensitivity", nargs="+", required=True, type=Path, help="per float network sensitivity files")
    p.add_argument("--frontier-memory", choices=["weights", "total"], default="weights")
    for name in ("sensitivity-table", "mixed", "comparison"):
        p.add_argument(f"--out-{name}", required=True, type=Path)

    p = sub.add_parser("mixed-figures", help="sensitivity heat map and the uniform + mixed frontier of one study")
    p.add_argument("--summary", required=True, type=Path)
    p.add_argument("--sensitivity", required=True, type=Path)
    p.add_argument("--mixed", required=True, type=Path)
    p.add_argument("--comparison", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--dpi", type=int, default=150)

    p = sub.add_parser("aggregate", help="summary, ECR and frontier tables of one study")
    p.add_argument("--cells", nargs="+", required=True, type=Path, help="per-cell metrics.parquet files")
    table_args(p)
    p.add_argument("--reference-bits", type=int, default=32)
    p.add_argument("--frontier-memory", choices=["weights", "total"], default="weights")
    p.add_argument("--n-budgets", type=int, default=25)

    p = sub.add_parser("figures", help="figures of one study from its tables")
    table_args(p)
    p.add_argument("--scaling", required=True, type=Path, help="the study's scaling.parquet")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--formats", nargs="+", default=["png", "pdf"])
    p.add_argument("--dpi", type=int, default=150)

    p = sub.add_parser("export-reference", help="ship a finished study's tables (no checkpoints) as reference results")
    p.add_argument("--config", required=True, type=Path, help="the config the study ran with")
    p.add_argument("--results", default=Path("results"), type=Path)
    p.add_argument("--out", required=True, type=Path, help="e.g. reference/cpu")
    p.add_argument("--wall-seconds", type=float, default=None, help="measured wall time of the run, for the record")
    p.add_argument("--note", default=None, help="free text for the provenance record (machine, command)")
    p = sub.add_parser("export", help="write a finished cell as packed integer weights or ONNX, verified")
    p.add_argument("cell_dir", type=Path, help="a cell folder (model.pt + metrics.parquet)")
    p.add_argument("--format", required=True, choices=["packed", "onnx"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--verify",
        type=Path,
        default=None,
        metavar="DATA",
        help="prepared dataset (results/data/<dataset>.pt): rerun the test set on the exported file and "
        "fail unless it reproduces the cell's recorded test error and predictions",
    )
    p = sub.add_parser("export-frontier", help="export the Pareto-frontier cells of a study (packed and ONNX)")
    p.add_argument("study_dir", type=Path, help="results/<study>, holding frontier.parquet and the cells")
    p.add_argument("--data", required=True, type=Path, help="the study's prepared dataset, for verification")
    p.add_argument("--out-dir", required=True, type=Path)
    p = sub.add_parser("report-tables", help="a study's tables as an HTML page for the Snakemake report")
    table_args(p)
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("report-mixed", help="a study's mixed-precision tables as an HTML page for the report")
    p.add_argument("--comparison", required=True, type=Path)
    p.add_argument("--mixed", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("report-provenance", help="the run's config, versions and commit as an HTML page")
    p.add_argument("--config-json", required=True)
    p.add_argument("--summaries", nargs="+", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("scaling", help="fit the scaling law err(N, b) of a study, with bootstrap intervals and CV")
    p.add_argument("--summary", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n-boot", type=int, default=200)
    p = sub.add_parser("recommend", help="the best design for a weight-memory budget: trained cells and the law")
    p.add_argument("study_dir", type=Path, help="results/<study> (summary.parquet; scaling.parquet if present)")
    p.add_argument("--budget", required=True, help="e.g. 64KiB, 0.5MiB, 100000bits, 12kB")
    p.add_argument("--memory", choices=["weights", "total"], default="weights")
    p = sub.add_parser("findings", help="the paper's four findings measured on study tables (markdown)")
    p.add_argument("study_dirs", nargs="+", type=Path, help="folders holding summary/ecr/frontier.parquet")
    return ap


def _cmd_findings(args) -> None:
    from ..analysis.findings import report  # noqa: PLC0415

    print("\n\n".join(report(d) for d in args.study_dirs))


def _cmd_export_reference(args) -> None:
    from .reference import export_reference  # noqa: PLC0415

    paths = export_reference(args.config, args.results, args.out, args.wall_seconds, args.note)
    print(f"wrote {len(paths)} files to {args.out}", flush=True)


def _cmd_export(args) -> None:
    from ..export import export_cell  # noqa: PLC0415

    path = export_cell(args.cell_dir, args.format, args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)
    if args.verify is not None:
        from ..export.verify import check_export  # noqa: PLC0415

        try:
            check = check_export(args.cell_dir, path, args.verify, args.format)
        except BaseException:
            path.unlink(missing_ok=True)  # never leave an export that failed its check
            raise
        print(
            f"verified: test error {check.export_error:.4f} = recorded {check.recorded_error:.4f}, "
            f"{check.n_differ} of {check.n_test} predictions differ from PyTorch",
            flush=True,
        )


def _cmd_export_frontier(args) -> None:
    from ..export.frontier import export_frontier  # noqa: PLC0415

    for line in export_frontier(args.study_dir, args.data, args.out_dir):
        print(line, flush=True)


def _cmd_report_mixed(args) -> None:
    import pandas as pd  # noqa: PLC0415

    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..figures.report import mixed_html  # noqa: PLC0415

    comparison, mixed = pd.read_parquet(args.comparison), pd.read_parquet(args.mixed)
    write_text_atomic(args.out, mixed_html(comparison, mixed, str(mixed["study"].iloc[0])))


def _cmd_report_tables(args) -> None:
    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..figures.report import tables_html  # noqa: PLC0415
    from ..figures.study import read_tables  # noqa: PLC0415

    summary, ecr, frontier = read_tables(args.summary, args.ecr, args.frontier)
    study = str(summary["study"].iloc[0]) if len(summary) else "study"
    write_text_atomic(args.out, tables_html(summary, ecr, frontier, study))


def _cmd_report_provenance(args) -> None:
    import json  # noqa: PLC0415

    from ..core.config import REPO_ROOT  # noqa: PLC0415
    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..figures.report import provenance_html  # noqa: PLC0415
    from ..figures.study import read_tables  # noqa: PLC0415

    summaries = {}
    for path in args.summaries:
        s = read_tables(path, path, path)[0]
        summaries[str(s["study"].iloc[0]) if len(s) else str(path)] = s
    write_text_atomic(args.out, provenance_html(json.loads(args.config_json), REPO_ROOT, summaries))


def _cmd_scaling(args) -> None:
    import pandas as pd  # noqa: PLC0415

    from ..analysis.scaling import scaling_table  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415
    from ..figures.study import primary_method_rows, read_tables  # noqa: PLC0415

    summary = primary_method_rows(read_tables(args.summary, args.summary, args.summary)[0])
    n_widths = summary["width"].nunique()
    if n_widths < 4:
        # too few widths to fit and cross-validate a law: say so in the table
        # (figures show it) rather than fit something nobody should trust
        table = pd.DataFrame(
            [
                {
                    "kind": "status",
                    "name": "not fitted",
                    "note": f"{n_widths} widths; the law needs at least 4 (leave-one-width-out CV)",
                }
            ]
        )
    else:
        table = scaling_table(summary, n_boot=args.n_boot)
    parquet_write_atomic(table, args.out)
    print(f"{len(table)} rows -> {args.out}", flush=True)


def _cmd_recommend(args) -> None:
    from ..analysis.recommend import parse_budget, recommend  # noqa: PLC0415

    print(recommend(args.study_dir, parse_budget(args.budget), memory=args.memory), flush=True)


def _cmd_validate(args) -> None:
    from ..core.config import load_config  # noqa: PLC0415
    from ..core.specs import mixed_cells, study_cells  # noqa: PLC0415

    cfg = load_config(args.config)
    for name in cfg["studies"]:
        cells = study_cells(cfg, name)
        mixed = mixed_cells(cfg, name)
        extra = f" + {len(mixed)} mixed-precision cells" if mixed else ""
        print(f"{name}: {len(cells)} cells ({sum(c.is_float for c in cells)} float){extra}")


def _cmd_prepare(args) -> None:
    from ..nn.data import prepare_dataset, write_prepared  # noqa: PLC0415

    t0 = time.perf_counter()
    payload = prepare_dataset(args.dataset, args.data_dir, args.download, args.split_seed)
    write_prepared(payload, args.out)
    print(
        f"{args.dataset}: {payload['x_train'].shape[0]} train pool / {payload['x_test'].shape[0]} test, "
        f"shape {tuple(payload['x_train'].shape[1:])}, from {payload['source']} "
        f"({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )


def _cmd_split(args) -> None:
    import json  # noqa: PLC0415

    from ..core.specs import split_key  # noqa: PLC0415
    from ..nn.data import load_prepared, write_splits  # noqa: PLC0415

    t0 = time.perf_counter()
    try:
        raw = json.loads(args.split)
        key = split_key(raw["dataset"], raw["val_fraction"], raw["split_seed"], raw["train_subset"])
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"--split is not a split key ({type(exc).__name__}: {exc})") from None
    s = write_splits(load_prepared(args.data), key, args.out)
    print(
        f"{key['dataset']}: {s.x_train.shape[0]} train / {s.x_val.shape[0]} val / {s.x_test.shape[0]} test "
        f"({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )


def _spec_of(text: str, kind):
    from ..core.specs import spec_from_json  # noqa: PLC0415

    spec = spec_from_json(text)
    if not isinstance(spec, kind):
        raise UserError(f"--spec is a {type(spec).__name__}, this command needs a {kind.__name__}")
    return spec


def _cmd_train_float(args) -> None:
    from ..core.specs import FloatSpec  # noqa: PLC0415
    from ..nn.cells import train_float  # noqa: PLC0415

    train_float(_spec_of(args.spec, FloatSpec), args.data, args.out_dir, args.threads)


def _cmd_retrain(args) -> None:
    from ..core.specs import QuantSpec  # noqa: PLC0415
    from ..nn.cells import retrain  # noqa: PLC0415

    retrain(
        _spec_of(args.spec, QuantSpec), args.data, args.float_checkpoint, args.out_dir, args.threads, args.sensitivity
    )


def _cmd_sensitivity(args) -> None:
    from ..core.specs import FloatSpec  # noqa: PLC0415
    from ..nn.cells import sensitivity  # noqa: PLC0415

    sensitivity(_spec_of(args.spec, FloatSpec), args.data, args.float_checkpoint, args.out, args.bits, args.threads)


def _cmd_aggregate_mixed(args) -> None:
    from ..analysis.mixed import aggregate_mixed  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415

    sens, mixed, comparison = aggregate_mixed(args.summary, args.cells, args.sensitivity, args.frontier_memory)
    parquet_write_atomic(sens, args.out_sensitivity_table)
    parquet_write_atomic(mixed, args.out_mixed)
    parquet_write_atomic(comparison, args.out_comparison)
    print(
        f"{len(sens)} sensitivity rows, {len(mixed)} mixed cells, {len(comparison)} budgets compared",
        flush=True,
    )


def _cmd_mixed_figures(args) -> None:
    from ..figures.mixed import mixed_figures  # noqa: PLC0415

    paths = mixed_figures(
        args.summary, args.sensitivity, args.mixed, args.comparison, args.out_dir, tuple(args.formats), args.dpi
    )
    print(f"wrote {len(paths)} figures to {args.out_dir}", flush=True)


def _cmd_aggregate(args) -> None:
    from ..analysis.aggregate import aggregate  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415

    summary, ecr, frontier = aggregate(args.cells, args.reference_bits, args.frontier_memory, args.n_budgets)
    parquet_write_atomic(summary, args.summary)
    parquet_write_atomic(ecr, args.ecr)
    parquet_write_atomic(frontier, args.frontier)
    print(
        f"{len(summary)} cells -> {args.summary}, {len(ecr)} ECR rows -> {args.ecr}, "
        f"{len(frontier)} frontier rows -> {args.frontier}",
        flush=True,
    )


def _cmd_figures(args) -> None:
    from ..figures.study import figures, read_tables  # noqa: PLC0415

    tables = read_tables(args.summary, args.ecr, args.frontier)
    scaling = read_tables(args.scaling, args.scaling, args.scaling)[0]
    paths = figures(*tables, args.out_dir, formats=tuple(args.formats), dpi=args.dpi, scaling=scaling)
    print(f"wrote {len(paths)} figures to {args.out_dir}", flush=True)


_COMMANDS = {
    "validate-config": _cmd_validate,
    "prepare-data": _cmd_prepare,
    "split-data": _cmd_split,
    "train-float": _cmd_train_float,
    "retrain": _cmd_retrain,
    "sensitivity": _cmd_sensitivity,
    "aggregate-mixed": _cmd_aggregate_mixed,
    "mixed-figures": _cmd_mixed_figures,
    "aggregate": _cmd_aggregate,
    "figures": _cmd_figures,
    "export-reference": _cmd_export_reference,
    "findings": _cmd_findings,
    "export": _cmd_export,
    "scaling": _cmd_scaling,
    "recommend": _cmd_recommend,
    "report-tables": _cmd_report_tables,
    "report-provenance": _cmd_report_provenance,
    "report-mixed": _cmd_report_mixed,
    "export-frontier": _cmd_export_frontier,
}


def run(argv: list[str]) -> int:
    """Run one command in this process; returns the exit status. User errors
    become one line (unless QDESIGN_DEBUG is set); bugs raise."""
    args = _parser().parse_args(argv)
    try:
        _COMMANDS[args.command](args)
    except UserError as exc:
        if os.environ.get("QDESIGN_DEBUG"):
            raise
        print(f"qdesign: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and (argv[0] in WORKER_COMMANDS or argv[0] in WORKER_COMMANDS_IF_READY):
        from .worker import submit  # noqa: PLC0415 - stdlib only

        code = submit(argv, ready_only=argv[0] not in WORKER_COMMANDS)
        if code is not None:
            return code
    return run(argv)
