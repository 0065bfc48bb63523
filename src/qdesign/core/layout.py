"""The results path layout, defined once. Snakemake rules use the patterns
(with ``{wildcards}``), Python code the functions; both come from here.

    results/data/{dataset}.pt                              prepared dataset
    results/data/splits/{split}.pt                         a normalised train / val / test split (specs.split_tag)
    results/{study}/float/w{width}-s{seed}/                float cell
    results/{study}/{method}/b{bits}/w{width}-s{seed}/     quantized cell
    results/{study}/{method}/m{mean}/w{width}-s{seed}/     mixed cell for a budget of {mean} bits per weight
    results/{study}/sensitivity/w{width}-s{seed}.parquet   layer sensitivity of one float network
    results/{study}/{table}.parquet                        summary, ecr, frontier, ...
    results/{study}/figures/{figure}.{ext}
    results/logs/{rule}/...  results/benchmarks/{rule}/...
"""

from __future__ import annotations

from pathlib import Path

from .precision import Precision
from .registry import DEFAULT_METHOD

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The checkout: the Snakefile, workflow/, config/ and src/ (qdesign is installed
editable from it, or imported from its src/ by the rules)."""

RESULTS = "results"
DATA_FILE = RESULTS + "/data/{dataset}.pt"
SPLITS_FILE = RESULTS + "/data/splits/{split}.pt"
FLOAT_DIR = RESULTS + "/{study}/float/w{width}-s{seed}"
QUANT_DIR = RESULTS + "/{study}/{method}/b{bits}/w{width}-s{seed}"
BUDGET_DIR = RESULTS + "/{study}/{method}/m{mean}/w{width}-s{seed}"
CELL_DIR = RESULTS + "/{study}/{method}/{precision}/w{width}-s{seed}"  # {precision}: Precision.tag
SENSITIVITY_FILE = RESULTS + "/{study}/sensitivity/w{width}-s{seed}.parquet"
TABLE = RESULTS + "/{study}/{table}.parquet"
FIGURE = RESULTS + "/{study}/figures/{figure}.{ext}"
CELL_FILES = ("model.pt", "metrics.parquet")
RESERVED = frozenset({"data", "logs", "benchmarks", "reference"})
"""Names under results/ that are not studies."""


def data_file(dataset: str) -> str:
    return DATA_FILE.format(dataset=dataset)


def splits_file(split: str) -> str:
    """``split``: :func:`qdesign.core.specs.split_tag` of the split's key."""
    return SPLITS_FILE.format(split=split)


def float_dir(study: str, width: int, seed: int) -> str:
    return FLOAT_DIR.format(study=study, width=int(width), seed=int(seed))


def cell_dir(study: str, width: int, precision, seed: int, method: str | None = DEFAULT_METHOD) -> str:
    """Folder of one cell: ``precision`` is a :class:`~qdesign.core.precision.Precision`
    or what :meth:`~qdesign.core.precision.Precision.coerce` takes (bits, a
    per-layer tuple); float cells have no method folder."""
    precision = Precision.coerce(precision)
    if precision.is_float:
        return float_dir(study, width, seed)
    return CELL_DIR.format(
        study=study, method=method or DEFAULT_METHOD, precision=precision.tag, width=int(width), seed=int(seed)
    )


def sensitivity_file(study: str, width: int, seed: int) -> str:
    return SENSITIVITY_FILE.format(study=study, width=int(width), seed=int(seed))


def table_file(study: str, table: str) -> str:
    return TABLE.format(study=study, table=table)


def figure_file(study: str, figure: str, ext: str) -> str:
    return FIGURE.format(study=study, figure=figure, ext=ext)
