"""What decides the last bits of a CPU run, so that "bit for bit" can say on
what: the same config and seed give the same numbers on the same numeric
platform, and may differ in the last float32 bit elsewhere (oneDNN and the
BLAS pick kernels, and so summation orders, by the CPU's instruction set)."""

from __future__ import annotations

import platform
from pathlib import Path

# CPU flags that change which kernels torch/oneDNN/OpenBLAS run
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "sve")


def cpu_flags() -> list[str]:
    """The kernel-relevant flags of this CPU, from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have = set(value.split())
            return [f for f in _ISA_FLAGS if f in have]
    return []


def numeric_platform() -> dict:
    """A small JSON-able description: runs agree bit for bit when these agree."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    return {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
    }
