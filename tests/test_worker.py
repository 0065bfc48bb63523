"""The warm worker: jobs forked from one torch-loaded process behave exactly like
jobs run in their own process (output, exit status, numbers)."""

import ast
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from qdesign.core.config import validate_config
from qdesign.core.specs import float_spec
from qdesign.nn.data import prepare_dataset, write_prepared
from qdesign.run import cli, worker

from .conftest import REPO, tiny_study


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("worker")
    sock = str(tmp / "w.sock")
    cmd = [
        sys.executable,
        "-m",
        "qdesign.run.worker",
        "--socket",
        sock,
        "--parent",
        str(os.getpid()),
        "--handler",
        cli.WORKER_HANDLER,
        "--preload",
        ",".join(cli.WORKER_PRELOAD),
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=open(tmp / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
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
        return subprocess.run(
            [sys.executable, "-m", "qdesign", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        ).returncode


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
        "qdesign: error: dataset file not found: missing.pt (run the split_data rule)\n"
    )
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdesign", "train-float", "--spec", spec, "--data", "digits.pt", "--out-dir", "long"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
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


def test_killed_client_process_group_stops_its_job(server, tmp_path):
    # Snakemake cancels a job by killing the job's shell with its process group
    write_prepared(prepare_dataset("digits"), tmp_path / "digits.pt")
    cfg = validate_config({"device": "cpu", "studies": {"s": tiny_study(training={"epochs": 2000})}})
    spec = float_spec(cfg, "s", 64, 0).to_json()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), worker.ENV_SOCKET: server}
    job = (
        f"{sys.executable} -m qdesign train-float --spec '{spec}' --data digits.pt --out-dir long; echo shell-survived"
    )
    with open(tmp_path / "long.log", "wb") as log:
        shell = subprocess.Popen(
            ["sh", "-c", job], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.time() + 60
    while "epoch 1/" not in (tmp_path / "long.log").read_text():
        assert time.time() < deadline
        time.sleep(0.1)
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()
    time.sleep(1.0)
    size = (tmp_path / "long.log").stat().st_size
    time.sleep(1.5)
    assert (tmp_path / "long.log").stat().st_size == size
    assert not (tmp_path / "long" / "metrics.parquet").exists()
    assert "shell-survived" not in (tmp_path / "long.log").read_text()


def test_worker_module_imports_nothing_from_qdesign():
    code = (
        "import sys, qdesign.run.worker; "
        "print(sorted(m for m in sys.modules if m.startswith('qdesign.') and m != 'qdesign.run.worker'))"
    )
    # its package, qdesign.run, is imported with it (a docstring, nothing else)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    ).stdout
    assert out.strip() == "['qdesign.run']"
    assert ast.parse((REPO / "src" / "qdesign" / "run" / "__init__.py").read_text()).body[0].value.value
    assert len(ast.parse((REPO / "src" / "qdesign" / "run" / "__init__.py").read_text()).body) == 1
    tree = ast.parse((REPO / "src" / "qdesign" / "run" / "worker.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith(("qdesign", "."))]


# ------------------------------------------------------------- process lifetime

HANDLER = """
import os, time
def run(argv):
    marker, result, delay = argv
    open(marker, "w").write(str(os.getpid()))
    time.sleep(float(delay))
    open(result, "w").write("stale")
    return 0
"""

FAKE_SNAKEMAKE = """
import json, os, sys, time
from qdesign.run import worker
proc = worker.start(sys.argv[1], handler="slowjob:run", idle_timeout=60)
print(json.dumps({"pid": proc.pid, "socket": os.environ[worker.ENV_SOCKET]}), flush=True)
time.sleep(600)
"""

CLIENT = """
import sys
from qdesign.run import worker
code = worker.submit(sys.argv[1:])
sys.exit(99 if code is None else code)
"""


def _gone_within(pids, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not [p for p in pids if worker._alive(p)]:
            return True
        time.sleep(0.05)
    return False


def test_kill_9_of_snakemake_ends_worker_and_jobs(tmp_path):
    (tmp_path / "slowjob.py").write_text(HANDLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(tmp_path)])}
    env.pop(worker.ENV_SOCKET, None)
    parent = subprocess.Popen(
        [sys.executable, "-c", FAKE_SNAKEMAKE, str(tmp_path / "worker.log")], env=env, stdout=subprocess.PIPE, text=True
    )
    info = json.loads(parent.stdout.readline())
    client_env = {**env, worker.ENV_SOCKET: info["socket"], worker.ENV_PID: str(info["pid"])}
    marker, result = tmp_path / "job.pid", tmp_path / "result.txt"
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(marker), str(result), "4"], env=client_env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 30
    while not marker.exists() or not marker.read_text():
        assert time.time() < deadline and client.poll() is None, (tmp_path / "worker.log").read_text()
        time.sleep(0.05)
    job = int(marker.read_text())
    assert job != client.pid  # the job really ran in the worker
    parent.kill()
    parent.wait()
    assert _gone_within([info["pid"], job], 5.0), "worker or job survived its Snakemake"
    assert client.wait(timeout=10) == 1
    assert "worker process died" in client.stderr.read()
    time.sleep(5.0)  # past the job's own 4 s: it must never write its result
    assert not result.exists()
    assert not os.path.exists(os.path.dirname(info["socket"]))  # the worker removed its directory


def test_start_and_stop_leave_nothing_behind(tmp_path, monkeypatch):
    (tmp_path / "slowjob.py").write_text(HANDLER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proc = worker.start(tmp_path / "w.log", handler="slowjob:run")
    try:
        sock = os.environ[worker.ENV_SOCKET]
        assert worker.private_dir_problem(os.path.dirname(sock)) is None
        assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and os.lstat(sock).st_mode & 0o077 == 0
        code = worker.submit([str(tmp_path / "m"), str(tmp_path / "r"), "0"])
        assert code == 0 and (tmp_path / "r").read_text() == "stale"
    finally:
        worker.stop(proc)
    assert worker.ENV_SOCKET not in os.environ
    assert not os.path.exists(os.path.dirname(sock))


def test_next_start_removes_dirs_of_killed_workers(tmp_path, monkeypatch):
    (tmp_path / "slowjob.py").write_text(HANDLER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proc = worker.start(tmp_path / "w.log", handler="slowjob:run")
    sock = os.environ[worker.ENV_SOCKET]
    # kill -9 of the worker: nobody removes the directory ...
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.exists(sock)
    # ... until a later start() by a process whose owner pid is gone; here the owner (us) lives, so fake its death
    (Path(sock).parent / worker.OWNER_FILE).write_text("999999999\n")
    proc2 = worker.start(tmp_path / "w.log", handler="slowjob:run")
    try:
        assert not os.path.exists(os.path.dirname(sock))
        assert os.environ[worker.ENV_SOCKET] != sock
    finally:
        worker.stop(proc2)


def test_stale_dir_clean_up_removes_only_dead_workers_dirs(tmp_path):
    def mkdir(name, files):
        d = tmp_path / name
        d.mkdir(mode=0o700)
        for f, text in files.items():
            (d / f).write_text(text)
        return d

    dead = mkdir("qdesign-worker-dead", {worker.OWNER_FILE: "999999999\n", worker.WORKER_FILE: "999999998\n"})
    live = mkdir("qdesign-worker-live", {worker.OWNER_FILE: f"{os.getpid()}\n"})
    foreign = mkdir("qdesign-worker-mine", {worker.OWNER_FILE: "999999999\n", "notes.txt": "keep"})
    other_name = mkdir("qdesign-hostile-x", {})
    assert worker.remove_stale_dirs(str(tmp_path)) == [dead]
    assert live.exists() and foreign.exists() and other_name.exists()


def test_start_from_a_thread_is_not_tied_to_that_thread(tmp_path, monkeypatch):
    # PDEATHSIG fires when the starting *thread* ends: a start() from a thread that then ends must leave the worker up
    (tmp_path / "slowjob.py").write_text(HANDLER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    box = {}
    t = threading.Thread(target=lambda: box.update(proc=worker.start(tmp_path / "w.log", handler="slowjob:run")))
    t.start()
    t.join()
    try:
        time.sleep(0.5)
        assert box["proc"].poll() is None
        assert worker.submit([str(tmp_path / "m"), str(tmp_path / "r"), "0"]) == 0
        assert "PDEATHSIG" not in (tmp_path / "w.log").read_text()
    finally:
        worker.stop(box["proc"])


SLOW_IMPORT = """
import time
time.sleep(float(open(__file__ + ".delay").read()))
"""


def test_a_ready_only_client_runs_itself_while_the_worker_imports(tmp_path, monkeypatch):
    """Light jobs (tables, figures) do not wait for the preloads: until the
    server has written its ready file they run in their own process; a
    training job waits and is served; afterwards both go to the worker."""
    (tmp_path / "slowjob.py").write_text(HANDLER)
    (tmp_path / "slowimport.py").write_text(SLOW_IMPORT)
    (tmp_path / "slowimport.py.delay").write_text("3")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proc = worker.start(tmp_path / "w.log", handler="slowjob:run", preload=["slowimport"])
    try:
        ready = Path(os.environ[worker.ENV_SOCKET]).parent / worker.READY_FILE
        assert not ready.exists()
        assert worker.submit([str(tmp_path / "m0"), str(tmp_path / "r0"), "0"], ready_only=True) is None
        assert worker.submit([str(tmp_path / "m1"), str(tmp_path / "r1"), "0"]) == 0  # waited for the imports
        assert ready.exists()
        assert worker.submit([str(tmp_path / "m2"), str(tmp_path / "r2"), "0"], ready_only=True) == 0
        assert (tmp_path / "r2").read_text() == "stale" and not (tmp_path / "r0").exists()
    finally:
        worker.stop(proc)
    assert not ready.exists()


def test_table_and_figure_commands_go_to_the_worker_only_once_it_is_ready():
    assert not cli.WORKER_COMMANDS & cli.WORKER_COMMANDS_IF_READY
    assert {"aggregate", "scaling", "figures", "report-tables"} <= cli.WORKER_COMMANDS_IF_READY
    assert {"train-float", "retrain", "split-data"} <= cli.WORKER_COMMANDS
