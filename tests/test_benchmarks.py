"""The benchmarks are not run by CI (minutes, and Brevitas); these checks keep
the parts they share with the pipeline from rotting unnoticed (a config the
schema no longer accepts made `make bench` item 6 fail after 6 minutes)."""

import importlib.util
import json
import subprocess
import sys

from qdesign.run import cli as qcli
from qdesign.run import worker

from .conftest import REPO


def _bench_module():
    spec = importlib.util.spec_from_file_location("qdesign_bench_run", REPO / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_startup_cell_runs_in_its_own_process_and_through_the_worker(tmp_path):
    """Item 6's cell: a valid spec, trained by a job in its own process and by
    the warm worker started exactly as the workflow starts it."""
    from qdesign.nn.data import prepare_dataset, write_prepared  # noqa: PLC0415

    spec = _bench_module().tiny_cell_spec()
    assert json.loads(spec)["width"] == 8
    data = tmp_path / "digits.pt"
    write_prepared(prepare_dataset("digits", tmp_path, download=False), data)
    job = [sys.executable, "-m", "qdesign", "train-float", "--spec", spec, "--data", str(data)]
    own = subprocess.run([*job, "--out-dir", str(tmp_path / "own")], capture_output=True, text=True, timeout=300)
    assert own.returncode == 0, own.stderr[-2000:]
    proc = worker.start(tmp_path / "worker.log", handler=qcli.WORKER_HANDLER, preload=qcli.WORKER_PRELOAD)
    assert proc is not None, (tmp_path / "worker.log").read_text()[-2000:]
    try:
        warm = subprocess.run([*job, "--out-dir", str(tmp_path / "warm")], capture_output=True, text=True, timeout=300)
    finally:
        worker.stop(proc)
    assert warm.returncode == 0, warm.stderr[-2000:]
    import pandas as pd  # noqa: PLC0415

    a, b = (pd.read_parquet(tmp_path / d / "metrics.parquet").iloc[0] for d in ("own", "warm"))
    assert a["test_error"] == b["test_error"] and a["val_error"] == b["val_error"]
