"""Two CPU processes under torchrun (gloo): sharded feature extraction, DDP fine-tuning, one writer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_folder

pytestmark = pytest.mark.slow
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def test_two_process_finetune(tmp_path):
    data = write_folder(tmp_path / "d", per_class=14)
    (data / "red" / "broken.png").write_bytes(b"not a png")
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "transferlab", "train", str(data),
               "--strategy", "finetune", "--resolution", "32", "--epochs", "2",
               "--batch-size", "8", "--freeze-bn", "--val-fraction", "0.25", "--out", str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2
    assert metrics["num_train"] + metrics["num_val"] == 42 and metrics["skipped_files"] == 1
    assert metrics["val_accuracy"] >= 0.9
    assert result.stdout.count("validation accuracy") == 1  # only rank 0 reports
    assert (tmp_path / "run" / "model" / "bundle.json").exists()


def test_python_api_under_torchrun(tmp_path):
    """``tl.train()`` joins the process group itself: a user's script runs under torchrun unchanged."""
    data = write_folder(tmp_path / "d", per_class=10)
    script = tmp_path / "train.py"
    script.write_text(  # each process reports into its own file: their printed lines would interleave
        "import os, sys, pathlib, transferlab as tl\n"
        "result = tl.train(sys.argv[1], strategy='head', resolution=32, out=sys.argv[2])\n"
        "pathlib.Path(sys.argv[3], 'rank' + os.environ['RANK']).write_text(str(result.metrics['processes']))\n"
    )
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [TORCHRUN, "--standalone", "--nproc_per_node=2", str(script), str(data), str(tmp_path / "run"), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["2", "2"]  # both joined the group
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["processes"] == 2
