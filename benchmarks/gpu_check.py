"""GPU check: a slice of config/paper.yaml through the real workflow on one device.

Run by benchmarks/gpu_check.sh (see there). Three runs of the same cells (MNIST
FCDNN depth 2, widths 256 and 1024, bits 2 and float, seed 0):

  A. one cell at a time on DEVICE, through the warm worker (--cores 1);
  B. the same cells several at once on the same device (--cores N, 1 thread each);
  C. the same cells on CPU (the reference; skipped when DEVICE is cpu: A is the CPU run).

Prints per-epoch times from the cell logs, wall times, GPU memory and
utilisation sampled with nvidia-smi, and whether B equals A and A matches the
CPU run within TOL (test and validation error, absolute). Exits non-zero if a
run fails or a comparison misses.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import yaml

from qdesign.run.invocation import snakemake_command

REPO = Path(__file__).resolve().parents[1]
STUDY = "mnist-fcdnn-d2"
COLS = ["width", "bits", "seed", "test_error", "val_error", "direct_test_error"]


def make_config(device: str, epochs: int, subset: int, threads: int, data_dir: Path) -> dict:
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    study = dict(paper["studies"][STUDY])
    study.update(
        model={**study["model"], "widths": [256, 1024]},
        bits=[2],
        seeds=[0],
        threads=threads,
        training={**study["training"], "epochs": epochs},
        retraining={**study["retraining"], "epochs": epochs},
    )
    if subset:
        study["train_subset"] = subset
    return {
        "data_dir": str(data_dir),
        "download": False,
        "device": device,
        "split_seed": paper["split_seed"],
        "worker": True,
        "plots": {"formats": ["png"]},
        "studies": {STUDY: study},
    }


class GpuSampler:
    """nvidia-smi every 0.5 s in a thread: peak memory used and mean/max utilisation."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self.available = shutil.which("nvidia-smi") is not None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            res = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if res.returncode == 0 and res.stdout.strip():
                mem, util = res.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(mem), float(util)))
            self._stop.wait(0.5)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def report(self) -> str:
        if not self.samples:
            return "GPU: no nvidia-smi samples" if self.available else "GPU: nvidia-smi not found (no GPU)"
        mem = [m for m, _ in self.samples]
        util = [u for _, u in self.samples]
        return (
            f"GPU: peak memory used {max(mem):.0f} MiB, utilisation mean {sum(util) / len(util):.0f}% "
            f"max {max(util):.0f}% ({len(self.samples)} samples)"
        )


def run(name: str, work: Path, config: dict, cores: int, timeout: int) -> tuple[pd.DataFrame, float, GpuSampler]:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = snakemake_command(d, "--configfile", d / "config.yaml", "--cores", cores, f"results/{STUDY}/summary.parquet")
    t0 = time.perf_counter()
    with GpuSampler() as gpu:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"[gpu_check] run {name} failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return pd.read_parquet(d / "results" / STUDY / "summary.parquet"), wall, gpu


def epoch_times(d: Path) -> str:
    lines = []
    for log in sorted((d / "results" / "logs").rglob("*.log")):
        if log.name == "worker.log":
            continue
        times = [float(t) for t in re.findall(r"^epoch \d+/\d+ loss .* ([0-9.]+)s$", log.read_text(), re.M)]
        if times:
            rel = log.relative_to(d / "results" / "logs")
            lines.append(f"  {str(rel):<45} epochs {' '.join(f'{t:.2f}' for t in times)} s")
    return "\n".join(lines)


def worker_line(d: Path) -> str:
    """What the warm worker logged: that it served the cells (else they ran as fresh processes)."""
    log = d / "results" / "logs" / "worker.log"
    served = re.findall(r"served (\d+) jobs", log.read_text()) if log.exists() else []
    return f"warm worker: served {served[-1]} jobs" if served else "warm worker: NOT used"


def compare(a: pd.DataFrame, b: pd.DataFrame, tol: float) -> tuple[bool, float]:
    a = a[COLS].sort_values(["width", "bits", "seed"]).reset_index(drop=True)
    b = b[COLS].sort_values(["width", "bits", "seed"]).reset_index(drop=True)
    if len(a) != len(b) or not (a[["width", "bits", "seed"]] == b[["width", "bits", "seed"]]).all().all():
        return False, float("inf")
    diff = (a[COLS[3:]] - b[COLS[3:]]).abs().max().max()
    diff = 0.0 if pd.isna(diff) else float(diff)
    return diff <= tol, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=4, help="cells at once in run B")
    ap.add_argument("--tol", type=float, default=0.01, help="largest |error difference| against the CPU run")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "benchmarks" / "out" / "gpu_check"))
    ap.add_argument("--timeout", type=int, default=280)
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    data_dir = Path(args.data_dir).resolve()
    ncpu = os.cpu_count() or 1
    print(
        f"[gpu_check] device {args.device}, {args.epochs} epochs, train_subset {args.train_subset or 'all'}, "
        f"data {data_dir}, {ncpu} CPUs",
        flush=True,
    )
    ok = True

    cfg = make_config(args.device, args.epochs, args.train_subset, 1, data_dir)
    a, wall_a, gpu_a = run("A-serial", work, cfg, 1, args.timeout)
    print(f"\nA: one cell at a time on {args.device}: {len(a)} cells in {wall_a:.1f} s\n{gpu_a.report()}")
    print(worker_line(work / "A-serial"))
    print(epoch_times(work / "A-serial"), flush=True)

    b, wall_b, gpu_b = run("B-parallel", work, cfg, args.parallel, args.timeout)
    same, diff = compare(a, b, 0.0)
    ok &= same
    print(
        f"\nB: {args.parallel} cells at once on {args.device}: {len(b)} cells in {wall_b:.1f} s "
        f"({wall_a / wall_b:.2f}x A)\n{gpu_b.report()}"
    )
    print(worker_line(work / "B-parallel"))
    print(epoch_times(work / "B-parallel"))
    print(f"B equals A: {'yes' if same else f'NO (max |diff| {diff:.4g})'}", flush=True)

    if args.device == "cpu":
        print(
            "\nC: skipped (the device is the CPU: A is the CPU run). The GPU run is pending: "
            "run `benchmarks/gpu_check.sh` on a machine with a GPU."
        )
    else:
        threads = max(1, ncpu // 2)
        c, wall_c, _ = run(
            "C-cpu", work, make_config("cpu", args.epochs, args.train_subset, threads, data_dir), 2, args.timeout
        )
        match, diff = compare(a, c, args.tol)
        ok &= match
        print(f"\nC: CPU reference ({threads} threads per cell, 2 cells at once): {len(c)} cells in {wall_c:.1f} s")
        print(epoch_times(work / "C-cpu"))
        print(f"{args.device} matches CPU within {args.tol}: {'yes' if match else 'NO'} (max |diff| {diff:.4g})")
    print("\n" + a[COLS].sort_values(["width", "bits"]).to_string(index=False))
    print(f"\n[gpu_check] {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
