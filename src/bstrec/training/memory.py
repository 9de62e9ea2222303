"""Keep freed memory in the process for the next training step (glibc only).

A CPU training step allocates and frees the same large tensors every time: the tower's
full-catalogue logits alone are B * L * n_items floats (10,240 x 3,615 x 4 bytes =
148 MB on ml-1m-u2999), and their softmax and gradients as many again. glibc serves
blocks above its mmap threshold (32 MB at most) with a fresh mmap and unmaps them on
free, so every step faults those pages in again, zeroed by the kernel: 74M page faults
and a quarter of the quickstart's CPU time in the kernel. Serving them from the heap
and not trimming it makes the pages stay mapped and reused (0.92 -> 0.62 s a step on
the 2-core machine, docs/experiments.md round 5); the price is that the process keeps
its peak memory until it exits, which a training process reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it; process-wide, idempotent.

    Returns whether it took effect (False off Linux or without glibc's mallopt).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
