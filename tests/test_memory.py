"""``mirrorsync.memory``: glibc's allocator tuned where there is one, nothing elsewhere."""

from __future__ import annotations

import platform
import sys

from mirrorsync import memory


def test_glibc_is_tuned_and_anything_else_left_alone() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert memory.tune() is glibc
    memory.give_back()  # never fails, whatever the C library


def test_a_c_library_that_will_not_load_is_no_error() -> None:
    assert memory._load("libno-such-library.so.9") is None
