"""Slow hostile cases of a real Snakemake run, run by hand (about a minute):

1. ``kill -9`` of Snakemake (its main process only, as an OOM killer would) during a long training cell:
   afterwards no qdesign
   process of that run survives (the warm worker and its forked job end within
   seconds) and no file under ``results/`` changes for 20 s.
2. ``kill -9`` of Snakemake while a local job runs (``scaling``, forced on a
   finished tiny study): the job ends within a second (it watches its
   Snakemake: ``qdesign.run.lifeline``) and rewrites no output afterwards.
3. Disk full (root only: a 1 MiB tmpfs mounted on the study's results dir): the
   run fails, the job's log holds a one-line error, and no partial file is left.
3. Exports to places they must not write (root only): ``python -m qdesign export
   --out`` on a real read-only mount, in /proc, and onto the real /dev/null with
   --force: each one ``qdesign: error:`` line, exit 1, no traceback, nothing
   written, /dev/null still a character device.

    PYTHONPATH=src python benchmarks/hostile_slow.py [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def study(**overrides) -> dict:
    s = {
        "dataset": "digits",
        "model": {"type": "fcdnn", "depth": 2, "widths": [64]},
        "bits": [2],
        "seeds": [0],
        "training": {"epochs": 3, "lr": 0.01, "batch_size": 64},
        "retraining": {"epochs": 1, "lr": 0.001, "batch_size": 64},
    }
    s.update(overrides)
    return s


def snakemake(work: Path, cfg: dict, extra: list[str] | None = None, **kw) -> subprocess.Popen:
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump({"device": "cpu", **cfg}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            str(path),
            *(extra or []),
        ],
        env=env,
        stdout=open(work / "snakemake.out", "wb"),
        stderr=subprocess.STDOUT,
        **kw,
    )


def our_processes(work: Path) -> dict[int, str]:
    """qdesign processes whose working directory is inside ``work`` (other runs on the machine are left alone)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "qdesign" in cmd and state != "Z" and (cwd == str(work) or cwd.startswith(f"{work}/")):
            found[int(entry.name)] = cmd[:120]
    return found


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()[:16])
    return out


