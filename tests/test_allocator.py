"""bench.core.allocator: large blocks come from the heap that keeps freed memory; numbers unchanged."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from bench.core.allocator import keep_freed_memory
from bench.core.errors import BenchError

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                 reason="glibc's mallopt and mallinfo2")

# A 64 MiB tensor: glibc's default serves it by mmap (mallinfo2's hblkhd: bytes in mmap'd blocks),
# kept memory serves it from the heap. Then a seeded convolution stack on a seeded image, as hex.
PROBE = """
import ctypes, torch
from bench.core.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
print(keep_freed_memory())
x = torch.empty(16 * 2**20).fill_(1.0)
print(mallinfo2().hblkhd >= 64 * 2**20)
del x
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.PReLU(), torch.nn.Conv2d(64, 3, 3, padding=1))
with torch.no_grad():
    print(net(torch.rand(2, 3, 96, 96)).numpy().tobytes().hex())
"""


def probe(setting: str) -> list[str]:
    env = {**os.environ, "BENCH_MALLOC": setting, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@linux_glibc
def test_freed_memory_is_reused_and_numbers_do_not_change():
    kept, system = probe("keep"), probe("system")
    assert kept[:2] == ["True", "False"]  # applied; the large tensor came from the heap
    assert system[:2] == ["False", "True"]  # glibc's default: mmap'd, unmapped again when freed
    assert kept[2] == system[2] and len(kept[2]) == 2 * 3 * 96 * 96 * 4 * 2


def test_opt_out_and_bad_value():
    assert keep_freed_memory({"BENCH_MALLOC": "system"}) is False
    with pytest.raises(BenchError, match="BENCH_MALLOC='big': expected keep or system"):
        keep_freed_memory({"BENCH_MALLOC": "big"})
