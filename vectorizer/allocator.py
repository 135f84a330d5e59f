"""glibc malloc settings for the worker process: keep freed memory while batches run.

A batch of a few hundred 1536-d chunks allocates megabytes at a time (the provider's
answer, its decoded vectors, the COPY data). With glibc's default, dynamic thresholds those
blocks are mapped and unmapped, or the heap is trimmed and regrown, every batch, and the
kernel faults and zeroes the same pages again: on the 20,000-row backfill benchmark ~120k
page faults, and decoding one 400-vector answer took 10 ms instead of 1.8. Fixed thresholds
above a batch's size keep those pages for the next batch; `release` hands the memory back
once the queue is drained, so an idle daemon does not sit on its busiest moment.

Only the `vectorizer-worker` command calls `tune`: a program that embeds the worker keeps
its own allocator settings. glibc's own `MALLOC_*_` environment variables, when set, win.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024 * 1024  # blocks below this come from the heap, never mmap
TRIM_THRESHOLD = 256 * 1024 * 1024  # free memory kept at the heap's top between batches
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_libc: ctypes.CDLL | None = None


def tune() -> bool:
    """Sets the thresholds when this is glibc and the user set none; whether it did."""
    global _libc
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(
        _M_TRIM_THRESHOLD, TRIM_THRESHOLD
    )
    if not ok:
        log.debug("glibc refused the malloc thresholds; keeping its defaults")
        return False
    _libc = libc
    return True


def release() -> None:
    """Returns the heap's free memory to the system (after `tune`, when a drain ended)."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - musl and others have no such symbol
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc
