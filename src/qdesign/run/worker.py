"""Warm worker: a generic fork server that serves many short jobs from one
process that has torch imported, so that a job does not pay the ~2.5 s
``import torch`` each time. It imports nothing from qdesign: whoever starts it
names the handler (``module:function``, called with the job's argv, returns an
exit status) and the modules to preload.

How it works (local Snakemake runs only; see ``workflow/rules/common.smk``):

* ``onstart`` calls :func:`start`, which makes a private directory (mode 0700,
  in ``$XDG_RUNTIME_DIR`` when that is ours and private, else ``mkdtemp`` in
  the temp dir) and launches ``python -m qdesign.run.worker --socket DIR/w-RANDOM.sock
  --parent PID --handler qdesign.run.cli:run --preload torch,...``. The server
  binds the socket, imports the handler and the preload list once, writes
  ``DIR/ready``, and waits.
* A rule's command is still ``python -m qdesign train-float ...``: the thin
  client (no torch import, ~50 ms) checks the socket's directory (ours, 0700)
  and the server's credentials (SO_PEERCRED: our uid, the advertised pid)
  before it sends anything, then hands over its argv, working directory,
  environment and stdin/stdout/stderr file descriptors, and waits for the exit
  status. The server refuses clients of another uid. A client that would
  rather not wait for the imports (``submit(ready_only=True)``: light jobs
  such as tables and figures) runs itself until ``DIR/ready`` exists.
* The server forks one child per job, in its own process group. The child
  adopts the client's file descriptors (output lands in the rule's log exactly
  as if it ran itself), runs the handler, sends the exit status and exits.
  Jobs are separate processes: RNG seeds, thread counts and crashes do not leak.

Lifetime: nothing outlives Snakemake. The server asks the kernel for SIGTERM
when its parent (Snakemake's main thread, which runs ``onstart``) dies
(``PR_SET_PDEATHSIG``) and also polls ``--parent``; each child asks for SIGKILL
when the server dies. On any exit the server SIGKILLs its children's process
groups and removes its socket and directory. A child whose client is gone
(EOF on the socket: the client was killed, alone or with its process group,
i.e. Snakemake cancelled the job) kills its process group at once, so it
writes no result after that. If the server itself is killed with -9, its
children die with it (PDEATHSIG) and the directory is left behind until
:func:`stop` or the next :func:`start` removes directories of dead workers.

Without a server (cluster jobs, ``worker: false``, or any connection or
credential problem) the client runs the command in its own process: the
worker is only ever a speed-up, never a requirement. Fork safety: the server
never runs a torch operation itself, so no OpenMP or CUDA state exists before
``fork``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

ENV_SOCKET = "QDESIGN_WORKER_SOCKET"
ENV_PID = "QDESIGN_WORKER_PID"  # the server's pid, checked by the client with SO_PEERCRED
DIR_PREFIX = "qdesign-worker-"
OWNER_FILE = "owner.pid"  # pid of the process that called start(); the dir is stale once it and the worker are gone
WORKER_FILE = "worker.pid"
READY_FILE = "ready"  # written beside the socket once the preloads are imported
_HEADER = struct.Struct(">I")
_STATUS = struct.Struct(">i")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_PR_SET_PDEATHSIG = 1
Handler = Callable[[list[str]], int]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected UNIX socket."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


def private_dir_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a directory only we can use (None when it is): a real
    directory, not a symlink, owned by our uid, no group or other permissions."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.getuid():
        return f"{path} is owned by uid {st.st_uid}, not {os.getuid()}"
    if st.st_mode & 0o077:
        return f"{path} has mode {stat.S_IMODE(st.st_mode):o}, not 700"
    return None


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent thread dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # noqa: PLC0415 - the server side only: keeps the client light

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# ------------------------------------------------------------------ client


def _warn(msg: str) -> None:
    print(f"qdesign: warning: not using the worker: {msg}", file=sys.stderr, flush=True)


def _connect(path: str, expected_pid: int | None) -> socket.socket | None:
    """A connection to a server we can trust with our environment, or None."""
    problem = private_dir_problem(os.path.dirname(os.path.abspath(path)))
    if problem is None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # the worker is gone: nothing to warn about
        except OSError as exc:
            problem = f"{path}: {exc.strerror}"
        else:
            if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
                problem = f"{path} is not a socket owned by uid {os.getuid()}"
    if problem is not None:
        if os.path.lexists(os.path.dirname(os.path.abspath(path))):
            _warn(problem)
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        pid, uid, _ = peer_credentials(sock)
    except OSError:
        sock.close()
        return None
    if uid != os.getuid() or (expected_pid is not None and pid != expected_pid):
        sock.close()
        _warn(f"{path} is served by pid {pid} uid {uid}, expected pid {expected_pid} uid {os.getuid()}")
        return None
    return sock


def submit(
    argv: list[str], socket_path: str | None = None, server_pid: int | None = None, ready_only: bool = False
) -> int | None:
    """Run ``argv`` in the worker; its exit status, or None when no trusted
    worker answers (the caller then runs the command itself). ``ready_only``:
    also None while the worker is still importing its preloads (a job that
    imports less than they take, run alone, is faster in its own process)."""
    path = socket_path or os.environ.get(ENV_SOCKET)
    if not path:
        return None
    if ready_only and not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(path)), READY_FILE)):
        return None
    if server_pid is None and socket_path is None and os.environ.get(ENV_PID, "").isdigit():
        server_pid = int(os.environ[ENV_PID])
    sock = _connect(path, server_pid)
    if sock is None:
        return None
    with sock:
        payload = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        try:
            socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
            sock.sendall(payload)
        except OSError:
            return None  # the worker went away (or refused us) before taking the job: run it here
        try:
            return _STATUS.unpack(_recv_exact(sock, _STATUS.size))[0]
        except (ConnectionError, OSError):
            print("qdesign: error: the worker process died while running this job", file=sys.stderr, flush=True)
            return 1


# ------------------------------------------------------------------ server


def _kill_own_group() -> None:
    """End this job and anything it started, now (it is the leader of its own group)."""
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(143)


def _watch_client(conn: socket.socket, client_pid: int) -> None:
    """The client sends nothing after its request: EOF (or any data) means it is gone.
    Also polls its pid, in case its end of the socket outlives it."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        if poller.poll(1000) or not _alive(client_pid):
            _kill_own_group()


