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


def torch_load_checked(path: str | Path, what: str, error: type[Exception], keys: tuple[str, ...],
                       version: int, missing_hint: str = "") -> dict:
    """Load a torch file this project wrote. A missing, unreadable, incomplete
    or other-format file raises ``error`` with one line naming the file."""
    import torch  # noqa: PLC0415 - keep this module importable without torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}{missing_hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise error(f"corrupt {what} {path} ({type(exc).__name__}); delete it and rerun") from None
    if not isinstance(obj, dict) or any(k not in obj for k in (*keys, "format_version")):
        raise error(f"corrupt {what} {path} (missing keys); delete it and rerun")
    if obj["format_version"] != version:
        raise error(f"{what} {path} has format {obj['format_version']}, expected {version}; delete it and rerun")
    return obj


def write_text_atomic(dest: str | Path, text: str) -> None:
    write_atomic(dest, lambda p: Path(p).write_text(text))


def parquet_write_atomic(df, dest: str | Path) -> None:
    write_atomic(dest, lambda p: df.to_parquet(p, index=False))
