"""Where a result came from: the commit of the checkout that made it. Torch-free
(the report pages and the shipped references both record it)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(repo: Path) -> str | None:
    """The HEAD commit of the git checkout holding ``repo``, or None outside one."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None
