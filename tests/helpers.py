"""Reusable test data: a finished study with two retraining methods whose
numbers differ, as the pipeline lays it out (per-cell metrics files under
results/<study>/, and the aggregate tables beside them).

Any consumer that aggregates cells must answer per method: pooling the
methods as if they were seeds gives other numbers (twice the seeds, twice the
widths, means between the two methods), which ``truth`` lets a test tell
apart. Use it through the ``two_method_study`` fixture (tests/conftest.py) or
:func:`write_two_method_study`::

    def test_my_consumer_answers_per_method(two_method_study):
        t = two_method_study
        got = my_consumer(t.study_dir)
        want = t.truth.query("method == 'learned' and bits == 2")  # error, n_seeds, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from qdesign.analysis.aggregate import aggregate
from qdesign.core.constants import FLOAT_BITS
from qdesign.core.layout import cell_dir, table_file

STUDY = "two-methods"
WIDTHS = (16, 32, 64, 128)
BITS = (2, 4)
SEEDS = (0, 1)
METHODS = ("fixed", "learned")
# retrained error above float, per method and bits, at width 64 (scaled by (64 / width) ** 0.5):
# learned is much better at 2 bits, fixed a little better at 4 bits, so "the best method" depends on the bits
EXCESS = {("fixed", 2): 0.060, ("learned", 2): 0.020, ("fixed", 4): 0.008, ("learned", 4): 0.014}


def n_weights(width: int) -> int:
    """An FCDNN of two hidden layers on 8x8 digits: 64 x w + w x w + w x 10."""
    return 64 * width + width * width + 10 * width


def float_error(width: int) -> float:
    return 0.02 + 0.6 / width**0.7


def cell_error(width: int, bits: int, seed: int, method: str | None) -> float:
    """The test error of one cell: deterministic, seeds 0.4 points apart."""
    base = float_error(width) + (0.0 if method is None else EXCESS[(method, bits)] * (64 / width) ** 0.5)
    return base + 0.004 * (seed - 0.5)


def direct_error(width: int, bits: int) -> float:
    """Right after quantization: the same for every method (one float network)."""
    return float_error(width) + (0.25 if bits == 2 else 0.02) * (64 / width) ** 0.5


def cell_row(width: int, bits: int, seed: int, method: str | None, study: str = STUDY) -> dict:
    """One cell's metrics row, with the columns the pipeline writes (qdesign.nn.cells)."""
    n_w, n_b = n_weights(width), 2 * width + 10
    quantized = bits < FLOAT_BITS
    err = cell_error(width, bits, seed, method)
    direct = direct_error(width, bits) + 0.004 * (seed - 0.5) if quantized else np.nan
    return {
        "study": study,
        "dataset": "digits",
        "model": "fcdnn",
        "depth": 2,
        "width": width,
        "bits": bits,
        "method": method,
        "layer_bits": [bits] * 3,
        "seed": seed,
        "n_weights": n_w,
        "n_biases": n_b,
        "memory_bits_weights": n_w * bits,
        "memory_bits_total": n_w * bits + 32 * n_b + (3 * 32 if quantized else 0),
        "n_train": 1221,
        "n_val": 216,
        "n_test": 360,
        "device": "cpu",
        "threads": 1,
        "config_hash": f"h{width}-{bits}-{seed}-{method}",
        "float_hash": f"f{width}-{seed}",
        "qdesign_version": "test",
        "torch_version": "test",
        "test_error": err,
        "val_error": err + 0.001,
        "direct_test_error": direct,
        "direct_val_error": direct,
        "steps": [0.1, 0.05, 0.2] if quantized else [],
        "quantized_layers": 3 if quantized else 0,
        "chance_level": False,
        "epochs_run": 10,
        "best_epoch": 8,
        "train_seconds": 1.0,
        "evaluate_seconds": 0.1,
        "load_seconds": 0.1,
        "write_seconds": 0.1,
        "job_seconds": 1.5,
        "max_rss_mb": 300.0,
    }


