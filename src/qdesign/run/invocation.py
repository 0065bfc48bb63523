"""The command line that runs this checkout's workflow from Python (the tests,
the benchmarks, the GPU check): one definition, so that every caller runs the
same Snakefile the same way."""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.layout import REPO_ROOT

SNAKEFILE = REPO_ROOT / "Snakefile"


def snakemake_command(workdir: str | Path, *args) -> list[str]:
    """``python -m snakemake`` with this checkout's Snakefile, run in
    ``workdir``, followed by ``args`` (made strings)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        *map(str, args),
    ]
