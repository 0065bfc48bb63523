"""Keep a job's freed memory for reuse instead of handing it back to the kernel.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a
block above its mmap threshold (128 KB at first, adapting up to 32 MB) with a
fresh ``mmap`` and returns it with ``munmap`` when freed, and it trims freed
memory at the top of its heap back to the kernel. Every batch's activations
are such blocks, so each one is a fresh mapping that page-faults on first
touch (the kernel zeroes every 4 KB page). On this project's virtual
machines a fault costs 1-2 us: the first convolution of the width-32 CPU CNN
(128 images, a 12.8 MB output) took 12.4 ms, of which about 10 ms were
125,000 page faults per 20 calls; with the settings below, 2.1 ms
(docs/performance.md, seventh pass).

:func:`reuse_freed_memory` raises the mmap threshold to glibc's maximum
(32 MB) and the trim threshold to 1 GB, so freed blocks stay in the heap and
the next batch reuses them. Only where memory comes from: no number changes
(the golden tables pin it). A job's peak memory is what it is either way;
what stays mapped after the peak is freed memory the job is likely to use
again. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**30

_done: bool | None = None


def reuse_freed_memory() -> bool:
    """Set the thresholds once per process (a job's); True where glibc took them."""
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # glibc returns 1 on success; musl's stub returns 0
            _done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _done
