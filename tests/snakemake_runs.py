"""Run Snakemake on a test's config in a scratch folder and read what it did."""

import os
import re
import subprocess
from pathlib import Path

import yaml

from qdesign.run.invocation import snakemake_command

DIGITS_GRID = {
    "dataset": "digits",
    "model": {"type": "fcdnn", "depth": 2, "widths": [8, 16, 32, 64]},
    "bits": [2, 4],
    "seeds": [0, 1],
    "training": {"epochs": 3, "lr": 0.01, "batch_size": 64},
    "retraining": {"epochs": 1, "lr": 0.001, "batch_size": 64},
}
"""A small digits FCDNN grid (4 widths, 2 bits, 2 seeds, short training) for
the slow loop tests (closed loop, search); each adds its own section."""


def smk(workdir, *args, env=None, timeout=600):
    run_env = {**os.environ, **(env or {})}
    return subprocess.run(
        snakemake_command(workdir, *args), capture_output=True, text=True, env=run_env, timeout=timeout
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def write_config(path: Path, studies: dict, **top) -> Path:
    path.write_text(yaml.safe_dump({"device": "cpu", **top, "studies": studies}))
    return path
