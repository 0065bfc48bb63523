"""Registries: the datasets, retraining methods, tables and figures the
pipeline knows. Adding a dataset, a method or a figure starts here; the config
schema's enums and Snakemake's wildcard constraints are generated from (and
tested against) these lists. Torch-free: Snakemake imports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs to know about a dataset before reading it."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    n_classes: int
    n_train: int  # official training pool (before the validation split)
    n_test: int
    reader: str  # "digits" | "idx" | "cifar10": which reader in qdesign.nn.data
    folder: str  # torchvision's folder under data_dir ("" if bundled)
    files: tuple[str, ...]  # the files the reader needs in that folder
    torchvision_class: str | None  # torchvision.datasets class that downloads it
    source: str
    license: str

    @property
    def n_examples(self) -> int:
        return self.n_train + self.n_test


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "digits",
            (1, 8, 8),
            10,
            1437,
            360,
            "digits",
            "",
            (),
            None,
            "scikit-learn's bundled UCI optical digits (sklearn.datasets.load_digits); 20% stratified test split",
            "CC BY 4.0 (UCI ML repository)",
        ),
        DatasetInfo(
            "mnist",
            (1, 28, 28),
            10,
            60000,
            10000,
            "idx",
            "MNIST/raw",
            _IDX_FILES,
            "MNIST",
            "LeCun, Cortes & Burges, MNIST handwritten digits",
            "CC BY-SA 3.0",
        ),
        DatasetInfo(
            "fashion-mnist",
            (1, 28, 28),
            10,
            60000,
            10000,
            "idx",
            "FashionMNIST/raw",
            _IDX_FILES,
            "FashionMNIST",
            "Xiao, Rasul & Vollgraf, Fashion-MNIST (Zalando Research)",
            "MIT",
        ),
        DatasetInfo(
            "cifar10",
            (3, 32, 32),
            10,
            50000,
            10000,
            "cifar10",
            "cifar-10-batches-py",
            tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
            "CIFAR10",
            "Krizhevsky, Learning Multiple Layers of Features from Tiny Images (CIFAR-10)",
            "no explicit license; free for research use as distributed by the authors",
        ),
    )
}

METHODS: tuple[str, ...] = ("fixed", "epoch", "learned")
"""Retraining methods (implementations: :mod:`qdesign.nn.methods`); ``fixed`` is
the paper's (L2-optimal step of the float weights, kept during retraining)."""

DEFAULT_METHOD = "fixed"

TABLES: tuple[str, ...] = ("summary", "ecr", "frontier", "scaling")
"""Per-study tables, results/<study>/<name>.parquet: summary, ecr and frontier
from the aggregate rule, scaling (the fitted law) from the scaling rule."""

MIXED_TABLES: tuple[str, ...] = ("sensitivity", "mixed", "mixed_vs_uniform")
"""Tables of a study with a ``mixed`` section (layer sensitivity, the mixed cells,
best mixed vs best uniform per memory budget); see :mod:`qdesign.analysis.mixed`."""


@dataclass(frozen=True)
class FigureInfo:
    """One figure of a study, ``results/<study>/figures/<name>.<format>``: what
    it shows (its title, after the study's name) and the tables it is drawn
    from. Its drawer is :data:`qdesign.figures.catalog.DRAWERS` ``[name]`` (a
    name without one fails at import), its caption
    ``workflow/report/<name>.rst``."""

    name: str
    title: str
    tables: tuple[str, ...]
    mixed: bool = False  # drawn only for a study with a ``mixed`` section


FIGURE_INFO: dict[str, FigureInfo] = {
    f.name: f
    for f in (
        FigureInfo("error_vs_weights", "test error vs network size", ("summary",)),
        FigureInfo("error_vs_memory", "test error vs weight memory", ("summary", "frontier")),
        FigureInfo("ecr_vs_width", "effective compression ratio", ("summary", "ecr")),
        FigureInfo("retrain_gap", "quantization loss before/after retraining", ("summary",)),
        FigureInfo("method_comparison", "retraining methods", ("summary",)),
        FigureInfo("scaling_fit", "scaling law err(N, b)", ("summary", "scaling")),
        FigureInfo("ecr_bands", "ECR read off and from the law", ("ecr", "scaling")),
        FigureInfo("training_curves", "training and retraining curves per width", ("summary",)),
        FigureInfo(
            "sensitivity", "layer sensitivity (one layer quantized, the others float)", ("sensitivity",), mixed=True
        ),
        FigureInfo("mixed_frontier", "uniform and mixed precision", ("summary", "mixed", "mixed_vs_uniform"), True),
    )
}

FIGURES: tuple[str, ...] = tuple(n for n, f in FIGURE_INFO.items() if not f.mixed)
"""Every study's figures (rule ``figures``)."""

MIXED_FIGURES: tuple[str, ...] = tuple(n for n, f in FIGURE_INFO.items() if f.mixed)
"""Figures of a study with a ``mixed`` section (rule ``mixed_figures``)."""


def figure_tables(names) -> tuple[str, ...]:
    """The tables a set of figures is drawn from, in registry order (the inputs of its rule)."""
    wanted = {t for n in names for t in FIGURE_INFO[n].tables}
    return tuple(t for t in (*TABLES, *MIXED_TABLES) if t in wanted)
