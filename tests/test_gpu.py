"""Every strategy the default may train, and prediction, on a CUDA GPU: skipped where there is none
(run on a lent GPU with ``make gpu-check``'s set-up, docs/speed.md). A CPU-only suite cannot see a
model whose parts sit on two devices - the first GPU run found two such faults, a new head left on
the CPU beside a body on the GPU, and a fresh normalization around a GPU backbone.

``TRANSFERLAB_TEST_DEVICE=cpu`` runs the same tests on the CPU (to check the tests themselves)."""

import os

import pytest
import torch

import transferlab as tl
from transferlab.testing import write_image_folder

DEVICE = os.environ.get("TRANSFERLAB_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("gpu") / "colours", per_class=16)


@pytest.mark.parametrize("strategy", ["head", "multicut", "finetune", "ensemble", "auto"])
def test_each_strategy_the_default_may_train_runs_whole_on_the_device_and_predicts_there(colours, tmp_path, strategy):
    steps = {} if tl.STRATEGIES.get(strategy) and tl.STRATEGIES[strategy].computed else {"epochs": 3}
    result = tl.train(str(colours), strategy=strategy, resolution=32, device=DEVICE, out=str(tmp_path / "run"),
                      cache_dir=str(tmp_path / "cache"), **steps)  # fmt: skip
    assert result.metrics["device"].partition(":")[0] == DEVICE
    assert result.metrics["val_accuracy"] > 0.6  # three colours: chance is 0.33
    model = tl.load(tmp_path / "run" / "model", device=DEVICE)
    predictions = model.predict(sorted((colours / "red").glob("*.png"))[:4], top_k=1)
    assert [p.top[0][0] for p in predictions].count("red") >= 3
