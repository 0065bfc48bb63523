"""Shared fixtures: the repository root, the shared real datasets, tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qdesign.core.layout import REPO_ROOT

REPO = REPO_ROOT
# real MNIST / Fashion-MNIST in torchvision's layout, beside the checkout
SHARED_DATA = Path(os.environ.get("QDESIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not found under {SHARED_DATA} (set QDESIGN_SHARED_DATA)")
    return SHARED_DATA


def tiny_study(**overrides) -> dict:
    """A digits FCDNN study small enough for unit tests (about a second)."""
    study = {
        "dataset": "digits",
        "model": {"type": "fcdnn", "depth": 2, "widths": [8, 16]},
        "bits": [2, 4],
        "seeds": [0],
        "training": {"epochs": 3, "lr": 0.01, "batch_size": 64},
        "retraining": {"epochs": 1, "lr": 0.001, "batch_size": 64},
    }
    study.update(overrides)
    return study


@pytest.fixture()
def two_method_study(tmp_path):
    """A finished study with methods fixed and learned whose errors differ
    (tests/helpers.py): every consumer must answer per method."""
    from .helpers import write_two_method_study  # noqa: PLC0415

    return write_two_method_study(tmp_path)
