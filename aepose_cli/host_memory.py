"""Host memory for the network on CPU: freed activation buffers kept for the next pass.

A CPU forward pass of the full-size networks allocates and frees gigabytes of activations per
batch, in blocks of tens to hundreds of MB. By default glibc's malloc serves every block above
its mmap threshold (32 MB at most) with a fresh mapping and unmaps it on free, so each pass
faults in, and the kernel zeroes, every one of those pages again. Measured on a 2-core machine
(w32, batch 4, flip): 1.3-2 million page faults and about 4 of the 17 CPU-seconds of each batch
spent in the kernel. Told to serve large blocks from its heap and never to trim it, malloc
hands the same pages back from batch to batch and the pass takes about a quarter less time,
with the same numbers (where a buffer lives does not change the arithmetic). The cost: the
process keeps its peak memory between batches rather than returning it, which is the memory
the next batch needs anyway.

Only the main arena can serve a block larger than a thread heap (64 MB), so this helps the
network when it runs on the main thread, as it does in the single-process engine. A process
whose network runs on another thread (a Ray actor) needs a single arena from its start, which
glibc reads only from `GLIBC_TUNABLES` at start-up: `worker_environment` gives the variables
for such processes.

Settings the user made (`GLIBC_TUNABLES` naming malloc, or the `MALLOC_*_` variables) win:
then nothing is changed. Other C libraries (musl, macOS, Windows) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

# What a worker process gets: one arena (every thread allocates from the main heap), no mmap
# for large blocks, no trimming (the largest value the tunable takes).
_WORKER_TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615"

_USER_MALLOC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_applied: bool | None = None


def user_tuned_malloc(environ=os.environ) -> bool:
    """Whether the environment already says how malloc should behave."""
    return "glibc.malloc." in environ.get("GLIBC_TUNABLES", "") or any(name in environ for name in _USER_MALLOC_VARIABLES)


def keep_freed_memory() -> bool:
    """Make this process's malloc keep large freed blocks for reuse (once per process).

    Returns whether the setting is in force: False on a C library other than glibc, or where
    the user's environment already tunes malloc.
    """
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    if not sys.platform.startswith("linux") or user_tuned_malloc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc: its mallopt, if any, means something else
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # -1 disables trimming entirely (mallopt(3)); 0 large-block mappings leaves only the heap.
    return bool(mallopt(_M_TRIM_THRESHOLD, -1)) and bool(mallopt(_M_MMAP_MAX, 0))


def worker_environment(environ=os.environ) -> dict[str, str]:
    """Environment variables for processes that run the network on a thread of their own (Ray
    workers): glibc's malloc tuned from their start as `keep_freed_memory` tunes this one. Empty
    where the user tunes malloc already; other tunables the user set are kept."""
    if user_tuned_malloc(environ):
        return {}
    existing = environ.get("GLIBC_TUNABLES", "")
    return {"GLIBC_TUNABLES": f"{existing}:{_WORKER_TUNABLES}" if existing else _WORKER_TUNABLES}
