"""Where an export may write: never over a file this run did not create unless
told to (``force``), never over one of its own inputs, never over anything
that is not a regular file; always atomically.

The checks run before any expensive work (:func:`check_target`) and again just
before the file is moved into place (:func:`write_target`). Without ``force``
the move is a hard link, which fails if a file appeared at the target in the
meantime, so even a race cannot replace one. Every refusal and every
operating-system error is one line naming the path (an ExportError).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..core.errors import DiskFullError, ExportError
from ..core.io import current_umask

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _os_error(path: Path, exc: OSError) -> ExportError:
    """An OSError while writing ``path`` as one line; ENOTDIR names the file
    that stands where a folder should be."""
    if exc.errno == errno.ENOTDIR:
        for parent in [*reversed(path.parents)]:
            if parent.exists() and not parent.is_dir():
                return ExportError(f"cannot write {path}: {parent} is a file, not a folder")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc):
        return DiskFullError(f"disk full: cannot write {path}; free some space and rerun")
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOENT and path.parent.is_dir():  # /proc and the like: a folder that takes no new files
        return ExportError(f"cannot write {path}: {path.parent} does not take new files ({reason})")
    return ExportError(f"cannot write {path}: {reason}")


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except OSError:
        pass
    return "is not writable for this user"


def check_target(out: str | Path, inputs: Iterable[str | Path] = (), force: bool = False) -> Path:
    """``out`` if an export may write it; else a one-line ExportError.

    Refused always: a directory, a symbolic link, a device, a pipe or a socket
    at ``out``, and any of ``inputs`` (the cell's model.pt and metrics.parquet,
    the dataset, ...), even through another name. Refused unless ``force``:
    an existing regular file. A folder that cannot hold ``out`` (a file on the
    way, no permission) is found here too, before any work.
    """
    out = Path(out)
    for src in inputs:
        if _same_file(out, Path(src)):
            same = "" if os.path.abspath(out) == os.path.abspath(src) else f" ({src} under another name)"
            raise ExportError(f"{out} is an input of this export{same}; it is never overwritten: choose another path")
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _os_error(out, exc) from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise ExportError(f"{out} is {_kind(st.st_mode)}, not a regular file: choose another output path")
        if not force:
            raise ExportError(f"{out} exists and this run did not write it: pass --force to replace it")
    for parent in out.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise ExportError(f"cannot write {out}: {parent} is not a folder")
            if parent == out.parent and not os.access(parent, os.W_OK | os.X_OK):
                raise ExportError(f"cannot write {out}: {parent} {_why_not_writable(parent)}")
            break
    return out


def write_target(
    out: str | Path,
    writer: Callable[[Path], None],
    inputs: Iterable[str | Path] = (),
    force: bool = False,
    check: Callable[[Path], object] | None = None,
):
    """Write ``out`` atomically through ``writer(temporary path)`` beside it.

    ``check(temporary path)``, if given, runs on the complete file before it
    is moved into place (an export's verification): if it raises, nothing is
    left at ``out`` and a file there (``force``) is untouched. Returns what
    ``check`` returned (None without one).
    """
    inputs = list(inputs)
    out = check_target(out, inputs, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise _os_error(out, exc) from None
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600 whatever the umask
        finally:
            os.close(fd)
        writer(tmp)
        result = check(tmp) if check is not None else None
        check_target(out, inputs, force)  # again: the target may have changed while we worked
        _commit(tmp, out, force)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _os_error(out, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def _commit(tmp: Path, out: Path, force: bool) -> None:
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)  # fails if anything appeared at out: never replaces it
    except FileExistsError:
        raise ExportError(f"{out} appeared while it was being written: pass --force to replace it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if os.path.lexists(out):  # a file system without hard links: check, then rename
            raise ExportError(f"{out} appeared while it was being written: pass --force to replace it") from None
        os.replace(tmp, out)
        return
    tmp.unlink()
