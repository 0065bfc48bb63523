"""Atomic file writes: a killed job never leaves a file a later run would trust.

Every output is written to a temporary name in the destination folder and
renamed into place (``os.replace`` is atomic on POSIX file systems). The
temporary file gets the mode a plain ``open`` would give (0o666 minus the
umask), so colleagues sharing a project folder can read the results, and a
full disk is one line naming the destination, not a C++ stream error.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskFullError

_UMASK_LOCK = threading.Lock()
_LOW_SPACE = 64 * 2**20  # below this much free space a failed write is taken to be a full disk
# what torch.save's C++ writer says when a write fails (measured: "unexpected pos" on /dev/full)
_TORCH_WRITE_ERRORS = ("iostream error", "PytorchStreamWriter", "inline_container.cc")


def current_umask() -> int:
    """The process umask, read without changing it where the kernel allows.

    ``os.umask`` can only be read by setting it; between the set and the
    restore another thread creating a file would get the wrong mode. Linux
    reports the umask in /proc/self/status (kernel >= 4.7), which is
    race-free; elsewhere the set-and-restore runs under a lock (which guards
    only this module's own callers).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    """ENOSPC (also as an errno-less "No space left on device"), or torch's
    writer errors (``basic_ios::clear: iostream error``, ``PytorchStreamWriter
    failed``, ``unexpected pos``), which carry no errno, with almost no free
    space left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if isinstance(exc, OSError | RuntimeError) and "No space left on device" in text:
        return True
    if isinstance(exc, RuntimeError) and any(t in text for t in _TORCH_WRITE_ERRORS):
        try:
            return shutil.disk_usage(folder).free < _LOW_SPACE
        except OSError:
            return False
    return False


@contextmanager
def atomic_path(dest: str | Path):
    """Yield a temporary path beside ``dest``; rename it to ``dest`` on success,
    delete it on failure. A full disk raises :class:`DiskFullError`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600 whatever the umask
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except BaseException as exc:
        full = _is_disk_full(exc, dest.parent)  # decided before the temporary file frees its space
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise DiskFullError(
                f"disk full: cannot write {dest} (no space left on the device of "
                f"{dest.parent}); free some space and rerun"
            ) from None
        raise


def write_atomic(dest: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(dest) as tmp:
        writer(tmp)


def produced_by_pipeline(path: str | Path) -> bool:
    """Whether ``path`` lies in the pipeline's ``results`` tree (at most four
    folders below a folder named ``results``: results/data/D.pt,
    results/STUDY/float/wW-sS/model.pt), which the pipeline rebuilds, so
    deleting a file there is safe advice. A file anywhere else was supplied by
    the user and is never suggested for deletion."""
    return any(p.name == "results" for p in list(Path(path).resolve().parents)[:4])


def write_text_atomic(dest: str | Path, text: str) -> None:
    write_atomic(dest, lambda p: Path(p).write_text(text))


def parquet_write_atomic(df, dest: str | Path) -> None:
    write_atomic(dest, lambda p: df.to_parquet(p, index=False))
