"""WiSE-FT interpolation (``--interpolate``): the ends of the line are the probe and the fine-tuned
network exactly, auto chooses on validation, the chosen network saves, reloads and exports like
any other, and bad settings are refused in one line."""

import dataclasses
import json

import pytest
import torch
from torch import nn

import transferlab as tl
from transferlab.trainer.interpolate import (
    ALPHAS,
    FIXED_ALPHA,
    auto_alpha,
    best_alpha,
    blended,
    interpolate,
    load_blend,
    snapshot,
)


def _network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 3))  # fmt: skip
    network.train()(torch.randn(8, 3, 8, 8))  # BatchNorm statistics of its own
    return network.eval()


def test_the_ends_of_the_line_are_the_two_networks_exactly():
    probe, tuned = _network(0), _network(1)
    start, end = snapshot(probe), snapshot(tuned)
    x = torch.randn(5, 3, 8, 8)
    model = _network(2)
    load_blend(model, start, end, 0.0)
    assert torch.equal(model(x), probe(x))
    load_blend(model, start, end, 1.0)
    assert torch.equal(model(x), tuned(x))
    half = blended(start, end, 0.5)
    assert torch.allclose(half["1.running_var"], (start["1.running_var"] + end["1.running_var"]) / 2)  # statistics too
    assert torch.equal(half["1.num_batches_tracked"], end["1.num_batches_tracked"])  # counters: the tuned end's


def test_auto_keeps_the_alpha_with_the_best_validation_accuracy():
    assert best_alpha([0.0, 0.5, 1.0], [0.9, 0.4, 0.6], [0.5, 0.8, 0.8]) == 0.5  # a tie in accuracy: the lower loss
    assert best_alpha([0.0, 0.5, 1.0], [0.5, 0.5, 0.5], [0.8, 0.8, 0.8]) == 1.0  # a full tie: the tuned end
    assert auto_alpha([0.0, 0.5, 1.0], [0.9, 0.4, 0.6], [0.9, 0.5, 0.8], 10) == (0.0, "chosen on validation")
    alpha, rule = auto_alpha([0.0, 0.5, 1.0], [0.9, 0.4, 0.6], [0.9, 0.5, 0.8], 9)
    assert alpha == FIXED_ALPHA == 0.5 and rule.startswith("fixed: 9 validation image(s) in the smallest class")
    probe, tuned = _network(0), _network(1)
    pixels = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        labels = probe(pixels.float() / 255).argmax(1)  # the probe is right on every image, the tuned network is not
    counts = torch.bincount(labels)
    assert counts[counts > 0].min() >= 10  # enough to choose by
    result = interpolate(tuned, snapshot(probe), "auto", pixels, labels)
    assert result.alphas == ALPHAS and result.val_accuracy[0] == 1.0 and result.alpha == best_alpha(
        ALPHAS, list(result.val_loss), list(result.val_accuracy))
    assert result.val_accuracy[ALPHAS.index(result.alpha)] == 1.0 and result.rule == "chosen on validation"
    fixed = interpolate(_network(1), snapshot(probe), "0.3", pixels, labels)
    assert fixed.alpha == 0.3 and fixed.alphas == ()


def test_the_choice_is_kept_beside_the_checkpoints_and_read_back_only_for_the_same_ends_and_images(tmp_path, monkeypatch):
    """A finished run resumed (the default's check kept for its final training) does not score the
    line again; other ends or other images do."""
    from transferlab.trainer import interpolate as module

    probe = _network(0)
    pixels = torch.randint(0, 256, (60, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(60) % 3
    saved = tmp_path / module.INTERPOLATION_FILE
    first = interpolate(_network(1), snapshot(probe), "auto", pixels, labels, saved=saved)
    scored = []
    real = module.along_the_line
    monkeypatch.setattr(module, "along_the_line", lambda *a, **k: scored.append(1) or real(*a, **k))
    again = _network(1)
    assert interpolate(again, snapshot(probe), "auto", pixels, labels, saved=saved) == first and scored == []
    assert torch.equal(again.state_dict()["5.weight"], blended(snapshot(probe), snapshot(_network(1)), first.alpha)["5.weight"])
    interpolate(_network(2), snapshot(probe), "auto", pixels, labels, saved=saved)  # another fine-tuned end
    interpolate(_network(1), snapshot(probe), "auto", pixels.flip(0), labels, saved=saved)  # other images
    assert scored == [1, 1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import split_folders

    return split_folders(tmp_path_factory.mktemp("interpolate"), 10, 7)


def _config(root, out: str, interpolate: str) -> tl.TrainConfig:
    return tl.TrainConfig(data=str(root / "d"), strategy="finetune", out=str(root / out), resolution=32, val_fraction=0.3,
                          batch_size=8, epochs=2, cache_dir=str(root / "cache"), interpolate=interpolate)  # fmt: skip


def test_alpha_zero_gives_the_probe_and_auto_saves_what_it_measured(data):
    held_out = dataclasses.replace(_config(data, "zero", "0"), holdout=True)  # both scored on unseen validation images
    at_zero = tl.train(held_out).metrics
    probe = min(at_zero["probe_history"], key=lambda row: row["val_loss"])
    assert at_zero["interpolation"]["alpha"] == 0.0
    assert at_zero["val_accuracy"] == pytest.approx(probe["val_accuracy"]) and at_zero["val_loss"] == pytest.approx(
        probe["val_loss"], abs=1e-4)  # the whole network at alpha 0 is the probe on the frozen features

    metrics = tl.train(_config(data, "auto", "auto")).metrics
    chosen = metrics["interpolation"]  # 3 validation images per class: too few to choose by
    assert chosen["alphas"] == list(ALPHAS) and chosen["alpha"] == FIXED_ALPHA and chosen["rule"].startswith("fixed: 3")
    assert metrics["val_accuracy"] == pytest.approx(chosen["val_accuracy"][ALPHAS.index(chosen["alpha"])])
    assert (data / "auto" / "interpolation.png").exists()
    assert json.loads((data / "auto" / "metrics.json").read_text())["interpolation"] == chosen
    model = tl.load(data / "auto" / "model")
    assert model.evaluate(str(data / "d" / "test"))["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    from transferlab.export import export_bundle

    path, difference = export_bundle(data / "auto" / "model", "onnx")
    assert path.exists() and difference < 1e-4


def test_only_finetune_interpolates(data):
    config = dataclasses.replace(_config(data, "scratch", "auto"), strategy="scratch", epochs=1)
    assert "interpolation" not in tl.train(config).metrics  # the option's default does not reach a strategy without it


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half", "nan"])
def test_an_alpha_outside_the_line_is_refused(value):
    with pytest.raises(tl.ConfigError, match=r"--interpolate must be auto, none or a number in \[0, 1\]"):
        tl.TrainConfig(data="digits", strategy="finetune", interpolate=value)


def test_interpolate_on_a_frozen_head_is_a_one_line_error(tmp_path):
    from conftest import assert_one_line_error, run_here

    result = run_here("train", "digits", "--strategy", "head", "--interpolate", "0.5", cache=tmp_path / "cache")
    assert_one_line_error(result, "--interpolate applies to finetune, ensemble, not to --strategy head.")
