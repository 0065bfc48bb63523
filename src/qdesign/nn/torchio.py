"""Torch files this project writes and reads (checkpoints, prepared datasets,
splits): saved atomically, loaded with checks that turn a missing, corrupt or
other-format file into one line naming it. The torch side of
:mod:`qdesign.core.io`, which stays torch-free."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.io import produced_by_pipeline, write_atomic


def torch_save_atomic(obj, dest: str | Path) -> None:
    write_atomic(dest, lambda p: torch.save(obj, p))


def torch_load_checked(
    path: str | Path,
    what: str,
    error: type[Exception],
    keys: tuple[str, ...],
    version: int | None,
    missing_hint: str = "",
    produced: bool | None = None,
    mmap: bool = False,
) -> dict:
    """Load a torch file this project wrote. A missing, unreadable, incomplete
    or other-format file raises ``error`` with one line naming the file.
    ``version`` None: the caller checks ``format_version`` (a file of one of
    several kinds). ``mmap``: tensors map the file (copy-on-write) instead of being read into
    memory; the operating system's page cache then serves every process that
    maps the same file.

    Only a file the pipeline produced (``produced``; by default: it lies under
    a ``results`` folder) is met with "delete it and rerun"; a file the user
    supplied is never suggested for deletion.
    """
    path = Path(path)
    if produced is None:
        produced = produced_by_pipeline(path)
    advice = "delete it and rerun" if produced else "check that this is the right file"
    if not path.is_file():
        raise error(f"{what} not found: {path}{missing_hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise error(f"corrupt {what} {path} ({type(exc).__name__}); {advice}") from None
    if not isinstance(obj, dict) or any(k not in obj for k in (*keys, "format_version")):
        raise error(f"corrupt {what} {path} (missing keys); {advice}")
    if version is not None and obj["format_version"] != version:
        raise error(f"{what} {path} has format {obj['format_version']}, expected {version}; {advice}")
    return obj
