"""What the run's own console says at its end: every cell this run flagged
(at chance level, diverged) or failed, one line each, gathered from the jobs'
logs. The jobs write their warnings and one-line errors into their own logs
(``results/logs/<rule>/...``), which a person watching ``snakemake`` does not
read; Snakemake's ``onsuccess`` / ``onerror`` call :func:`report_run`.

Standard library only: Snakemake imports it when it parses the workflow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MARKERS = ("WARNING:", "qdesign: error:")
"""Lines of a job's log that a person must see: a flagged result, a failed job."""


def _recent_logs(root: Path, since: float):
    """Log files under ``root`` written at or after ``since`` (a second of slack for coarse clocks)."""
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.name.endswith(".log") and e.stat().st_mtime >= since - 1.0:
                    yield Path(e.path)
            except OSError:
                continue


def run_messages(log_root: str | Path, since: float) -> list[str]:
    """``log: line`` for every warning or one-line error in the logs this run wrote, sorted by log."""
    out = []
    for path in sorted(_recent_logs(Path(log_root), since)):
        try:
            with open(path, errors="replace") as f:
                lines = [ln.rstrip("\n") for ln in f if ln.startswith(MARKERS)]
        except OSError:
            continue
        out += [f"{path}: {ln}" for ln in dict.fromkeys(lines)]
    return out


def report_run(log_root: str | Path, since: float, limit: int = 40, stream=None) -> list[str]:
    """Print this run's flagged and failed cells (at most ``limit`` lines, and how
    many more) on the console; returns the lines."""
    stream = stream or sys.stderr
    lines = run_messages(log_root, since)
    if lines:
        n_err = sum("qdesign: error:" in ln for ln in lines)
        n_warn = len(lines) - n_err
        print(f"qdesign: {n_warn} warning(s) and {n_err} failed job(s) in this run, from their logs:", file=stream)
        for ln in lines[:limit]:
            print(f"  {ln}", file=stream)
        if len(lines) > limit:
            print(f"  ... and {len(lines) - limit} more (grep -r '^WARNING\\|^qdesign: error' {log_root})", file=stream)
        stream.flush()
    return lines
