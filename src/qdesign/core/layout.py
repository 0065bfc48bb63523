"""The results path layout, defined once. Snakemake rules use the patterns
(with ``{wildcards}``), Python code the functions; both come from here.

    results/data/{dataset}.pt                              prepared dataset
    results/data/splits/{split}.pt                         a normalised train / val / test split (specs.split_tag)
    results/{study}/float/w{width}-s{seed}/                float cell
    results/{study}/{method}/b{bits}/w{width}-s{seed}/     quantized cell
    results/{study}/{method}/m{mean}/w{width}-s{seed}/     mixed cell for a budget of {mean} bits per weight
    results/{study}/sensitivity/w{width}-s{seed}.parquet   layer sensitivity of one float network
    results/{study}/{table}.parquet                        summary, ecr, frontier, ..., search
    results/{study}/search/round-{round}.json              one round of an adaptive search (its plan)
    results/{study}/figures/{figure}.{ext}
    results/{study}/report/{page}.html  results/report/provenance.html
    results/{study}/export/manifest.parquet                after `snakemake export`
    results/logs/{rule}/{job}.log  results/benchmarks/{rule}/{job}.tsv
    reference/{profile}/{ref_study}/{table}.parquet        shipped reference tables (tracked in git)
    results/reference/{profile}/{ref_study}/figures/{figure}.{ext}
    results/reference/{profile}/{ref_study}/report/{page}.html  results/reference/{profile}/report/provenance.html

A function called with a wildcard for an argument (``table_file("{study}",
"summary")``) gives the rule pattern, with values it gives one file.
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
SEARCH_ROUND = RESULTS + "/{study}/search/round-{round}.json"
FIGURE = RESULTS + "/{study}/figures/{figure}.{ext}"
REPORT_PAGE = RESULTS + "/{study}/report/{page}.html"
PROVENANCE_PAGE = RESULTS + "/report/provenance.html"
EXPORT_MANIFEST = RESULTS + "/{study}/export/manifest.parquet"
REFERENCE_TABLE = "reference/{profile}/{ref_study}/{table}.parquet"
REFERENCE_FIGURE = RESULTS + "/reference/{profile}/{ref_study}/figures/{figure}.{ext}"
REFERENCE_REPORT_PAGE = RESULTS + "/reference/{profile}/{ref_study}/report/{page}.html"
REFERENCE_PROVENANCE_PAGE = RESULTS + "/reference/{profile}/report/provenance.html"
REFERENCE_CONFIG = "reference/{profile}/config.yaml"
REFERENCE_PROVENANCE = "reference/{profile}/provenance.json"
REFERENCE_CATEGORY = "{ref_study} (reference {profile})"
"""A reference study's category in the Snakemake report (no colon: docutils reads
"name: text" as a link target, and two such names collide)."""
WORKER_LOG = RESULTS + "/logs/worker.log"
# job names of the per-cell rules' logs and benchmarks
FLOAT_JOB = "{study}/w{width}-s{seed}"
QUANT_JOB = "{study}/{method}/b{bits}/w{width}-s{seed}"
BUDGET_JOB = "{study}/{method}/m{mean}/w{width}-s{seed}"
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


def search_round_file(study: str, round_) -> str:
    """The plan of one round of a study's adaptive search (``round_`` may be a wildcard)."""
    return SEARCH_ROUND.format(study=study, round=round_)


def figure_file(study: str, figure: str, ext: str) -> str:
    return FIGURE.format(study=study, figure=figure, ext=ext)


def study_dir(study: str) -> str:
    return f"{RESULTS}/{study}"


def report_page(study: str, page: str) -> str:
    return REPORT_PAGE.format(study=study, page=page)


def export_manifest(study: str) -> str:
    return EXPORT_MANIFEST.format(study=study)


def reference_table(table: str, profile: str = "{profile}", ref_study: str = "{ref_study}") -> str:
    return REFERENCE_TABLE.format(profile=profile, ref_study=ref_study, table=table)


def reference_figure(profile: str, ref_study: str, figure: str, ext: str) -> str:
    return REFERENCE_FIGURE.format(profile=profile, ref_study=ref_study, figure=figure, ext=ext)


def reference_report_page(profile: str, ref_study: str, page: str) -> str:
    return REFERENCE_REPORT_PAGE.format(profile=profile, ref_study=ref_study, page=page)


def reference_provenance_page(profile: str) -> str:
    return REFERENCE_PROVENANCE_PAGE.format(profile=profile)


def log_file(rule: str, job: str | None = None) -> str:
    """``results/logs/<rule>/<job>.log`` (``job`` may hold wildcards), or
    ``results/logs/<rule>.log`` for a rule that runs once."""
    return f"{RESULTS}/logs/{rule}.log" if job is None else f"{RESULTS}/logs/{rule}/{job}.log"


def benchmark_file(rule: str, job: str) -> str:
    """``results/benchmarks/<rule>/<job>.tsv`` (Snakemake's per-job benchmark)."""
    return f"{RESULTS}/benchmarks/{rule}/{job}.tsv"