def two_method_rows(
    widths=WIDTHS, bits=BITS, seeds=SEEDS, methods=METHODS, study: str = STUDY
) -> list[tuple[str, dict]]:
    """(cell folder, metrics row) of every cell: per width and seed one float
    network, and each bits value once per method."""
    out = []
    for w in widths:
        for s in seeds:
            out.append((cell_dir(study, w, FLOAT_BITS, s), cell_row(w, FLOAT_BITS, s, None, study)))
            for b in bits:
                for m in methods:
                    out.append((cell_dir(study, w, b, s, m), cell_row(w, b, s, m, study)))
    return out


@dataclass
class TwoMethodStudy:
    """A written study: ``root/results/<study>/`` holds every cell's
    metrics.parquet and summary / ecr / frontier.parquet."""

    root: Path
    study: str
    cells: list[Path]
    summary: pd.DataFrame
    ecr: pd.DataFrame
    frontier: pd.DataFrame
    widths: tuple[int, ...] = WIDTHS
    bits: tuple[int, ...] = BITS
    seeds: tuple[int, ...] = SEEDS
    methods: tuple[str, ...] = METHODS
    truth: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def study_dir(self) -> Path:
        return self.root / "results" / self.study

    def table(self, name: str) -> Path:
        return self.root / table_file(self.study, name)

    def mean(self, method: str, width: int, bits: int) -> float:
        """The per-method seed mean of one cell: what a correct consumer reports."""
        t = self.truth
        return float(t[(t.method == method) & (t.width == width) & (t.bits == bits)]["error"].iloc[0])

    def pooled(self, width: int, bits: int) -> float:
        """The wrong answer: both methods averaged as if they were seeds."""
        t = self.truth
        return float(t[(t.method != "float") & (t.width == width) & (t.bits == bits)]["error"].mean())


def per_method_truth(widths=WIDTHS, bits=BITS, seeds=SEEDS, methods=METHODS) -> pd.DataFrame:
    """Per (method, width, bits): the seed mean and std of the test error, the
    direct error and the number of seeds, from the formulas (not the tables).
    Float rows have method "float"."""
    rows = []
    for w in widths:
        errs = [cell_error(w, FLOAT_BITS, s, None) for s in seeds]
        rows.append(dict(method="float", width=w, bits=FLOAT_BITS, error=np.mean(errs), n_seeds=len(seeds)))
        for b in bits:
            for m in methods:
                errs = [cell_error(w, b, s, m) for s in seeds]
                rows.append(
                    dict(
                        method=m,
                        width=w,
                        bits=b,
                        error=np.mean(errs),
                        error_std=np.std(errs, ddof=1) if len(errs) > 1 else np.nan,
                        direct_error=direct_error(w, b),
                        n_seeds=len(seeds),
                        n_weights=n_weights(w),
                    )
                )
    return pd.DataFrame(rows)


def write_two_method_study(root: str | Path, **grid) -> TwoMethodStudy:
    """Write the cells and the aggregate tables under ``root/results/``.
    ``grid``: widths, bits, seeds, methods, study (defaults above)."""
    root = Path(root)
    study = grid.pop("study", STUDY)
    cells = []
    for folder, row in two_method_rows(study=study, **grid):
        path = root / folder / "metrics.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([row]).to_parquet(path, index=False)
        cells.append(path)
    summary, ecr, frontier = aggregate(cells, n_budgets=12)
    for name, df in (("summary", summary), ("ecr", ecr), ("frontier", frontier)):
        df.to_parquet(root / table_file(study, name), index=False)
    kw = {k: tuple(v) for k, v in grid.items()}
    return TwoMethodStudy(root, study, cells, summary, ecr, frontier, truth=per_method_truth(**grid), **kw)


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.row, self.cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.row = []
            self.tables[-1].append(self.row)
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.row is not None:
            self.row.append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def html_tables(text: str) -> list[pd.DataFrame]:
    """The tables of an HTML page (header row first), as strings; no lxml needed."""
    parser = _Tables()
    parser.feed(text)
    return [pd.DataFrame(t[1:], columns=t[0]) for t in parser.tables if t]
