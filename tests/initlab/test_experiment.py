import json
import os
import subprocess

import pytest
import torch
from conftest import CHROMIUM, CLI, render
from torch import nn

from transferlab.errors import ConfigError
from transferlab.heads import make_head
from transferlab.initlab.config import LabConfig
from transferlab.initlab.experiment import build_lab_model, layer_statistics, unit_symmetry
from transferlab.inits import init_module


def _batch(n=512):
    torch.manual_seed(0)
    return torch.rand(n, 784), torch.randint(0, 10, (n,))


def test_zeros_make_every_hidden_unit_identical_forever():
    model = init_module(build_lab_model("mlp"), "zeros")
    x, y = _batch()
    stats = layer_statistics(model, x, y)
    assert [s["distinct_units"] for s in stats[:2]] == [1, 1]
    assert all(s["mean_cosine"] == pytest.approx(1.0) for s in stats[:2])
    assert stats[0]["gradient_std"] == 0.0  # no gradient reaches the hidden layers: they can never change
    assert unit_symmetry(torch.randn(64, 32))["distinct_units"] == 64


def test_ones_stay_identical_under_training_without_dropout():
    model = init_module(build_lab_model("deep-mlp"), "constant:0.01")
    x, y = _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    hidden = layer_statistics(model, x, y)[:-1]
    assert all(s["distinct_units"] == 1 for s in hidden)


def test_lsuv_gives_unit_variance_outputs_on_its_batch():
    model = build_lab_model("deep-mlp")
    x, _ = _batch()
    init_module(model, "lsuv", sample=x)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 11
    assert all(abs(o.var().item() - 1) < 0.06 for o in outputs)


def test_deep_network_scales_vanish_for_poor_inits_and_stay_for_kaiming_and_lsuv():
    x, y = _batch()

    def activation_stds(init):
        torch.manual_seed(0)
        model = init_module(build_lab_model("deep-mlp"), init, sample=x)
        return [s["activation_std"] for s in layer_statistics(model, x, y)[:-1]]

    general = activation_stds("general-rule")
    assert general[-1] < general[0] / 1000  # vanishes: each ReLU layer divides the variance by about 6
    for init in ("kaiming-normal", "lsuv"):
        stds = activation_stds(init)
        assert max(stds) / min(stds) < 3, (init, stds)


def test_lab_config_and_lsuv_head_errors():
    with pytest.raises(ConfigError, match="got 'he'"):
        LabConfig(inits=("he",))
    with pytest.raises(ConfigError, match="model"):
        LabConfig(model="resnet")
    with pytest.raises(ConfigError, match="needs a batch"):
        make_head(16, 3, init="lsuv")


@pytest.mark.slow
def test_init_lab_end_to_end_on_fashion_mnist(tmp_path):
    command = [CLI, "init-lab", "--inits", "zeros", "kaiming-normal", "--seeds", "2", "--epochs", "1",
               "--train-samples", "3000", "--out", str(tmp_path / "lab")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "lab" / "metrics.json").read_text())
    zeros, kaiming = metrics["results"]["zeros"], metrics["results"]["kaiming-normal"]
    assert zeros["val_accuracy_mean"] < 0.2 and zeros["distinct_units_at_init"][:2] == [1, 1]
    assert kaiming["val_accuracy_mean"] > 0.65 and kaiming["seeds"] == 2
    assert set(zeros) >= {"val_accuracy_mean", "val_accuracy_std", "final_loss_mean"}
    assert metrics["num_train"] == 2400 and metrics["num_val"] == 600
    assert "| zeros |" in result.stdout
    for name in ("loss_curves.png", "loss_curves_zoom.png", "accuracy.png", "symmetry.png", "scales.png", "report.html"):
        assert (tmp_path / "lab" / name).exists(), name
    if CHROMIUM:  # the report as a browser renders it: every plot loads
        seen = render(tmp_path / "lab" / "report.html", tmp_path)
        assert seen["images"] == 5 and seen["broken"] == 0 and seen["tables"] >= 2
