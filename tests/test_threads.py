"""PyTorch's threads: how long they spin, set before torch loads."""

import os
import subprocess
import sys

from transferlab.threads import SPIN_COUNT


def _spin_count_in_a_fresh_process(env: dict, imports: str = "import transferlab") -> str:
    code = f"{imports}; import os; from transferlab.threads import spin_count; print(os.environ.get('GOMP_SPINCOUNT'), spin_count())"
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_importing_transferlab_bounds_the_spinning_unless_the_user_set_it():
    assert _spin_count_in_a_fresh_process({}) == f"{SPIN_COUNT} {SPIN_COUNT}"
    assert _spin_count_in_a_fresh_process({"GOMP_SPINCOUNT": "300000"}) == "300000 300000"
    assert _spin_count_in_a_fresh_process({"OMP_WAIT_POLICY": "ACTIVE"}) == "None OMP_WAIT_POLICY=ACTIVE"


def test_after_torch_has_loaded_nothing_is_set_and_metrics_say_libgomps_default_ran():
    found = _spin_count_in_a_fresh_process({}, imports="import torch, transferlab")
    assert found == "None libgomp's default (torch was loaded before transferlab)"
