"""Benchmark of ``l2_optimal_step``: optimality against a dense brute force, and speed.

For Gaussian, uniform and Laplacian tensors of 100, 10,000 and 1,000,000
elements and every bits from 2 to 8, prints

* ratio = L2 error of our step / best L2 error of a dense brute-force search
  (target: <= 1.001), the brute force evaluating the error element by element
  on 800 log-spaced steps and then 800 linear steps around the best one;
* time of ``l2_optimal_step`` (best of 3; target: <= 250 ms at 1,000,000 weights).

Run: ``python benchmarks/step_search.py [--threads 2] [--out benchmarks/out/step_search.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from qdesign.quantize import l2_optimal_step, max_level


def sample(dist: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dist == "gaussian":
        return torch.randn(n, generator=g)
    if dist == "uniform":
        return torch.rand(n, generator=g) * 2 - 1
    u = torch.rand(n, generator=g, dtype=torch.float64) - 0.5  # Laplace by inverse CDF
    return (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()


def errors(w64: torch.Tensor, bits: int, steps: np.ndarray) -> np.ndarray:
    k = max_level(bits)
    return np.array([float(((w64 - torch.clamp(torch.round(w64 / s), -k, k) * s) ** 2).sum()) for s in steps])


def brute_force(w: torch.Tensor, bits: int, n_grid: int = 800) -> float:
    w64 = w.to(torch.float64)
    k = max_level(bits)
    amax = float(w64.abs().max())
    coarse = np.geomspace(amax / (k + 0.5) * 0.05, 2 * amax, n_grid)
    ec = errors(w64, bits, coarse)
    i = int(np.argmin(ec))
    fine = np.linspace(coarse[max(i - 2, 0)], coarse[min(i + 2, n_grid - 1)], n_grid)
    return float(min(ec.min(), errors(w64, bits, fine).min()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 1_000_000])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/step_search.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    print(f"{'n':>9} {'dist':>9} {'bits':>4} {'ratio':>9} {'ms':>8}")
    for n in args.sizes:
        for dist in ("gaussian", "uniform", "laplacian"):
            w = sample(dist, n, seed=n % 9973)
            for bits in range(2, 9):
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    step = l2_optimal_step(w, bits)
                    times.append(time.perf_counter() - t0)
                ours = float(errors(w.to(torch.float64), bits, np.array([step]))[0])
                ref = brute_force(w, bits)
                ratio = ours / ref if ref > 0 else 1.0
                ms = 1e3 * min(times)
                rows.append(dict(n=n, dist=dist, bits=bits, ratio=ratio, ms=ms, step=step))
                flag = "" if ratio <= 1.001 and (n < 1_000_000 or ms <= 250) else "  MISSED"
                print(f"{n:>9} {dist:>9} {bits:>4} {ratio:>9.6f} {ms:>8.1f}{flag}", flush=True)
    worst_ratio = max(r["ratio"] for r in rows)
    big = [r["ms"] for r in rows if r["n"] == max(args.sizes)]
    print(
        f"worst ratio {worst_ratio:.6f} (target <= 1.001); "
        f"slowest at n={max(args.sizes)}: {max(big):.1f} ms (target <= 250 ms)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(dict(machine=platform.processor() or platform.machine(), threads=args.threads, rows=rows), indent=1)
    )


if __name__ == "__main__":
    main()
