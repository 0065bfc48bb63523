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

from .constants import FLOAT_BITS
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


def bits_tag(bits) -> str:
    """The ``{bits}`` of a path: ``4`` for uniform bits, ``8-2-2-4`` for a
    per-layer pattern (first to last)."""
    if isinstance(bits, (list, tuple)):
        return "-".join(str(int(b)) for b in bits)
    return str(int(bits))


def parse_bits_tag(tag: str) -> int | tuple[int, ...]:
    """Inverse of :func:`bits_tag`: ``"4"`` -> 4, ``"8-2-2-4"`` -> (8, 2, 2, 4)."""
    parts = [int(p) for p in str(tag).split("-")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def cell_dir(study: str, width: int, bits, seed: int, method: str = DEFAULT_METHOD) -> str:
    """Folder of one cell; float cells (bits == FLOAT_BITS) have no method."""
    if not isinstance(bits, (list, tuple)) and int(bits) == FLOAT_BITS:
        return float_dir(study, width, seed)
    return QUANT_DIR.format(study=study, method=method, bits=bits_tag(bits), width=int(width), seed=int(seed))


def mean_tag(mean_bits: float) -> str:
    """The ``{mean}`` of a budget cell's path: ``3`` for 3.0, ``2.5`` for 2.5."""
    return f"{float(mean_bits):g}"


def budget_dir(study: str, width: int, mean_bits: float, seed: int, method: str = DEFAULT_METHOD) -> str:
    return BUDGET_DIR.format(study=study, method=method, mean=mean_tag(mean_bits), width=int(width), seed=int(seed))


def sensitivity_file(study: str, width: int, seed: int) -> str:
    return SENSITIVITY_FILE.format(study=study, width=int(width), seed=int(seed))


def table_file(study: str, table: str) -> str:
    return TABLE.format(study=study, table=table)


def figure_file(study: str, figure: str, ext: str) -> str:
    return FIGURE.format(study=study, figure=figure, ext=ext)
