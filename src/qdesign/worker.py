"""Warm worker: serve many short training jobs from one process that has torch
imported, so that a job does not pay the ~2.5 s ``import torch`` each time.

How it works (local Snakemake runs only; see ``workflow/rules/common.smk``):

* ``onstart`` launches ``python -m qdesign.worker --socket PATH --parent PID``.
  The server binds a UNIX socket, imports torch, pandas and the training
  modules once, and waits.
* A rule's command is still ``python -m qdesign train-float ...``: the thin
  client (no torch import, ~50 ms) connects, hands over its argv, working
  directory, environment and its stdin/stdout/stderr file descriptors, and
  waits for the exit status.
* The server forks one child per job. The child adopts the client's file
  descriptors (so output lands in the rule's log exactly as if it ran itself),
  runs the command, sends the exit status and exits. Jobs are separate
  processes: global RNG seeds, thread counts and crashes do not leak between
  them. If the client dies (Snakemake cancels the job), the child exits too.
* The server exits when Snakemake (``--parent``) is gone, on SIGTERM from
  ``onsuccess``/``onerror``, or after an idle timeout.

Without a server (cluster jobs, ``worker: false``, or any connection problem)
the client runs the command in its own process: the worker is only ever a
speed-up, never a requirement. Fork safety: the server never runs a torch
operation itself, so no OpenMP or CUDA state exists before ``fork``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ENV_SOCKET = "QDESIGN_WORKER_SOCKET"
# torch.optim imports torch._dynamo (~2.5 s) when the first optimizer is built:
# preload it too, or every job pays it again
PRELOAD = ("torch", "torch._dynamo", "numpy", "pandas", "pyarrow.parquet", "qdesign.cells", "qdesign.quantize",
           "qdesign.train", "qdesign.data", "qdesign.cli")
_HEADER = struct.Struct(">I")
_STATUS = struct.Struct(">i")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


# ------------------------------------------------------------------ client


def submit(argv: list[str], socket_path: str | None = None) -> int | None:
    """Run ``argv`` (a qdesign command line) in the worker; its exit status, or
    None when no worker answers (the caller then runs the command itself)."""
    path = socket_path or os.environ.get(ENV_SOCKET)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    with sock:
        payload = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        try:
            socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
            sock.sendall(payload)
        except OSError:
            return None  # the worker went away before taking the job: run it here
        try:
            return _STATUS.unpack(_recv_exact(sock, _STATUS.size))[0]
        except (ConnectionError, OSError):
            print("qdesign: error: the worker process died while running this job", file=sys.stderr, flush=True)
            return 1


# ------------------------------------------------------------------ server


def _child(conn: socket.socket) -> None:
    """Run one job in a forked child; never returns."""
    code = 1
    try:
        msg, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        msg += _recv_exact(conn, _HEADER.size - len(msg)) if len(msg) < _HEADER.size else b""
        payload = json.loads(_recv_exact(conn, _HEADER.unpack(msg)[0]))
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(payload["cwd"])
        os.environ.clear()
        os.environ.update(payload["env"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

        def watch_client() -> None:
            # the client sends nothing more: EOF means it was killed
            try:
                conn.recv(1)
            except OSError:
                pass
            os._exit(143)

        threading.Thread(target=watch_client, daemon=True).start()
        from qdesign.cli import run  # noqa: PLC0415 - preloaded in the server

        code = run(payload["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - report anything, then exit with failure
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        try:
            conn.sendall(_STATUS.pack(int(code)))
        except OSError:
            pass
        os._exit(int(code) & 0xFF)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(socket_path: str, parent_pid: int | None = None, idle_timeout: float = 3600.0) -> None:
    """Serve jobs until the parent is gone, SIGTERM, or ``idle_timeout`` seconds without jobs."""
    path = Path(socket_path)
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(128)  # clients may queue while the imports below run

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.perf_counter()
    for mod in PRELOAD:
        importlib.import_module(mod)
    print(f"qdesign worker {os.getpid()}: ready on {path} after {time.perf_counter() - t0:.2f}s of imports", flush=True)
    srv.settimeout(1.0)
    children: set[int] = set()
    last_job = time.monotonic()
    n_jobs = 0
    try:
        while True:
            for pid in list(children):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    children.discard(pid)
            if parent_pid and not _alive(parent_pid):
                break
            if not children and time.monotonic() - last_job > idle_timeout:
                break
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            last_job = time.monotonic()
            n_jobs += 1
            pid = os.fork()
            if pid == 0:
                srv.close()
                conn.settimeout(None)
                _child(conn)
            conn.close()
            children.add(pid)
    finally:
        srv.close()
        path.unlink(missing_ok=True)
        print(f"qdesign worker {os.getpid()}: served {n_jobs} jobs, exiting", flush=True)


# ------------------------------------------------------------------ control


def default_socket_path() -> str:
    # short, per Snakemake process: UNIX socket paths are limited to ~100 bytes
    return str(Path(tempfile.gettempdir()) / f"qdesign-{os.getuid()}-{os.getpid()}.sock")


def start(log_path: str | Path, socket_path: str | None = None, wait: float = 10.0) -> subprocess.Popen:
    """Launch a server for this process, export its socket to child jobs, and
    wait until it listens (the imports continue while clients queue)."""
    path = socket_path or default_socket_path()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])  # importable without an install
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qdesign.worker", "--socket", path, "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    deadline = time.monotonic() + wait
    while not Path(path).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            return proc  # jobs will run in their own processes
        time.sleep(0.02)
    os.environ[ENV_SOCKET] = path
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    os.environ.pop(ENV_SOCKET, None)
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m qdesign.worker", description="qdesign warm worker (internal)")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    ap.add_argument("--idle-timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)
    serve(args.socket, args.parent, args.idle_timeout)


if __name__ == "__main__":
    main()
