"""SIGKILL in the middle of a fine-tuning epoch, then --resume: the same result as no interruption."""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import CLI, write_folder

pytestmark = pytest.mark.slow


def _command(data, out):
    return [CLI, "train", str(data), "--strategy", "finetune", "--resolution", "48", "--epochs", "4",
            "--batch-size", "16", "--freeze-bn", "--patience", "10", "--out", str(out)]  # fmt: skip


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    data = write_folder(tmp_path / "d", per_class=40)
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    full = subprocess.run(_command(data, tmp_path / "full"), capture_output=True, text=True, env=env, timeout=600)
    assert full.returncode == 0, full.stderr
    expected = json.loads((tmp_path / "full" / "metrics.json").read_text())

    out = tmp_path / "killed"
    process = subprocess.Popen(_command(data, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"

    resumed = subprocess.run(_command(data, out) + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"] == expected["history"]
    assert metrics["val_accuracy"] == expected["val_accuracy"]
