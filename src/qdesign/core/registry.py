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

METHODS: tuple[str, ...] = ("fixed", "epoch", "learned", "distill", "distill-fixed")
"""Retraining methods (implementations: :mod:`qdesign.nn.methods`); ``fixed`` is
the paper's (L2-optimal step of the float weights, kept during retraining)."""

DEFAULT_METHOD = "fixed"

STEP_KEYS: tuple[str, ...] = ("step_lr_factor", "step_weight_decay", "step_warmup_epochs")
"""Retraining keys of the learned steps' own optimizer settings (their parameter group in ``fit``)."""
DISTILL_KEYS: tuple[str, ...] = ("distill_temperature", "distill_weight")
"""Retraining keys of the distillation loss (the float network's softened outputs as a second target)."""

METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "fixed": (),
    "epoch": (),
    "learned": STEP_KEYS,
    "distill": STEP_KEYS + DISTILL_KEYS,
    "distill-fixed": DISTILL_KEYS,
}
"""The method-specific retraining keys each method reads. A cell's spec carries
only its own method's keys, so a key that cannot change a cell's numbers (the
step's learning rate for ``fixed``) does not change its hash nor rerun it."""


def method_retraining(retraining: dict, method: str) -> dict:
    """The retraining settings of one ``method``'s cells: the study's
    ``retraining`` without ``methods`` and without the other methods' keys."""
    other = {k for keys in METHOD_KEYS.values() for k in keys} - set(METHOD_KEYS.get(method, ()))
    return {k: v for k, v in retraining.items() if k != "methods" and k not in other}


TABLES: tuple[str, ...] = ("summary", "ecr", "frontier", "scaling")
"""Per-study tables, results/<study>/<name>.parquet: summary, ecr and frontier
from the aggregate rule, scaling (the fitted law) from the scaling rule."""

FIGURES: tuple[str, ...] = (
    "error_vs_weights",
    "error_vs_memory",
    "ecr_vs_width",
    "retrain_gap",
    "method_comparison",
    "scaling_fit",  # needs scaling.parquet (qdesign.analysis.scaling)
    "ecr_bands",
)
MIXED_TABLES: tuple[str, ...] = ("sensitivity", "mixed", "mixed_vs_uniform")
"""Tables of a study with a ``mixed`` section (layer sensitivity, the mixed cells,
best mixed vs best uniform per memory budget); see :mod:`qdesign.analysis.mixed`."""

MIXED_FIGURES: tuple[str, ...] = ("sensitivity", "mixed_frontier")
"""Figures of a study with a ``mixed`` section."""

SCALING_FIGURES: tuple[str, ...] = ("scaling_fit", "ecr_bands")  # drawn only from a scaling.parquet
"""Per-study figures, results/<study>/figures/<name>.<format>; drawn by
:func:`qdesign.figures.study.figures`, captioned in workflow/report/<name>.rst."""
