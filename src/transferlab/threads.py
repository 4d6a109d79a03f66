"""PyTorch's CPU threads: how they wait for each other.

PyTorch's CPU kernels run on OpenMP threads (GNU libgomp in its Linux wheels), one per core. At
the end of each parallel operation a thread that has finished spins, by default for 300,000 rounds,
before it sleeps. On a machine shared with another busy process (a second run, a browser, a test
suite), the thread it waits for is often descheduled, and the spinning takes the very core that
thread needs: measured on 2 cores (docs/speed.md), a fine-tuning step ran at 16-22 images a
second instead of 93 beside a busy process. ``GOMP_SPINCOUNT`` bounds the spinning; it is read
once, when the OpenMP library loads, so :func:`bound_spinning` runs when ``transferlab`` is
imported, before torch (the command always; in Python, when ``import transferlab`` comes first).
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"  # measured against the default and 1,000 to 100,000 rounds (docs/speed.md)


def bound_spinning() -> None:
    """Spin :data:`SPIN_COUNT` rounds before sleeping, unless ``GOMP_SPINCOUNT`` or
    ``OMP_WAIT_POLICY`` says otherwise already, or torch has loaded (too late: nothing is set)."""
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def spin_count() -> str:
    """What the threads of this process spin before sleeping (``metrics.json``)."""
    if "GOMP_SPINCOUNT" in os.environ:
        return os.environ["GOMP_SPINCOUNT"]
    policy = os.environ.get("OMP_WAIT_POLICY")
    return f"OMP_WAIT_POLICY={policy}" if policy else "libgomp's default (torch was loaded before transferlab)"
