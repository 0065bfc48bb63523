"""Command line: ``python -m qdesign <command> ...``, used by the Snakemake rules.

One name per stage, from rule to command to function: rule ``train_float`` ->
``train-float`` -> :func:`qdesign.nn.cells.train_float`; ``retrain`` ->
:func:`qdesign.nn.cells.retrain`; ``aggregate`` -> :func:`qdesign.analysis.aggregate.aggregate`;
``figures`` -> :func:`qdesign.figures.catalog.write_figures`.

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
import re
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


# --------------------------------------------------------------------------
# Values: each bad one is one line naming the option (argparse adds its name)
# --------------------------------------------------------------------------


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _word_length(text: str) -> int:
    from ..core.constants import MAX_BITS, MIN_BITS  # noqa: PLC0415

    value = _int_at_least(MIN_BITS)(text)
    if value > MAX_BITS:
        raise argparse.ArgumentTypeError(f"word lengths are {MIN_BITS} to {MAX_BITS} bits, got {value}")
    return value


def _budget(text: str) -> int:
    from ..core.memory import parse_budget  # noqa: PLC0415

    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"a budget is a positive memory size, got {text!r}")
    try:
        return parse_budget(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _export_seed(text: str):
    if text == "best_val":
        return text
    try:
        return _nonnegative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither best_val nor a seed number (0, 1, ...)") from None


def _figure_format(text: str) -> str:
    fmt = text.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a figure format: use {', '.join(FIGURE_FORMATS)}")
    return fmt


FIGURE_FORMATS = ("png", "pdf", "svg", "eps", "ps", "jpg", "tif", "webp")
"""Formats matplotlib writes on every backend-free install (a subset of its list,
so that the parser needs no matplotlib)."""


# --------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------

USER_COMMANDS = (
    "validate-config",
    "recommend",
    "findings",
    "export",
    "export-frontier",
    "prepare-data",
    "export-reference",
)
"""What a user runs by hand; listed first in ``--help``."""

PIPELINE_COMMANDS = (
    "split-data",
    "train-float",
    "retrain",
    "sensitivity",
    "aggregate",
    "aggregate-mixed",
    "scaling",
    "figures",
    "mixed-figures",
    "recommend-designs",
    "recommendations",
    "search-round",
    "search-table",
    "search-figures",
    "report-search",
    "report-answer",
    "report-tables",
    "report-mixed",
    "report-provenance",
)
"""The Snakemake rules' entry points (one per rule; names and options are the
rules' interface and stay stable); they run by hand too, but rarely need to."""

