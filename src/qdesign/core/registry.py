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
    md5: tuple[tuple[str, str], ...] = ()  # (file name, md5) of every published file; see _MD5 below

    @property
    def n_examples(self) -> int:
        return self.n_train + self.n_test

    @property
    def checksums(self) -> dict[str, str]:
        """File name (as it lies in ``folder``) -> md5 of the published file."""
        return dict(self.md5)


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# md5 of the published files, checked when a dataset is prepared (qdesign.nn.data). The .gz
# archives and the CIFAR-10 batches: the checksums torchvision publishes with its dataset classes
# (torchvision.datasets.MNIST.resources, FashionMNIST.resources, CIFAR10.train_list / test_list;
# tests/test_data.py compares them whenever torchvision is installed). The uncompressed IDX files
# (torchvision keeps both): md5 of `gzip -dc` of each verified archive, recorded once (torchvision
# 0.29.1's archives, 2026-12).
_MD5 = {
    "mnist": (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
        ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
    ),
    "fashion-mnist": (
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
        ("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
        ("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
    "cifar10": (
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ("test_batch", "40351d587109b95175f43aff81a1287e"),
    ),
}

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
            _MD5["mnist"],
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
            _MD5["fashion-mnist"],
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
            _MD5["cifar10"],
        ),
    )
}


def published_file(md5: str) -> tuple[str, str] | None:
    """(dataset, file name) of the published file with this md5, or None: what a
    file that is not the one expected looks like instead."""
    for name, info in DATASETS.items():
        for fname, digest in info.md5:
            if digest == md5:
                return name, fname
    return None


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

MIXED_TABLES: tuple[str, ...] = ("sensitivity", "mixed", "mixed_vs_uniform")
"""Tables of a study with a ``mixed`` section (layer sensitivity, the mixed cells,
best mixed vs best uniform per memory budget); see :mod:`qdesign.analysis.mixed`."""

SEARCH_TABLE = "search"
"""A study with a ``search`` section: results/<study>/search.parquet, one row per
round and budget (:func:`qdesign.analysis.search.search_table`)."""

SEARCH_CELLS_TABLE = "search_cells"
"""A shipped search study's table (``reference/<profile>/<study>/``): the
metrics of the cells its rounds trained, float networks included. Not named
``summary``, which would make it look like a grid to the reference rules."""

RECOMMEND_TABLES: tuple[str, ...] = ("designs", "recommendations")
"""Tables of a study with ``recommend.budgets`` (the designs named per budget,
and beside them what training them measured); see workflow/rules/recommend.smk."""


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
    search: bool = False  # drawn only for a study with a ``search`` section


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
        FigureInfo("search_progress", "best design per budget vs training seconds", ("search",), search=True),
    )
}

FIGURES: tuple[str, ...] = tuple(n for n, f in FIGURE_INFO.items() if not (f.mixed or f.search))
"""Every study's figures (rule ``figures``)."""

MIXED_FIGURES: tuple[str, ...] = tuple(n for n, f in FIGURE_INFO.items() if f.mixed)
"""Figures of a study with a ``mixed`` section (rule ``mixed_figures``)."""

SEARCH_FIGURES: tuple[str, ...] = tuple(n for n, f in FIGURE_INFO.items() if f.search)
"""Figures of a study with a ``search`` section (rule ``search_figures``; workflow/rules/search.smk)."""


def figure_tables(names) -> tuple[str, ...]:
    """The tables a set of figures is drawn from, in registry order (the inputs of its rule)."""
    wanted = {t for n in names for t in FIGURE_INFO[n].tables}
    return tuple(t for t in (*TABLES, *MIXED_TABLES, SEARCH_TABLE) if t in wanted)
