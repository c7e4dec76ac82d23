"""Training keeps freed memory in the heap: large blocks are not mmap'd (and unmapped on free)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Prints how many bytes glibc holds in mmap'd blocks while a 64 MB array is alive.
PROBE = """
import ctypes, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print("unsupported")
    sys.exit()
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from exporter.malloc import keep_freed_memory
    assert keep_freed_memory()
block = np.ones(64 * 1024 * 1024, dtype=np.uint8)
print(libc.mallinfo2().hblkhd)
"""


def _mmapped_bytes(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* settings from the caller
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    if out == "unsupported":
        pytest.skip("this C library has no mallinfo2 (glibc >= 2.33)")
    return int(out)


def test_large_blocks_come_from_the_heap_after_tuning() -> None:
    block = 64 * 1024 * 1024
    assert _mmapped_bytes("default") >= block, "glibc's default: a 64 MB block is mmap'd"
    assert _mmapped_bytes("tuned") < block, "tuned: it comes from the heap and stays there"
