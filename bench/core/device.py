"""One parser for ``--device`` values, shared by every command and the Python API."""
from __future__ import annotations

from bench.core.errors import BenchError

CHOICES = "auto, cpu, cuda or cuda:N"


def check_device(name: str) -> str:
    """Validate a device name without importing torch for the common CPU cases; returns it."""
    if name in ("auto", "cpu"):
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        import torch

        if not torch.cuda.is_available():
            raise BenchError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise BenchError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return name
    raise BenchError(f"--device {name!r}: expected {CHOICES}")


def parse_device(name: str):
    """A ``torch.device`` for ``name`` (``auto``: CUDA when available, else CPU)."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
