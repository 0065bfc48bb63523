"""Atomic file writes: a killed job never leaves a file a later run would trust.

Every output is written to a temporary name in the destination folder and
renamed into place (``os.replace`` is atomic on POSIX file systems).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(dest: str | Path):
    """Yield a temporary path beside ``dest``; rename it to ``dest`` on success,
    delete it on failure."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(dest: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(dest) as tmp:
        writer(tmp)


def torch_save_atomic(obj, dest: str | Path) -> None:
    import torch  # noqa: PLC0415 - keep this module importable without torch

    write_atomic(dest, lambda p: torch.save(obj, p))


def parquet_write_atomic(df, dest: str | Path) -> None:
    write_atomic(dest, lambda p: df.to_parquet(p, index=False))
