"""PyTorch's threads: how long they spin, set before torch loads; one thread for tiny work."""

import os
import subprocess
import sys

import pytest
import torch

from transferlab.threads import SPIN_COUNT, one_thread


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


def test_one_thread_restores_the_thread_count_even_when_the_block_fails(two_threads):
    with pytest.raises(RuntimeError), one_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2
