"""The memory allocator: which one this process uses, and re-executing with tcmalloc.

Measured on this project's 2-core machines (benchmarks/results.md): with glibc's malloc,
EfficientNet-Lite0 spends much of its time in page faults; tcmalloc (Debian's
``libtcmalloc-minimal4``) made training steps 1.22x and inference 1.68x faster, jemalloc was
slower (0.71x). The ``transferlab`` command (``entry``) therefore re-executes itself with tcmalloc preloaded when the library is
installed, unless ``TRANSFERLAB_ALLOCATOR=system``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TCMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)


def allocator_in_use() -> str:
    return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc"


def preload_tcmalloc(argv: list[str]) -> None:
    """Re-execute this command with tcmalloc preloaded, if installed and not yet loaded or declined."""
    if os.environ.get("TRANSFERLAB_ALLOCATOR", "tcmalloc") != "tcmalloc" or allocator_in_use() == "tcmalloc":
        return
    library = next((p for p in TCMALLOC_PATHS if Path(p).exists()), None)
    if library is None:
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    os.execve(sys.executable, [sys.executable, "-m", "transferlab", *argv], {**os.environ, "LD_PRELOAD": preload})

