"""Host memory for the network on CPU: freed activation buffers kept for the next pass.

A CPU forward pass of the full-size networks allocates and frees gigabytes of activations per
batch, in blocks of tens to hundreds of MB. By default glibc's malloc serves every block above
its mmap threshold (32 MB at most) with a fresh mapping and unmaps it on free, so each pass
faults in, and the kernel zeroes, every one of those pages again. Measured on a 2-core machine
(w32, batch 4, flip): 1.3-2 million page faults and about 4 of the 17 CPU-seconds of each batch
spent in the kernel. Told to serve large blocks from its heap and never to trim it, malloc
hands the same pages back from batch to batch and the pass runs 1.25-1.37x faster (w32), with
the same numbers (where a buffer lives does not change the arithmetic). The cost: the
process keeps its peak memory between batches rather than returning it, which is the memory
the next batch needs anyway.

Only the main arena can serve a block larger than a thread heap (64 MB), so this helps the
network when it runs on the main thread, as it does in the single-process engine. A process
whose network runs on another thread (a Ray actor) needs a single arena from its start, which
glibc reads only from `GLIBC_TUNABLES` at start-up: `worker_environment` gives the variables
for such processes.

What is kept is bounded by what one input shape needs. When the shape of the passes changes (a
folder of photos of several sizes), the freed blocks of one shape fit the next only in part and
the heap grew by fragmentation (measured over 40 COCO photos of 37 sizes: a 3.0 GB peak against
2.45 GB with malloc's defaults, and 2.8 GB with a cap checked after each pass). So `before_pass`
gives the free memory back to the kernel (`malloc_trim`) before a pass whose input shape differs
from the previous one's: the peak stays the default's (2.41 GB on those photos), and a run of same-shape passes (a
video, a camera's photos, batches of one canvas) pays the page faults only on its first pass.

Who turns it on: the process's owner, never the library by itself (a setting of the whole
process, with no undo, is not a library's to make). The command line does (`cli/runtime.py`,
for a network that runs on this process's CPU with torch); a library user who wants the same
speed calls `keep_freed_memory()` once, before the first pass (also `aepose_cli.keep_freed_memory`).
The torch backend then trims on a shape change (`before_pass`) wherever the setting is in force,
including a worker process started with `worker_environment`'s tunables (`in_force`).

Settings the user made (`GLIBC_TUNABLES` naming malloc, or the `MALLOC_*_` variables) win:
then nothing is changed (a worker started with `worker_environment`'s own tunables still gets
the trims); `AEPOSE_KEEP_FREED_MEMORY=0` turns the whole thing off. Other C
libraries (musl, macOS, Windows) and glibc older than 2.33 (no `mallinfo2`, which
`free_heap_bytes` reports from) are left alone.
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
_libc = None
_last_shape: tuple | None = None  # the input shape of the last pass


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


def user_tuned_malloc(environ=os.environ) -> bool:
    """Whether the environment already says how malloc should behave (or that aepose should not)."""
    if environ.get("AEPOSE_KEEP_FREED_MEMORY", "").strip().lower() in ("0", "false", "no", "off"):
        return True
    return "glibc.malloc." in environ.get("GLIBC_TUNABLES", "") or any(name in environ for name in _USER_MALLOC_VARIABLES)


def keep_freed_memory() -> bool:
    """Make this process's malloc keep large freed blocks for reuse (once per process): the
    opt-in of a process's owner (see the module's docstring); the library never calls it.

    Returns whether the setting is in force: False on a C library other than glibc, or where
    the user's environment already tunes malloc.
    """
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    global _libc
    libc = _glibc()
    if libc is None:
        return False
    if _WORKER_TUNABLES in os.environ.get("GLIBC_TUNABLES", ""):
        _libc = libc  # started by `worker_environment`: in force already, only the trims remain
        return True
    if user_tuned_malloc():
        return False
    # -1 disables trimming entirely (mallopt(3)); 0 large-block mappings leaves only the heap.
    if not (libc.mallopt(_M_TRIM_THRESHOLD, -1) and libc.mallopt(_M_MMAP_MAX, 0)):
        return False
    _libc = libc
    return True


def in_force() -> bool:
    """Whether this process keeps freed memory: `keep_freed_memory` was called, or the process
    was started with `worker_environment`'s tunables (then the trims are taken up here, which
    changes nothing else). Never turns the setting on."""
    global _applied, _libc
    with _lock:
        if _applied is None and _WORKER_TUNABLES in os.environ.get("GLIBC_TUNABLES", ""):
            libc = _glibc()
            if libc is not None:
                _libc, _applied = libc, True
        return bool(_applied)


def _glibc():
    """This process's glibc with mallopt, mallinfo2 and malloc_trim typed, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallinfo2"):
            return None  # not glibc (its mallopt would mean something else), or before 2.33
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        libc.mallinfo2.argtypes = ()
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def free_heap_bytes() -> int | None:
    """Bytes malloc holds free in its heaps (None where `keep_freed_memory` is not in force)."""
    if _libc is None:
        return None
    return int(_libc.mallinfo2().fordblks)


def before_pass(shape: tuple) -> None:
    """Call before each network pass with its input's shape: a new shape starts from a heap
    given back to the kernel (see the module's docstring); the same shape reuses it. Does
    nothing where the setting is not in force (`in_force`)."""
    global _last_shape
    if _libc is None and not in_force():
        return
    with _lock:
        if _last_shape is not None and shape != _last_shape:
            _libc.malloc_trim(0)
        _last_shape = tuple(shape)


def worker_environment(environ=os.environ) -> dict[str, str]:
    """Environment variables for processes that run the network on a thread of their own (Ray
    workers): glibc's malloc tuned from their start as `keep_freed_memory` tunes this one. Empty
    where the user tunes malloc already; other tunables the user set are kept."""
    if user_tuned_malloc(environ):
        return {}
    existing = environ.get("GLIBC_TUNABLES", "")
    return {"GLIBC_TUNABLES": f"{existing}:{_WORKER_TUNABLES}" if existing else _WORKER_TUNABLES}