def _child(conn: socket.socket, handler: Handler, client_pid: int) -> None:
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
        import threading  # noqa: PLC0415 - only the child needs a thread

        threading.Thread(target=_watch_client, args=(conn, client_pid), daemon=True).start()
        code = handler(payload["argv"])
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


def load_handler(name: str) -> Handler:
    """``package.module:function`` -> the function."""
    module, sep, func = name.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"handler must be 'module:function', got {name!r}")
    return getattr(importlib.import_module(module), func)


def _fork_job(conn: socket.socket, srv: socket.socket, handler: Handler, client_pid: int) -> int:
    server_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != server_pid:  # the server died before the line above
                os._exit(1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            srv.close()
            conn.settimeout(None)
        except BaseException:  # noqa: BLE001
            os._exit(1)
        _child(conn, handler, client_pid)
    try:
        os.setpgid(pid, pid)  # both sides, so that killpg works whoever runs first
    except OSError:
        pass
    return pid


def _kill_children(children: set[int]) -> None:
    for pid in children:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def serve(
    socket_path: str,
    handler: str | Handler,
    parent_pid: int | None = None,
    idle_timeout: float = 3600.0,
    preload: Iterable[str] = (),
    death_signal: bool = True,
) -> None:
    """Serve jobs until the parent is gone, SIGTERM, or ``idle_timeout`` seconds without jobs.
    The socket's directory must be private (ours, mode 0700). ``death_signal``: also let the
    kernel end us when the parent thread that started us dies (only right if that is its main thread)."""
    path = Path(socket_path)
    problem = private_dir_problem(path.parent)
    if problem is not None:
        raise SystemExit(f"qdesign worker: refusing to serve: {problem}")

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    # the kernel's signal needs the real parent; --parent alone (e.g. started through a shell) is only polled
    tied = bool(death_signal and parent_pid and parent_pid == os.getppid() and set_parent_death_signal(signal.SIGTERM))
    if parent_pid and not _alive(parent_pid):
        return
    children: set[int] = set()
    n_jobs = 0
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink(missing_ok=True)
        srv.bind(str(path))
        os.chmod(path, 0o600)
        srv.listen(128)  # clients may queue while the imports below run
        t0 = time.perf_counter()
        for mod in preload:
            importlib.import_module(mod)
        run = load_handler(handler) if isinstance(handler, str) else handler
        (path.parent / READY_FILE).write_text(f"{os.getpid()}\n")
        print(
            f"qdesign worker {os.getpid()}: ready on {path} after {time.perf_counter() - t0:.2f}s of imports"
            f"{'; ends with its parent (PDEATHSIG)' if tied else ''}",
            flush=True,
        )
        srv.settimeout(1.0)
        last_job = time.monotonic()
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
            client_pid, uid, _ = peer_credentials(conn)
            if uid != os.getuid():
                print(f"qdesign worker: refused a client of uid {uid} (pid {client_pid})", flush=True)
                conn.close()
                continue
            last_job = time.monotonic()
            n_jobs += 1
            children.add(_fork_job(conn, srv, run, client_pid))
            conn.close()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not interrupt the clean-up
        _kill_children(children)
        srv.close()
        path.unlink(missing_ok=True)
        (path.parent / READY_FILE).unlink(missing_ok=True)
        if _read_pid(path.parent / WORKER_FILE) == os.getpid():  # a directory made by start() for us
            shutil.rmtree(path.parent, ignore_errors=True)
        print(f"qdesign worker {os.getpid()}: served {n_jobs} jobs, exiting", flush=True)


# ------------------------------------------------------------------ control


def _runtime_base() -> str:
    """Where private socket directories go: $XDG_RUNTIME_DIR when it is ours and 0700, else the temp dir."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and private_dir_problem(xdg) is None:
        return xdg
    return tempfile.gettempdir()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def remove_stale_dirs(base: str | None = None, min_age: float = 60.0) -> list[Path]:
    """Remove our socket directories whose starter and worker are both gone
    (left behind when a worker was killed with -9), and old-style
    ``qdesign-<uid>-<pid>.sock`` sockets of dead processes. Returns what was removed."""
    base_dir = Path(base or _runtime_base())
    removed = []
    for entry in base_dir.glob(f"{DIR_PREFIX}*"):
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        if st.st_uid != os.getuid():
            continue
        if stat.S_ISSOCK(st.st_mode):
            parts = entry.name.removesuffix(".sock").split("-")
            if len(parts) == 3 and parts[1] == str(os.getuid()) and parts[2].isdigit() and not _alive(int(parts[2])):
                entry.unlink(missing_ok=True)
                removed.append(entry)
            continue
        if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        if any(
            n not in (OWNER_FILE, WORKER_FILE, READY_FILE) and not (n.startswith("w-") and n.endswith(".sock"))
            for n in names
        ):
            continue  # not one of ours: never delete what we did not make
        pids = [_read_pid(entry / name) for name in (OWNER_FILE, WORKER_FILE)]
        if pids[0] is None and time.time() - st.st_mtime < min_age:
            continue  # being set up by a start() right now
        if not any(pid and _alive(pid) for pid in pids):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def make_socket_dir() -> Path:
    """A fresh private directory (0700, unpredictable name) that records its owner's pid."""
    base = _runtime_base()
    path = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base))
    problem = private_dir_problem(path)
    if problem is not None:
        shutil.rmtree(path, ignore_errors=True)
        raise OSError(problem)
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return path


