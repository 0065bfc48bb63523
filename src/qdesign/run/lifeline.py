"""Local jobs end when the Snakemake that started them dies, even by ``kill -9``.

Snakemake runs a local job (aggregate, scaling, figures, export_frontier, the
data steps...) as ``bash -c "python -m qdesign ..."`` in its own process
group, and nothing ends that job when Snakemake is killed outright: it would
finish seconds later and write its outputs into a run nobody watches any
more. (Training jobs are served by the warm worker, which already ends with
Snakemake: :mod:`qdesign.run.worker`.)

:func:`mark_owner`, called when the workflow is parsed, puts the Snakemake
process's identity in the environment its jobs inherit: the boot id, its pid,
its start time and its process group. :func:`watch_owner`, called by every
``python -m qdesign`` command, then ends the command (SIGKILL, like the
worker's jobs) as soon as that process is gone, or at once if it is gone
already. Only a job of that Snakemake is watched: same machine (boot id) and
same process group, which a local job inherits and a cluster job (sbatch
exports the environment) or any other process does not.

Linux only (``/proc``); elsewhere nothing is watched. Standard library only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

ENV = "QDESIGN_RUN_OWNER"
INTERVAL = 0.2  # seconds between checks: a dead Snakemake's jobs end within about this


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def owner_alive(pid: int, start: str) -> bool:
    """Whether process ``pid`` still runs and is the one that started at ``start`` (not a reused pid)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X") and st[1] == start


def mark_owner(pid: int | None = None) -> str | None:
    """Put this process's identity in ``os.environ[ENV]`` for the jobs it starts; the value, or None off Linux."""
    pid = os.getpid() if pid is None else pid
    boot, st = _boot_id(), _stat(pid)
    if boot is None or st is None:
        return None
    value = f"{boot}:{pid}:{st[1]}:{os.getpgid(pid)}"
    os.environ[ENV] = value
    return value


def _end() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(pid: int, start: str, interval: float) -> None:
    while owner_alive(pid, start):
        time.sleep(interval)
    _end()


def watch_owner(interval: float = INTERVAL) -> bool:
    """End this process when the Snakemake that started it dies (see the module
    doc). Returns whether it is watched; a process that is no local job of a
    Snakemake run (no or a foreign ``ENV``) is left alone."""
    value = os.environ.get(ENV)
    if not value:
        return False
    try:
        boot, pid, start, pgid = value.split(":")
        pid, pgid = int(pid), int(pgid)
    except ValueError:
        return False
    if boot != _boot_id() or os.getpgrp() != pgid:
        return False  # another machine (a cluster job), or not started by that Snakemake
    if not owner_alive(pid, start):
        _end()  # Snakemake died before this job got going: it must not write anything now
    threading.Thread(target=_watch, args=(pid, start, interval), name="qdesign-lifeline", daemon=True).start()
    return True
