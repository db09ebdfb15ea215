"""``keep_big_buffers()``: stop glibc from mapping and unmapping every large body buffer.

Why: by default glibc serves each allocation above ~128 KiB-32 MiB (its dynamic threshold)
with a fresh ``mmap`` and returns it with ``munmap`` when freed, so every 1 MiB body and
every ~200 KiB socket read costs a page fault per 4 KiB page touched. Measured on the
plugin connection with 1 MiB answers (benchmarks/RESULTS.md, "Large bodies"): 826 -> 153 µs
of kernel time per answer in the reader. Keeping such buffers in the heap (and up to
``TRIM`` bytes of freed heap before giving it back) makes them reusable.

A no-op where there is no glibc ``mallopt`` (musl, macOS): bodies still work, just slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_big_buffers"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit: above the 16 MiB max frame
TRIM = 64 * 1024 * 1024  # freed heap kept for reuse before it is returned to the kernel

_done = False


def keep_big_buffers() -> bool:
    """Tune this process's allocator once (idempotent); True when it was applied."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM)
    )
    return _done