def start(
    log_path: str | Path, handler: str, preload: Iterable[str] = (), wait: float = 10.0, idle_timeout: float = 3600.0
) -> subprocess.Popen | None:
    """Launch a server for this process (call from the main thread: the server
    dies with the thread that started it), export its socket and pid to child
    jobs, and wait until it listens (the imports continue while clients queue).
    None when no server could be started: jobs then run in their own processes."""
    try:
        remove_stale_dirs()
        sock_dir = make_socket_dir()
    except OSError as exc:
        print(f"qdesign: warning: no warm worker: {exc}", file=sys.stderr)
        return None
    import secrets  # noqa: PLC0415 - start() only

    path = sock_dir / f"w-{secrets.token_hex(8)}.sock"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # src/: importable without an install
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "qdesign.run.worker",
        "--socket",
        str(path),
        "--parent",
        str(os.getpid()),
        "--handler",
        handler,
        "--preload",
        ",".join(preload),
        "--idle-timeout",
        str(idle_timeout),
    ]
    import threading  # noqa: PLC0415 - start() only

    if threading.current_thread() is not threading.main_thread():
        cmd.append("--poll-parent-only")  # PDEATHSIG would fire when this thread ends, not the process
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    proc.socket_dir = sock_dir
    (sock_dir / WORKER_FILE).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + wait
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            return None
        time.sleep(0.02)
    os.environ[ENV_SOCKET] = str(path)
    os.environ[ENV_PID] = str(proc.pid)
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    """End the server started by :func:`start` (it ends its jobs) and remove its directory."""
    os.environ.pop(ENV_SOCKET, None)
    os.environ.pop(ENV_PID, None)
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    sock_dir = getattr(proc, "socket_dir", None)
    if sock_dir is not None:
        shutil.rmtree(sock_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m qdesign.run.worker", description="warm fork server (internal)")
    ap.add_argument("--socket", required=True, help="socket path, in a directory of ours with mode 0700")
    ap.add_argument("--handler", required=True, help="module:function run in a forked child with each job's argv")
    ap.add_argument("--preload", default="", help="comma-separated modules to import before serving")
    ap.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    ap.add_argument("--idle-timeout", type=float, default=3600.0)
    ap.add_argument("--poll-parent-only", action="store_true", help="no PDEATHSIG (started from a non-main thread)")
    args = ap.parse_args(argv)
    preload = [m for m in args.preload.split(",") if m]
    code = 0
    try:
        serve(args.socket, args.handler, args.parent, args.idle_timeout, preload, not args.poll_parent_only)
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    # serve() has cleaned up; skip the interpreter's teardown of torch & co. (~4 s), so the worker is gone at once
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
