"""End to end on a real Fashion-MNIST subset (Debian's dataset-fashion-mnist, installed by make)."""

import json
import os
import subprocess

import pytest
from conftest import CLI

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    env = {**os.environ, "TRANSFERLAB_CACHE": str(root / "cache"), "TQDM_DISABLE": "1"}
    command = [CLI, "train", "fashion-mnist", "--strategy", "head", "--samples-per-class", "30",
               "--test-per-class", "30", "--resolution", "64", "--out", str(root / "run")]  # fmt: skip
    runs = []
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        runs.append((result, json.loads((root / "run" / "metrics.json").read_text())))
    return runs


def test_head_on_imagenet_features_classifies_fashion_mnist(fashion_runs):
    result, metrics = fashion_runs[0]
    assert metrics["num_train"] == 300 and metrics["num_test"] == 300 and metrics["num_val"] == 300
    assert metrics["test_accuracy"] >= 0.70, metrics["test_accuracy"]
    assert f"test accuracy: {metrics['test_accuracy']:.4f} (300 images)" in result.stdout


def test_second_run_reuses_the_feature_cache(fashion_runs):
    (_, first), (_, second) = fashion_runs
    assert first["feature_cache"] == "miss" and second["feature_cache"] == "hit"
    assert second["test_accuracy"] == first["test_accuracy"]
    assert second["features_seconds"] * 5 < first["features_seconds"]
