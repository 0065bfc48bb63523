"""The worker's socket with two local users: another uid can neither reach our
worker nor pose as one (it would receive argv, cwd, the environment's secrets
and the log fds). The other-uid parts need root (to run as a second user)."""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qdesign.run import worker

OTHER_USER = "qdesign-probe"
HANDLER = """
def run(argv):
    open(argv[0], "w").write("ran")
    return 0
"""


@pytest.fixture(scope="module")
def other():
    """(uid, gid, python) of an unprivileged second user; created once with useradd."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run code as a second user")
    try:
        pw = pwd.getpwnam(OTHER_USER)
    except KeyError:
        if not shutil.which("useradd"):
            pytest.skip("useradd not available to create a second user")
        res = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            pytest.skip(f"useradd failed: {res.stderr.strip()}")
        pw = pwd.getpwnam(OTHER_USER)
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        try:
            ok = python and as_other((pw.pw_uid, pw.pw_gid, python), "pass").returncode == 0
        except OSError:
            ok = False
        if ok:
            return pw.pw_uid, pw.pw_gid, python
    pytest.skip(f"no python interpreter that user {OTHER_USER} may run")


def as_other(other, code, *args, **kw):
    uid, gid, python = other
    return subprocess.run(
        [python, "-c", code, *args],
        check=False,
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
        **kw,
    )


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A real worker started as the rules start it, serving a handler that writes a marker file."""
    (tmp_path / "markjob.py").write_text(HANDLER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    proc = worker.start(tmp_path / "worker.log", handler="markjob:run")
    assert proc is not None, (tmp_path / "worker.log").read_text()
    yield os.environ[worker.ENV_SOCKET], tmp_path
    worker.stop(proc)


CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(type(exc).__name__)
else:
    print("connected")
"""


def test_other_user_cannot_reach_the_socket(other, served):
    sock, _ = served
    assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700
    res = as_other(other, CONNECT, sock)
    assert res.stdout.strip() == "PermissionError", res.stderr


SEND_JOB = """
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
payload = json.dumps({"argv": [sys.argv[2]], "cwd": "/", "env": {}}).encode()
try:
    socket.send_fds(s, [struct.pack(">I", len(payload))], [0, 1, 2])
    s.sendall(payload)
    print("status", s.recv(4))
except OSError as exc:
    print(type(exc).__name__)
"""


def test_worker_refuses_a_client_of_another_uid(other, served):
    sock, tmp = served
    # open the way on purpose, as a careless admin might: the server's own check must still refuse
    os.chmod(os.path.dirname(sock), 0o711)
    os.chmod(sock, 0o666)
    marker = tmp / "other-ran"
    res = as_other(other, SEND_JOB, sock, str(marker))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in ("status b''", "BrokenPipeError", "ConnectionResetError")
    time.sleep(0.5)
    assert not marker.exists()
    assert f"refused a client of uid {other[0]}" in (tmp / "worker.log").read_text()
    os.chmod(os.path.dirname(sock), 0o700)
    # our own jobs still run
    assert worker.submit([str(tmp / "we-ran")]) == 0 and (tmp / "we-ran").exists()


IMPOSTOR = """
import os, socket, sys, tempfile
d = tempfile.mkdtemp(prefix="qdesign-")
path = os.path.join(d, "w-0.sock")
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(1)
os.chmod(path, 0o777)
print(path, flush=True)
s.settimeout(3)
try:
    conn, _ = s.accept()
    conn.settimeout(2)
    got = conn.recv(1 << 20)
    print("received", len(got), flush=True)
except OSError:
    print("no connection", flush=True)
"""


def test_client_refuses_a_socket_in_another_users_directory(other, tmp_path, capfd):
    uid, gid, python = other
    imp = subprocess.Popen(
        [python, "-c", IMPOSTOR],
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        path = imp.stdout.readline().strip()
        assert Path(path).is_socket() and os.stat(os.path.dirname(path)).st_uid == uid
        assert worker.submit(["secret-argv"], socket_path=path) is None  # the caller runs the job itself
        assert f"owned by uid {uid}" in capfd.readouterr().err
        assert imp.stdout.read().strip() == "no connection"
    finally:
        imp.kill()
        imp.wait()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _impostor_in_our_dir(sock_path: Path, uid: int, gid: int) -> tuple[int, int]:
    """Fork a server that binds in our private dir, then becomes ``uid`` before listening
    (SO_PEERCRED reports the listener's credentials at listen time). Returns (pid, read end
    of a pipe on which it reports how many bytes it received)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(sock_path))
            os.setgid(gid)
            os.setuid(uid)
            s.listen(1)
            os.write(w, b"L")
            s.settimeout(5)
            try:
                conn, _ = s.accept()
                conn.settimeout(2)
                got = conn.recv(1 << 20)
                os.write(w, str(len(got)).encode())
            except OSError:
                os.write(w, b"-")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"L"
    return pid, r


def test_client_refuses_a_server_of_another_uid_in_a_trusted_dir(other, tmp_path, capfd):
    uid, gid, _ = other
    sock_dir = Path(worker.make_socket_dir())
    try:
        path = sock_dir / "w-x.sock"
        pid, r = _impostor_in_our_dir(path, uid, gid)
        assert os.lstat(path).st_uid == os.getuid()  # file and dir checks pass: only SO_PEERCRED can tell
        assert worker.submit(["secret-argv"], socket_path=str(path)) is None
        assert f"uid {uid}, expected" in capfd.readouterr().err
        os.waitpid(pid, 0)
        assert os.read(r, 64) in (b"0", b"-")  # it received nothing
        os.close(r)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_client_checks_the_advertised_server_pid(tmp_path, capfd):
    """Runs without root: a server of our uid that is not the worker we were told about."""
    d = tmp_path / "priv"
    d.mkdir(mode=0o700)
    path = d / "w.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    got = []

    def accept():
        conn, _ = srv.accept()
        conn.settimeout(1)
        got.append(conn.recv(1 << 20))

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    assert worker.submit(["x"], socket_path=str(path), server_pid=os.getpid() + 1) is None
    t.join(5)
    assert got == [b""]
    assert "expected pid" in capfd.readouterr().err
    srv.close()


def test_directory_checks(tmp_path, monkeypatch):
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o755)
    assert "mode 755" in worker.private_dir_problem(d)
    (tmp_path / "link").symlink_to(d)
    assert "not a directory" in worker.private_dir_problem(tmp_path / "link")
    d.chmod(0o700)
    assert worker.private_dir_problem(d) is None
    with pytest.raises(SystemExit, match="refusing to serve"):
        worker.serve(str(tmp_path / "link" / "w.sock"), handler=lambda argv: 0)
    # a shared XDG_RUNTIME_DIR is not used for the socket
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    tmp_path.chmod(0o755)
    assert worker._runtime_base() != str(tmp_path)
    tmp_path.chmod(0o700)
    assert worker._runtime_base() == str(tmp_path)