def wait_for(cond, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def kill_snakemake(base: Path) -> bool:
    work = base / "kill9"
    work.mkdir()
    # a long cell: thousands of epochs of a small FCDNN
    smk = snakemake(work, {"studies": {"long": study(training={"epochs": 3000, "lr": 0.01, "batch_size": 64})}})
    log = work / "results" / "logs" / "train_float"
    ok = wait_for(lambda: any("epoch 2/" in p.read_text(errors="replace") for p in log.rglob("*.log")), 300)
    if not ok:
        smk.kill()
        print("kill -9: FAILED: the long cell never started;", (work / "snakemake.out").read_text()[-2000:])
        return False
    before = our_processes(work)
    print(f"kill -9: long cell running; qdesign processes of the run: {len(before)}")
    for pid, cmd in before.items():
        print(f"    {pid}: {cmd}")
    t0 = time.monotonic()
    smk.send_signal(signal.SIGKILL)
    smk.wait()
    ended: dict[int, float] = {}

    def all_ended() -> bool:
        alive = our_processes(work)
        for pid in before:
            if pid not in alive and pid not in ended:
                ended[pid] = time.monotonic() - t0
        return not alive

    gone = wait_for(all_ended, 10.0, 0.05)
    print(f"kill -9: qdesign processes gone after {time.monotonic() - t0:.2f}s: {gone}; left: {our_processes(work)}")
    for pid, t in sorted(ended.items(), key=lambda kv: kv[1]):
        print(f"    {pid} ended after {t:.2f}s: {before[pid][:60]}")
    snap = snapshot(work / "results")
    time.sleep(20)
    changed = sorted(
        k for k in set(snap) | set(snapshot(work / "results")) if snap.get(k) != snapshot(work / "results").get(k)
    )
    left = our_processes(work)
    float_dir = work / "results" / "long" / "float"
    outputs = (
        sorted(str(p.relative_to(work)) for p in float_dir.rglob("*") if p.is_file()) if float_dir.exists() else []
    )
    print(
        f"kill -9: files changed in the 20 s after: {changed or 'none'}; processes left: {left or 'none'}; "
        f"cell outputs: {outputs or 'none'}"
    )
    return gone and not changed and not left


def kill_snakemake_during_local_job(base: Path, rule: str = "scaling") -> bool:
    work = base / "kill9local"
    work.mkdir()
    cfg = {"studies": {"tiny": study(model={"type": "fcdnn", "depth": 2, "widths": [8, 16]})}}
    first = snakemake(work, cfg)
    if first.wait(timeout=900) != 0:
        print(f"kill -9 local: FAILED: the tiny study did not finish; {(work / 'snakemake.out').read_text()[-2000:]}")
        return False
    smk = snakemake(work, cfg, extra=["--forcerun", rule])
    job = None
    deadline = time.monotonic() + 300
    while job is None and time.monotonic() < deadline and smk.poll() is None:
        found = our_processes(work).items()
        job = next((pid for pid, cmd in found if f"-m qdesign {rule}" in cmd and "bash" not in cmd), None)
        time.sleep(0.01)
    if job is None:
        smk.kill()
        print(f"kill -9 local: FAILED: the {rule} job was never seen running")
        return False
    t0 = time.monotonic()
    smk.send_signal(signal.SIGKILL)
    smk.wait()
    before = snapshot(work / "results")  # Snakemake removed the forced job's old output before starting it
    gone = wait_for(lambda: job not in our_processes(work), 5.0, 0.01)
    took = time.monotonic() - t0
    time.sleep(10)
    after = snapshot(work / "results")
    out = f"results/tiny/{rule}.parquet"
    changed = (k for k in set(before) | set(after) if before.get(k) != after.get(k))
    rewritten = sorted(k for k in changed if not k.startswith("logs/"))  # the worker logs its own end
    left = our_processes(work)
    print(
        f"kill -9 local: the {rule} job (pid {job}) ended {took:.2f}s after Snakemake was killed: {gone}; "
        f"files written in the 10 s after: {rewritten or 'none'} ({out}: {'there' if out[8:] in after else 'absent'}); "
        f"processes left: {left or 'none'}"
    )
    return gone and took < 2.0 and not rewritten and not left


def disk_full(base: Path) -> bool | None:
    if os.geteuid() != 0:
        print("disk full: skipped (needs root to mount a tmpfs)")
        return None
    work = base / "full"
    mnt = work / "results" / "big" / "float"  # not the study dir: Snakemake tries to remove empty output dirs
    mnt.mkdir(parents=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        print(f"disk full: skipped (mount failed: {res.stderr.strip()})")
        return None
    try:
        # width 1024: ~1.1 M weights, a 4+ MiB checkpoint that cannot fit in 1 MiB
        smk = snakemake(
            work,
            {
                "studies": {
                    "big": study(
                        model={"type": "fcdnn", "depth": 2, "widths": [1024]},
                        training={"epochs": 1, "lr": 0.01, "batch_size": 64},
                    )
                }
            },
        )
        code = smk.wait(timeout=600)
        logs = sorted((work / "results" / "logs" / "train_float").rglob("*.log"))
        text = logs[0].read_text(errors="replace") if logs else ""
        errors = [ln for ln in text.splitlines() if ln.startswith("qdesign: error:") or "Error" in ln]
        files = {str(p.relative_to(mnt)): p.stat().st_size for p in mnt.rglob("*") if p.is_file()}
        print(f"disk full: snakemake exit {code}; log of the cell ({len(text.splitlines())} lines), last lines:")
        for ln in text.splitlines()[-4:]:
            print(f"    {ln}")
        print(f"disk full: error lines: {errors}; files left on the full disk: {files or 'none'}")
        one_line = len(errors) == 1 and errors[0].startswith("qdesign: error:") and "Traceback" not in text
        return code != 0 and one_line and not files
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def export_places(base: Path) -> bool | None:
    if os.geteuid() != 0:
        print("export targets: skipped (needs root to mount a read-only file system)")
        return None
    import stat  # noqa: PLC0415

    sys.path.insert(0, str(REPO / "src"))
    from qdesign.core.config import validate_config  # noqa: PLC0415
    from qdesign.core.specs import float_spec, quant_spec  # noqa: PLC0415
    from qdesign.nn.cells import retrain, train_float  # noqa: PLC0415
    from qdesign.nn.data import prepare_dataset, write_prepared  # noqa: PLC0415

    work = base / "export"
    data = work / "results" / "data" / "digits.pt"
    write_prepared(prepare_dataset("digits"), data)
    cfg = validate_config({"device": "cpu", "studies": {"s": study()}})
    fdir, qdir = work / "results" / "s" / "float" / "w64-s0", work / "results" / "s" / "fixed" / "b2" / "w64-s0"
    train_float(float_spec(cfg, "s", 64, 0), data, fdir)
    retrain(quant_spec(cfg, "s", 64, 2, 0), data, fdir / "model.pt", qdir)
    ro = work / "read-only"
    ro.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True, text=True)
    if res.returncode != 0:
        print(f"export targets: skipped (mount failed: {res.stderr.strip()})")
        return None
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    ok = True
    try:
        for out, extra in ((ro / "net.qdpk", []), (Path("/proc/net.qdpk"), []), (Path("/dev/null"), ["--force"])):
            cmd = [sys.executable, "-m", "qdesign", "export", str(qdir), "--format", "packed", "--out", str(out)]
            run = subprocess.run([*cmd, "--verify", str(data), *extra], capture_output=True, text=True, env=env)
            lines = run.stderr.strip().splitlines()
            one = run.returncode == 1 and len(lines) == 1 and lines[0].startswith("qdesign: error:")
            print(f"export --out {out}: exit {run.returncode}; {run.stderr.strip()[:200]}")
            ok &= one and "Traceback" not in run.stderr
        left = sorted(p.name for p in ro.iterdir())
        null_ok = stat.S_ISCHR(os.lstat("/dev/null").st_mode)
        print(f"export targets: files on the read-only mount: {left or 'none'}; /dev/null a device: {null_ok}")
        if not null_ok:  # put the machine back as it was
            os.unlink("/dev/null")
            os.mknod("/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return ok and not left and null_ok
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--kill-only", action="store_true", help="only the kill -9 cases")
    ap.add_argument("--local-only", action="store_true", help="only the kill -9 during a local job case")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="qdesign-hostile-"))
    print(f"work dir: {base}")
    results = {
        "kill -9 of snakemake": None if args.local_only else kill_snakemake(base),
        "kill -9 of snakemake during a local job": kill_snakemake_during_local_job(base),
        "disk full": None if args.kill_only or args.local_only else disk_full(base),
    }
    results["export targets"] = None if args.kill_only or args.local_only else export_places(base)
    for name, ok in results.items():
        print(f"{name}: {'skipped' if ok is None else 'PASS' if ok else 'FAIL'}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0 if all(ok is not False for ok in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