_EXAMPLES = """\
examples:
  python -m qdesign validate-config config/cpu.yaml
  python -m qdesign recommend results/digits-fcdnn --budget 2KiB
  python -m qdesign findings results/digits-fcdnn results/digits-cnn
  python -m qdesign export results/digits-fcdnn/fixed/b2/w64-s0 --format onnx --out w64-2bit.onnx \\
      --verify results/data/digits.pt
  python -m qdesign <command> --help     options of one command

A value a command cannot use ends with one 'qdesign: error: ...' line and exit status 2 (a bad
option or value) or 1 (a file, table or config the command refuses)."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written; every option with a default says it (flags and
    required options have none to say)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or action.required
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or action.nargs == 0
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``qdesign: error: <command>: <what>``.

    A value that starts with "-" (``--budget -5KiB``) is read as the option's
    value, so that it is refused for what it is, not as an unknown option."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)
        self._negative_number_matcher = re.compile(r"^-[0-9.]")  # -5KiB, -.5: values, not options

    def error(self, message: str):
        where = self.prog.removeprefix(PROG).strip()
        unknown = re.match(r"argument COMMAND: invalid choice: ('[^']*')", message)
        if unknown:
            message = f"unknown command {unknown.group(1)}"
        hint = f"python -m qdesign {where} --help" if where else "python -m qdesign --help"
        self.exit(2, f"qdesign: error: {where + ': ' if where else ''}{message} (see {hint})\n")


PROG = "python -m qdesign"


def _command_list(sub) -> str:
    helps = {a.dest: a.help for a in sub._choices_actions}  # noqa: SLF001 - argparse keeps no public list
    width = max(map(len, helps)) + 2

    def block(title, names):
        return title + ":\n" + "\n".join(f"  {n:<{width}}{helps[n]}" for n in names)

    return (
        block("commands", USER_COMMANDS)
        + "\n\n"
        + block("pipeline steps (the Snakemake rules run these; rarely needed by hand)", PIPELINE_COMMANDS)
    )


def _parser() -> argparse.ArgumentParser:
    from .. import __version__  # noqa: PLC0415

    ap = _Parser(
        prog=PROG,
        description="qdesign: quantized neural network design under a weight-memory budget. "
        "Run the study with Snakemake (snakemake --cores all); these commands read, advise on and export "
        "its results, and are the rules' steps.",
        usage=f"{PROG} [-h] [--version] COMMAND [options]",
    )
    ap.add_argument("--version", action="version", version=f"qdesign {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, description: str | None = None, examples: str = ""):
        return sub.add_parser(
            name,
            prog=f"{PROG} {name}",
            help=help,
            description=description or help[0].upper() + help[1:] + ".",
            epilog=("examples:\n" + examples) if examples else None,
        )

    # ---------------------------------------------------------------- for users
    p = command(
        "validate-config",
        "check a config file and print each study's number of cells",
        examples="  python -m qdesign validate-config config/config.yaml",
    )
    p.add_argument("config", type=Path, help="the config file (YAML), as given to snakemake --configfile")

    p = command(
        "recommend",
        "the best design for a weight-memory budget, from the trained cells and the scaling law",
        "The best design for a weight-memory budget: the best trained cell (chosen on validation error, "
        "reported with its test error) and the scaling law's design with a prediction interval.",
        "  python -m qdesign recommend results/digits-fcdnn --budget 2KiB\n"
        "  python -m qdesign recommend results/mnist-fcdnn --budget 0.5MiB --memory total",
    )
    p.add_argument(
        "study_dir",
        type=Path,
        help="a study's results folder, results/<study> (its summary.parquet; scaling.parquet if present)",
    )
    p.add_argument(
        "--budget",
        required=True,
        type=_budget,
        metavar="SIZE",
        help="the memory budget: a number and a unit, bits (b), bytes (B), kB/MB (powers of 1000 bytes) or "
        "KiB/MiB (powers of 1024 bytes), e.g. 64KiB, 0.5MiB, 12kB, 100000bits; no unit: bits",
    )
    p.add_argument(
        "--memory",
        choices=["weights", "total"],
        default="weights",
        help="what the budget holds: weights only, or total (weights, float biases and the quantization steps)",
    )

    p = command(
        "findings",
        "the paper's four findings measured on a study's tables, as markdown",
        examples="  python -m qdesign findings results/digits-fcdnn results/digits-cnn",
    )
    p.add_argument(
        "study_dirs",
        nargs="+",
        type=Path,
        metavar="STUDY_DIR",
        help="one or more results/<study> folders (summary, ecr and frontier.parquet)",
    )

    p = command(
        "export",
        "write a finished cell as packed integer weights or ONNX, verified on the test set",
        examples="  python -m qdesign export results/digits-fcdnn/fixed/b2/w64-s0 --format packed "
        "--out w64-2bit.qdpk \\\n      --verify results/data/digits.pt",
    )
    p.add_argument(
        "cell_dir", type=Path, help="a cell folder (model.pt + metrics.parquet), e.g. results/<study>/fixed/b2/w64-s0"
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["packed", "onnx"],
        help="packed: bit-packed codes for the NumPy reader (qdesign.export.packed); onnx: for ONNX Runtime",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (new, unless --force)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DATA",
        help="the prepared dataset the cell was trained on, whose input normalisation the file carries "
        "(default: the --verify dataset, else results/data/<dataset>.pt of the results folder holding the cell)",
    )
    p.add_argument(
        "--verify",
        type=Path,
        default=None,
        metavar="DATA",
        help="prepared dataset (results/data/<dataset>.pt): run the exported file on the raw test pixels first and "
        "write it only if it reproduces the cell's recorded test error, predictions and memory",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing file at --out (never an input of the export, never a directory, link or device)",
    )

    p = command(
        "export-frontier",
        "export every Pareto-frontier cell of a study (packed and ONNX), verified",
        examples="  python -m qdesign export-frontier results/digits-fcdnn --data results/data/digits.pt "
        "--out-dir frontier-digits",
    )
    p.add_argument("study_dir", type=Path, help="results/<study>, holding frontier.parquet and the cells")
    p.add_argument(
        "--data", required=True, type=Path, help="the study's prepared dataset: input normalisation and verification"
    )
    p.add_argument("--out-dir", required=True, type=Path, help="folder for the files and manifest.parquet")
    p.add_argument(
        "--seed",
        default="best_val",
        type=_export_seed,
        metavar="{best_val,N}",
        help="which seed of each Pareto cell: best_val (the lowest validation error) or a seed number",
    )
    p.add_argument("--force", action="store_true", help="replace files of an earlier export in --out-dir")

    from ..core.registry import DATASETS  # noqa: PLC0415 - plain data, no torch

    p = command(
        "prepare-data",
        "read a dataset into the cached tensor file (the data rule; by hand to check a download)",
        examples="  python -m qdesign prepare-data --dataset mnist --data-dir data --no-download "
        "--out results/data/mnist.pt",
    )
    p.add_argument("--dataset", required=True, choices=list(DATASETS), help="which dataset")
    p.add_argument(
        "--data-dir",
        default="data",
        metavar="DIR",
        help="folder holding (or receiving) the torchvision files; unused for digits",
    )
    p.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="download a missing dataset through torchvision (--no-download: fail with the files to place "
        "instead) (default: --download)",
    )
    p.add_argument(
        "--verify-checksums",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse files that are not the published ones (md5); --no-verify-checksums for your own files "
        "(default: --verify-checksums)",
    )
    p.add_argument(
        "--split-seed",
        type=_nonnegative_int,
        default=0,
        metavar="N",
        help="seed of digits' stratified test split (other datasets have an official one)",
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="where to write it, results/data/<dataset>.pt"
    )

    p = command(
        "export-reference",
        "ship a finished study's tables (no checkpoints) as reference results",
        examples="  python -m qdesign export-reference --config config/cpu.yaml --out reference/cpu",
    )
    p.add_argument("--config", required=True, type=Path, help="the config the study ran with")
    p.add_argument("--results", default=Path("results"), type=Path, metavar="DIR", help="the run's results folder")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="e.g. reference/cpu")
    p.add_argument(
        "--wall-seconds",
        type=_positive_float,
        default=None,
        metavar="S",
        help="measured wall time of the run in seconds, for the record",
    )
    p.add_argument("--note", default=None, help="free text for the provenance record (machine, command)")

    # ---------------------------------------------------------------- pipeline steps
    def threads(p) -> None:
        p.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="torch threads")

    def formats(p) -> None:
        p.add_argument(
            "--formats",
            nargs="+",
            type=_figure_format,
            default=["png", "pdf"],
            metavar="FMT",
            help=f"file formats, one file each ({', '.join(FIGURE_FORMATS)})",
        )
        p.add_argument("--dpi", type=_positive_int, default=150, help="resolution of raster formats (dots per inch)")

    def table_args(p) -> None:
        for name, what in (("summary", "one row per network"), ("ecr", "ECR per width and bits"),
                           ("frontier", "Pareto cells and best cell per budget")):  # fmt: skip
            p.add_argument(
                f"--{name}", required=True, type=Path, metavar="FILE", help=f"the study's {name}.parquet ({what})"
            )

    p = command("split-data", "normalise and split a prepared dataset once for a study's cells")
    p.add_argument(
        "--data", required=True, type=Path, metavar="FILE", help="the prepared dataset (results/data/<dataset>.pt)"
    )
    p.add_argument(
        "--split",
        required=True,
        metavar="JSON",
        help="the split as JSON: dataset, val_fraction, split_seed, train_subset",
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the splits file to write")

    def cell_args(p, float_checkpoint: bool) -> None:
        p.add_argument("--spec", required=True, metavar="JSON", help="the cell's spec as JSON (the rule's params)")
        p.add_argument(
            "--data",
            required=True,
            type=Path,
            metavar="FILE",
            help="the study's splits file (results/data/splits/<split>.pt) or a prepared dataset",
        )
        if float_checkpoint:
            p.add_argument(
                "--float-checkpoint", required=True, type=Path, metavar="FILE", help="the float network's model.pt"
            )
        p.add_argument(
            "--out-dir", required=True, type=Path, metavar="DIR", help="the cell folder (model.pt, metrics.parquet)"
        )
        threads(p)

    cell_args(command("train-float", "train one float network (one cell)"), float_checkpoint=False)
    p = command("retrain", "quantize one float network to b bits and retrain it (one cell)")
    cell_args(p, float_checkpoint=True)
    p.add_argument(
        "--sensitivity",
        type=Path,
        default=None,
        metavar="FILE",
        help="budget cells: the float network's sensitivity table",
    )

    p = command("sensitivity", "layer-wise sensitivity of one float network (each layer alone quantized)")
    p.add_argument("--spec", required=True, metavar="JSON", help="the float network's spec as JSON")
    p.add_argument("--data", required=True, type=Path, metavar="FILE", help="the study's splits file")
    p.add_argument("--float-checkpoint", required=True, type=Path, metavar="FILE", help="the float network's model.pt")
    p.add_argument(
        "--bits",
        required=True,
        type=_word_length,
        nargs="+",
        metavar="B",
        help="the word lengths to try per layer (1 to 16)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the sensitivity table to write (parquet)")
    threads(p)

    p = command("aggregate", "summary, ECR and frontier tables of one study")
    p.add_argument(
        "--cells", nargs="+", required=True, type=Path, metavar="FILE", help="per-cell metrics.parquet files"
    )
    table_args(p)
    p.add_argument(
        "--reference-bits",
        type=_positive_int,
        default=32,
        metavar="B",
        help="word length of the float reference in the ECR",
    )
    p.add_argument(
        "--frontier-memory",
        choices=["weights", "total"],
        default="weights",
        help="memory of the frontier and its budgets: weights only, or with biases and steps",
    )
    p.add_argument(
        "--n-budgets",
        type=_int_at_least(2),
        default=25,
        metavar="N",
        help="number of log-spaced memory budgets in the frontier table",
    )

    p = command("aggregate-mixed", "sensitivity, mixed-cell and mixed-vs-uniform tables of one study")
    p.add_argument("--summary", required=True, type=Path, metavar="FILE", help="the study's summary.parquet")
    p.add_argument(
        "--cells", nargs="+", required=True, type=Path, metavar="FILE", help="the mixed cells' metrics.parquet files"
    )
    p.add_argument(
        "--sensitivity", nargs="+", required=True, type=Path, metavar="FILE", help="per float network sensitivity files"
    )
    p.add_argument(
        "--frontier-memory", choices=["weights", "total"], default="weights", help="memory of the budgets compared"
    )
    for name, what in (("sensitivity-table", "sensitivity"), ("mixed", "mixed"), ("comparison", "mixed_vs_uniform")):
        p.add_argument(f"--out-{name}", required=True, type=Path, metavar="FILE", help=f"the {what}.parquet to write")

    p = command("scaling", "fit the scaling law err(N, b) of a study, with bootstrap intervals and cross-validation")
    p.add_argument("--summary", required=True, type=Path, metavar="FILE", help="the study's summary.parquet")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the scaling.parquet to write")
    p.add_argument("--n-boot", type=_positive_int, default=200, metavar="N", help="bootstrap resamples over seeds")

    p = command("figures", "figures of one study from its tables")
    table_args(p)
    p.add_argument("--scaling", required=True, type=Path, metavar="FILE", help="the study's scaling.parquet")
    p.add_argument("--out-dir", required=True, type=Path, metavar="DIR", help="the figures folder")
    formats(p)

    p = command("mixed-figures", "sensitivity heat map and the uniform + mixed frontier of one study")
    for name in ("summary", "sensitivity", "mixed", "comparison"):
        p.add_argument(f"--{name}", required=True, type=Path, metavar="FILE", help=f"the study's {name} table")
    p.add_argument("--out-dir", required=True, type=Path, metavar="DIR", help="the figures folder")
    formats(p)

    p = command("recommend-designs", "the designs recommended for a study's budgets (the closed loop's checkpoint)")
    p.add_argument("--summary", required=True, type=Path, metavar="FILE", help="the study's summary.parquet")
    p.add_argument("--scaling", required=True, type=Path, metavar="FILE", help="the study's scaling.parquet")
    p.add_argument(
        "--budgets", nargs="+", required=True, type=_budget, metavar="SIZE", help="memory budgets, e.g. 16KiB 64KiB"
    )
    p.add_argument("--memory", choices=["weights", "total"], default="weights", help="which memory the budgets are of")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the designs.parquet to write")
    p = command("recommendations", "recommended designs beside what training them measured (the closed loop)")
    p.add_argument("--designs", required=True, type=Path, metavar="FILE", help="the study's designs.parquet")
    p.add_argument("--summary", required=True, type=Path, metavar="FILE", help="the study's summary.parquet")
    p.add_argument(
        "--cells", nargs="*", default=[], type=Path, metavar="FILE", help="metrics.parquet of every recommended cell"
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the recommendations.parquet to write")

    p = command("search-round", "plan one round of a study's adaptive search (the search's checkpoint)")
    p.add_argument("--study", required=True, metavar="NAME", help="the study (with a search section)")
    p.add_argument("--config-json", required=True, metavar="JSON", help="the validated config (the study's part)")
    p.add_argument("--round", required=True, type=_nonnegative_int, metavar="N", help="the round to plan")
    p.add_argument(
        "--history", nargs="*", default=[], type=Path, metavar="FILE", help="round-0.json ... of the earlier rounds"
    )
    p.add_argument(
        "--cells", nargs="*", default=[], type=Path, metavar="FILE", help="metrics.parquet of every cell they asked for"
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the round's JSON to write")
    p = command("search-table", "search.parquet from the rounds of a study's adaptive search")
    p.add_argument("--study", required=True, metavar="NAME", help="the study")
    p.add_argument("--rounds", nargs="+", required=True, type=Path, metavar="FILE", help="round-0.json ... in order")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the search.parquet to write")
    p = command("search-figures", "the adaptive search's progress figure")
    p.add_argument("--search", required=True, type=Path, metavar="FILE", help="the study's search.parquet")
    p.add_argument("--out-dir", required=True, type=Path, metavar="DIR", help="the figures folder")
    formats(p)

    p = command("report-search", "a study's adaptive search as an HTML page for the report")
    p.add_argument("--search", required=True, type=Path, metavar="FILE", help="the study's search.parquet")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the page to write")
    p = command("report-answer", "a study's answer as an HTML page for the report: best design per budget, the law")
    for name in ("summary", "frontier", "scaling"):
        p.add_argument(f"--{name}", required=True, type=Path, metavar="FILE", help=f"the study's {name}.parquet")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the page to write")
    p = command("report-tables", "a study's tables as an HTML page for the Snakemake report")
    table_args(p)
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the page to write")
    p = command("report-mixed", "a study's mixed-precision tables as an HTML page for the report")
    p.add_argument("--comparison", required=True, type=Path, metavar="FILE", help="mixed_vs_uniform.parquet")
    p.add_argument("--mixed", required=True, type=Path, metavar="FILE", help="mixed.parquet")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the page to write")
    p = command("report-provenance", "the run's config, versions and commit as an HTML page")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--config-json", metavar="JSON", help="this run: the validated config as JSON")
    which.add_argument(
        "--config-file",
        type=Path,
        metavar="FILE",
        help="shipped results: the config file as shipped (reference/<profile>/config.yaml)",
    )
    p.add_argument(
        "--recorded",
        type=Path,
        metavar="FILE",
        help="with --config-file: the provenance record of the run that made them (provenance.json)",
    )
    p.add_argument(
        "--summaries", nargs="+", required=True, type=Path, metavar="FILE", help="every study's summary.parquet"
    )
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the page to write")

    sub.help = argparse.SUPPRESS  # listed in the description instead, users' commands first
    ap.description += "\n\n" + _command_list(sub)
    ap.epilog = _EXAMPLES
    return ap


def _cmd_findings(args) -> None:
    from ..analysis.findings import report  # noqa: PLC0415

    print("\n\n".join(report(d) for d in args.study_dirs))


def _cmd_export_reference(args) -> None:
    from .reference import export_reference  # noqa: PLC0415

    paths = export_reference(args.config, args.results, args.out, args.wall_seconds, args.note)
    print(f"wrote {len(paths)} files to {args.out}", flush=True)


def _cmd_export(args) -> None:
    from ..core.errors import ExportError  # noqa: PLC0415
    from ..export import export_cell, export_verified  # noqa: PLC0415

    if args.out.endswith(os.sep) or args.out in ("", ".", ".."):
        raise ExportError(f"--out {args.out!r} names a folder; give a file name")
    data = args.data or args.verify
    if args.data and args.verify and os.path.realpath(args.data) != os.path.realpath(args.verify):
        raise ExportError("--data and --verify name different files: give the one dataset the cell was trained on")
    if args.verify is None:
        path = export_cell(args.cell_dir, args.format, args.out, data, force=args.force)
        print(f"wrote {path} ({path.stat().st_size} bytes, not verified: add --verify DATA)", flush=True)
        return
    check = export_verified(args.cell_dir, args.format, args.out, data, force=args.force)
    print(
        f"wrote {check.path} ({check.file_bytes} bytes); verified on {check.n_test} raw test images: test error "
        f"{check.export_error:.4f} = recorded {check.recorded_error:.4f}, {check.n_differ} predictions differ "
        f"from PyTorch, memory {check.memory_bits_file} bits = recorded {check.memory_bits_total}",
        flush=True,
    )


def _cmd_export_frontier(args) -> None:
    from ..export.frontier import export_frontier  # noqa: PLC0415

    for line in export_frontier(args.study_dir, args.data, args.out_dir, args.seed, args.force):
        print(line, flush=True)


def _cmd_report_mixed(args) -> None:
    import pandas as pd  # noqa: PLC0415

    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..figures.report import mixed_html  # noqa: PLC0415

    comparison, mixed = pd.read_parquet(args.comparison), pd.read_parquet(args.mixed)
    write_text_atomic(args.out, mixed_html(comparison, mixed, str(mixed["study"].iloc[0])))


def _cmd_report_search(args) -> None:
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..figures.search import search_html  # noqa: PLC0415

    (search,) = read_tables(args.search)
    study = str(search["study"].iloc[0]) if "study" in search.columns and len(search) else args.search.parent.name
    write_text_atomic(args.out, search_html(search, study))


def _cmd_report_answer(args) -> None:
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..figures.report import answer_html  # noqa: PLC0415

    summary, frontier, scaling = read_tables(args.summary, args.frontier, args.scaling)
    write_text_atomic(args.out, answer_html(summary, frontier, scaling))


def _cmd_report_tables(args) -> None:
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..figures.report import tables_html  # noqa: PLC0415

    summary, ecr, frontier = read_tables(args.summary, args.ecr, args.frontier)
    study = str(summary["study"].iloc[0]) if len(summary) else "study"
    write_text_atomic(args.out, tables_html(summary, ecr, frontier, study))


def _cmd_report_provenance(args) -> None:
    import json  # noqa: PLC0415

    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.io import write_text_atomic  # noqa: PLC0415
    from ..core.layout import REPO_ROOT  # noqa: PLC0415
    from ..figures.report import provenance_html, recorded_provenance_html  # noqa: PLC0415

    summaries = {}
    for path in args.summaries:
        (s,) = read_tables(path)
        summaries[str(s["study"].iloc[0]) if len(s) else str(path)] = s
    if args.config_file is None:
        if args.recorded is not None:
            raise UserError("--recorded goes with --config-file (the shipped config of that record)")
        write_text_atomic(args.out, provenance_html(json.loads(args.config_json), REPO_ROOT, summaries))
        return
    if args.recorded is None:
        raise UserError("--config-file needs --recorded, the provenance.json shipped beside it")
    for path in (args.config_file, args.recorded):
        if not path.is_file():
            raise UserError(f"{path} not found")
    try:
        record = json.loads(args.recorded.read_text())
    except ValueError as exc:
        raise UserError(f"{args.recorded} is not JSON ({exc})") from None
    write_text_atomic(args.out, recorded_provenance_html(args.config_file.read_bytes(), record, summaries))


def _cmd_scaling(args) -> None:
    from ..analysis.scaling import scaling_table  # noqa: PLC0415
    from ..analysis.tables import flagged_note, read_tables  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415

    (summary,) = read_tables(args.summary)
    note = flagged_note(summary)
    if note:  # cells that are no result (diverged, chance level) fit no law either
        print(f"WARNING: {note.replace('the ECR and the frontier', 'the scaling law')}", flush=True)
    table = scaling_table(summary, n_boot=args.n_boot)
    parquet_write_atomic(table, args.out)
    for note in table.loc[table["kind"] == "status", ["method", "note"]].itertuples():
        print(f"law of {note.method} not fitted: {note.note}", flush=True)
    print(f"{len(table)} rows -> {args.out}", flush=True)


def _cmd_recommend_designs(args) -> None:
    from ..analysis.recommend import recommendation_table  # noqa: PLC0415
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415

    summary, scaling = read_tables(args.summary, args.scaling)
    table = recommendation_table(summary, scaling, list(args.budgets), args.memory)
    parquet_write_atomic(table, args.out)
    print(f"{len(table)} budgets -> {args.out}", flush=True)


def _read_rounds(paths) -> list[dict]:
    import json  # noqa: PLC0415

    from ..analysis.search import check_rounds  # noqa: PLC0415
    from ..core.errors import TableError  # noqa: PLC0415

    rounds = []
    for p in paths:
        try:
            rounds.append(json.loads(Path(p).read_text()))
        except (OSError, ValueError) as exc:
            raise TableError(f"cannot read the search round {p} ({type(exc).__name__}); delete it and rerun") from None
    check_rounds(rounds)
    return rounds


def _cmd_search_round(args) -> None:
    import dataclasses  # noqa: PLC0415
    import json  # noqa: PLC0415

    import pandas as pd  # noqa: PLC0415

    from ..analysis.aggregate import read_parquets  # noqa: PLC0415
    from ..analysis.search import grid_from_study, plan_round, visible_cells  # noqa: PLC0415
    from ..core.io import write_text_atomic  # noqa: PLC0415
    from .resources import search_cost_hint  # noqa: PLC0415

    config = json.loads(args.config_json)
    grid, settings = grid_from_study(config, args.study)
    grid = dataclasses.replace(grid, cost_hint=search_cost_hint(config, args.study, grid.widths))
    history = _read_rounds(args.history)
    cells = visible_cells(read_parquets(args.cells, "searched cell metrics")) if args.cells else pd.DataFrame()
    record = plan_round(grid, settings, cells, history, args.round)
    write_text_atomic(args.out, json.dumps(record, indent=1) + "\n")
    what = f"stop: {record['stop']}" if record["stop"] else f"{len(record['batch'])} cells to train"
    print(f"round {args.round}: {record['cells']} cells measured, {what} -> {args.out}", flush=True)


def _cmd_search_table(args) -> None:
    from ..analysis.search import search_table  # noqa: PLC0415
    from ..core.errors import TableError  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415

    rounds = _read_rounds(args.rounds)
    if rounds[-1]["stop"] is None:
        raise TableError(f"the last round given ({len(rounds) - 1}) has not stopped: give every round up to the stop")
    table = search_table(rounds, args.study)
    parquet_write_atomic(table, args.out)
    print(f"{len(rounds)} rounds, stop: {rounds[-1]['stop']} -> {args.out}", flush=True)


def _cmd_search_figures(args) -> None:
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.registry import SEARCH_FIGURES  # noqa: PLC0415
    from ..figures.catalog import write_figures  # noqa: PLC0415

    (search,) = read_tables(args.search)
    paths = write_figures(SEARCH_FIGURES, {"search": search}, args.out_dir, tuple(args.formats), args.dpi)
    print(f"wrote {len(paths)} figures to {args.out_dir}", flush=True)


def _cmd_recommendations(args) -> None:
    import pandas as pd  # noqa: PLC0415

    from ..analysis.aggregate import read_parquets  # noqa: PLC0415
    from ..analysis.recommend import closed_loop_table  # noqa: PLC0415
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415

    designs, summary = read_tables(args.designs, args.summary)
    cells = (
        read_parquets(args.cells, "recommended cell metrics")
        if args.cells
        else pd.DataFrame(columns=["method", "width", "bits", "test_error", "val_error"])
    )
    table = closed_loop_table(designs, cells, summary["width"].unique())
    parquet_write_atomic(table, args.out)
    inside = table["inside"].dropna() if "inside" in table.columns else []
    print(f"{len(table)} budgets, {int(sum(inside))} of {len(inside)} measured inside their intervals -> {args.out}")


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
    payload = prepare_dataset(args.dataset, args.data_dir, args.download, args.split_seed, args.verify_checksums)
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
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.registry import MIXED_FIGURES  # noqa: PLC0415
    from ..figures.catalog import write_figures  # noqa: PLC0415

    names = ("summary", "sensitivity", "mixed", "mixed_vs_uniform")
    tables = dict(zip(names, read_tables(args.summary, args.sensitivity, args.mixed, args.comparison)))
    paths = write_figures(MIXED_FIGURES, tables, args.out_dir, tuple(args.formats), args.dpi)
    print(f"wrote {len(paths)} figures to {args.out_dir}", flush=True)


def _cmd_aggregate(args) -> None:
    from ..analysis.aggregate import aggregate  # noqa: PLC0415
    from ..analysis.tables import flagged_note  # noqa: PLC0415
    from ..core.io import parquet_write_atomic  # noqa: PLC0415

    summary, ecr, frontier = aggregate(args.cells, args.reference_bits, args.frontier_memory, args.n_budgets)
    note = flagged_note(summary)
    if note:
        print(f"WARNING: {note}", flush=True)
    parquet_write_atomic(summary, args.summary)
    parquet_write_atomic(ecr, args.ecr)
    parquet_write_atomic(frontier, args.frontier)
    print(
        f"{len(summary)} cells -> {args.summary}, {len(ecr)} ECR rows -> {args.ecr}, "
        f"{len(frontier)} frontier rows -> {args.frontier}",
        flush=True,
    )


def _cmd_figures(args) -> None:
    from ..analysis.tables import read_tables  # noqa: PLC0415
    from ..core.registry import FIGURES  # noqa: PLC0415
    from ..figures.catalog import write_figures  # noqa: PLC0415

    names = ("summary", "ecr", "frontier", "scaling")
    tables = dict(zip(names, read_tables(args.summary, args.ecr, args.frontier, args.scaling)))
    paths = write_figures(FIGURES, tables, args.out_dir, tuple(args.formats), args.dpi)
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
    "recommend-designs": _cmd_recommend_designs,
    "recommendations": _cmd_recommendations,
    "search-round": _cmd_search_round,
    "search-table": _cmd_search_table,
    "search-figures": _cmd_search_figures,
    "report-search": _cmd_report_search,
    "report-answer": _cmd_report_answer,
    "report-tables": _cmd_report_tables,
    "report-provenance": _cmd_report_provenance,
    "report-mixed": _cmd_report_mixed,
    "export-frontier": _cmd_export_frontier,
}


EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def _stdout_closed() -> int:
    """The reader of our output went away (``python -m qdesign findings ... | head``):
    stop quietly, as a command killed by SIGPIPE would, without a traceback.
    Later writes (and the interpreter's final flush) go to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def run(argv: list[str]) -> int:
    """Run one command in this process; returns the exit status. User errors
    become one line (unless QDESIGN_DEBUG is set); bugs raise. Output piped
    into a reader that stops early (``| head``) ends the command quietly."""
    try:
        args = _parser().parse_args(argv)
        _COMMANDS[args.command](args)
        sys.stdout.flush()
    except UserError as exc:
        if os.environ.get("QDESIGN_DEBUG"):
            raise
        print(f"qdesign: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except BrokenPipeError:
        return _stdout_closed()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .lifeline import watch_owner  # noqa: PLC0415 - stdlib only

    watch_owner()  # a local job of a Snakemake run ends when that Snakemake dies
    if argv and (argv[0] in WORKER_COMMANDS or argv[0] in WORKER_COMMANDS_IF_READY):
        from .worker import submit  # noqa: PLC0415 - stdlib only

        code = submit(argv, ready_only=argv[0] not in WORKER_COMMANDS)
        if code is not None:
            return code
    return run(argv)
