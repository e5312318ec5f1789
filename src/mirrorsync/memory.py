"""Memory a run gives back between stacks (glibc's allocator, Linux).

A stack's sync holds its index (tens of MB of JSON), the nodes decoded from it
and SQLite's pages for a moment, then frees them. glibc does not hand freed
memory back by itself: its mmap threshold rises to the largest block freed
(up to 32 MB), so the next index lands in the heap of whichever thread
allocated it (the event loop, a decoding worker, SQLite's thread), and a heap
keeps its freed pages. A run over many stacks then peaked at 3-5x one stack's
(440 MB for 12 stacks of 10,000 specs against 94 MB for one of them), though
what Python held stayed flat (tracemalloc: 40-60 MB).

:func:`tune` fixes the thresholds (large blocks are mapped and unmapped, the
top of a heap is trimmed at 1 MiB); :func:`give_back` returns every free page
of every heap after a stack (``malloc_trim``). Elsewhere (macOS, musl) both do
nothing.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

#: mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks from this size up are mapped on their own, and unmapped when freed. Above
#: asyncio's 256 KiB receive buffer: every ``recv`` on a socket allocates one (then
#: shrinks it to what arrived), and at 128 kB each was an mmap, an mremap and a
#: munmap, three system calls and a page fault per response (a manifest crawl:
#: 60,000 calls for 20,000 manifests, ~6% of its CPU).
MMAP_THRESHOLD = 512 * 1024
#: A heap's free top past this size is given back at once. Above the receive
#: buffer too, or the shrunk buffer's free tail is trimmed (brk) at every recv.
TRIM_THRESHOLD = 1024 * 1024


@cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes.util  # here: a command that syncs nothing never pays for it
    except ImportError:  # a Python built without ctypes
        return None
    return _load(ctypes.util.find_library("c") or "libc.so.6")


def _load(name: str) -> Any:
    """The C library ``name`` if it has glibc's ``mallopt`` and ``malloc_trim``, else
    None (musl has no ``malloc_trim``; a library that will not load is no error)."""
    import ctypes

    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def tune() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; whether it could."""
    libc = _libc()
    if libc is None:
        return False
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def give_back() -> None:
    """Return the free pages of every heap to the system (after a stack's commit)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
