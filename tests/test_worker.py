"""The warm worker: jobs forked from one torch-loaded process behave exactly like
jobs run in their own process (output, exit status, numbers)."""

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from qdesign import worker
from qdesign.config import validate_config
from qdesign.specs import float_spec
from qdesign.data import prepare_dataset, write_prepared

from .conftest import REPO, tiny_study


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("worker")
    sock = str(tmp / "w.sock")
    proc = subprocess.Popen([sys.executable, "-m", "qdesign.worker", "--socket", sock, "--parent", str(os.getpid())],
                            stdout=open(tmp / "worker.log", "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    deadline = time.time() + 30
    while not os.path.exists(sock):
        assert proc.poll() is None and time.time() < deadline, (tmp / "worker.log").read_text()
        time.sleep(0.05)
    yield sock
    proc.terminate()
    proc.wait(timeout=10)
    assert not os.path.exists(sock)  # the server removes its socket on exit


def client(args, sock, cwd, stdout):
    """Run `python -m qdesign ARGS` as the rules do, pointed at the worker."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if sock:
        env[worker.ENV_SOCKET] = sock
    else:
        env.pop(worker.ENV_SOCKET, None)
    with open(stdout, "wb") as out:
        return subprocess.run([sys.executable, "-m", "qdesign", *args], cwd=cwd, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=300).returncode


def test_worker_and_own_process_give_identical_cells(server, tmp_path):
    write_prepared(prepare_dataset("digits"), tmp_path / "digits.pt")
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study()}})
    spec = float_spec(cfg, "s", 16, 0).to_json()
    args = ["train-float", "--spec", spec, "--data", "digits.pt", "--threads", "1"]
    assert client(args + ["--out-dir", "via-worker"], server, tmp_path, tmp_path / "a.log") == 0
    assert client(args + ["--out-dir", "own-process"], None, tmp_path, tmp_path / "b.log") == 0
    a = pd.read_parquet(tmp_path / "via-worker" / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "own-process" / "metrics.parquet")
    for col in ("test_error", "val_error", "n_weights", "best_epoch", "config_hash"):
        assert a[col].tolist() == b[col].tolist()
    # the job's output went to the client's stdout (the rule's log), relative paths to its cwd
    log = (tmp_path / "a.log").read_text()
    assert "epoch 3/3" in log and "done: test_err" in log


def test_exit_status_and_errors_come_back_through_the_worker(server, tmp_path):
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study()}})
    spec = float_spec(cfg, "s", 16, 0).to_json()
    args = ["train-float", "--spec", spec, "--data", "missing.pt", "--out-dir", "x"]
    assert client(args, server, tmp_path, tmp_path / "err.log") == 1
    assert (tmp_path / "err.log").read_text() == (
        "qdesign: error: prepared dataset not found: missing.pt (run the prepare_data rule)\n")
    assert not (tmp_path / "x").exists()
    args = ["train-float", "--spec", '{"dataset": "digits"}', "--data", "missing.pt", "--out-dir", "x"]
    assert client(args, server, tmp_path, tmp_path / "err2.log") == 1
    assert "float spec is missing study, model" in (tmp_path / "err2.log").read_text()


def test_no_worker_means_run_here(tmp_path):
    assert worker.submit(["validate-config", "x"], socket_path=str(tmp_path / "nobody.sock")) is None


def test_killed_client_stops_its_job(server, tmp_path):
    write_prepared(prepare_dataset("digits"), tmp_path / "digits.pt")
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study(training={"epochs": 2000})}})
    spec = float_spec(cfg, "s", 64, 0).to_json()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), worker.ENV_SOCKET: server}
    log = open(tmp_path / "long.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "qdesign", "train-float", "--spec", spec, "--data", "digits.pt",
                             "--out-dir", "long"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while "epoch 1/" not in (tmp_path / "long.log").read_text():
        assert time.time() < deadline
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    # the forked job notices that its client is gone and exits: the log stops growing
    time.sleep(1.0)
    size = (tmp_path / "long.log").stat().st_size
    time.sleep(1.5)
    assert (tmp_path / "long.log").stat().st_size == size
    assert not (tmp_path / "long" / "metrics.parquet").exists()
