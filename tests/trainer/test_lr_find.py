"""The learning-rate range test: its curve, its stop, its suggestion, and the run on real data."""

import math

import pytest

import transferlab as tl
from transferlab.trainer.lr_find import lr_range


def test_the_curve_has_its_minimum_where_a_constructed_case_puts_it():
    finding = lr_range(lambda rate: (math.log10(rate) + 3) ** 2 + 1, smoothing=0.0, divergence=1e9)
    best = min(range(len(finding.losses)), key=finding.losses.__getitem__)
    assert finding.rates[best] == pytest.approx(1e-3, rel=0.1)
    assert finding.suggestion == pytest.approx(1e-4, rel=0.1) and len(finding.rates) == 100


def test_the_test_stops_when_the_loss_diverges():
    finding = lr_range(lambda rate: 1.0 if rate < 1e-2 else 1.0 + 1e4 * rate, smoothing=0.0)
    assert finding.rates[-1] < 1e-1 and finding.smoothed[-1] > 4


def test_a_lucky_first_batch_does_not_pull_the_suggestion_below_the_range_tested():
    """The first step's loss is the lowest of all (a head that starts near its best, one easy
    batch); the suggestion still comes from the valley the later steps trace, at 1e-3."""
    calls = []

    def loss(rate: float) -> float:
        calls.append(rate)
        return 0.5 if len(calls) == 1 else (math.log10(rate) + 3) ** 2 + 1

    finding = lr_range(loss, smoothing=0.0, divergence=1e9)
    assert finding.losses[0] == min(finding.losses)
    assert finding.suggestion == pytest.approx(1e-4, rel=0.1)


def test_lr_find_on_a_folder_writes_its_plot_and_restores_nothing_to_disk(image_folder, tmp_path):
    finding = tl.lr_find(str(image_folder), resolution=32, batch_size=8, out=str(tmp_path / "lf"),
                         cache_dir=str(tmp_path / "c"))  # fmt: skip
    assert 1e-7 <= finding.suggestion <= 1.0 and len(finding.rates) == len(finding.losses) >= 10
    assert (tmp_path / "lf" / "lr-find.png").stat().st_size > 5000 and (tmp_path / "lf" / "lr-find.json").exists()


def test_lr_find_moves_what_tune_trains_and_adds_the_regularizer(image_folder, tmp_path, monkeypatch):
    """The range test runs training's own set-up: with --tune lora the LoRA adapters are in every
    step's graph and move the loss up to the suggested rate (far past it the network may saturate
    until no gradient flows: a zero gradient is not a missing one), the body's own weights get none,
    and with --regularizer bss its penalty enters every step."""
    from transferlab.trainer import loops, network

    seen = {"lora": [], "moving": [], "frozen": [], "bss": 0}
    real_step = loops.accumulate_gradients

    def watched(net, *args, **kwargs):
        result = real_step(net, *args, **kwargs)
        body = net.body
        lora = [p.grad for n, p in body.named_parameters() if "lora_" in n]
        seen["lora"].append(bool(lora) and all(grad is not None for grad in lora))
        seen["moving"].append(any(grad.abs().sum() > 0 for grad in lora if grad is not None))
        seen["frozen"].append(all(p.grad is None for n, p in body.named_parameters() if "lora_" not in n))
        return result

    real_penalty = loops.bss_penalty

    def counted(*args, **kwargs):
        seen["bss"] += 1
        return real_penalty(*args, **kwargs)

    monkeypatch.setattr("transferlab.trainer.lr_find.accumulate_gradients", watched)
    monkeypatch.setattr(loops, "bss_penalty", counted)
    setup = []
    real_setup = network.setup_network
    monkeypatch.setattr("transferlab.trainer.lr_find.setup_network", lambda *a, **k: setup.append(1) or real_setup(*a, **k))
    finding = tl.lr_find(str(image_folder), resolution=32, batch_size=8, tune="lora", regularizer="bss",
                         out=str(tmp_path / "lf"), cache_dir=str(tmp_path / "c"))  # fmt: skip
    steps = len(finding.rates)
    assert setup == [1] and steps >= 10
    assert all(seen["lora"]) and all(seen["frozen"]) and len(seen["lora"]) == steps
    up_to_suggestion = [moving for moving, rate in zip(seen["moving"], finding.rates) if rate <= finding.suggestion]
    assert len(up_to_suggestion) >= 10 and all(up_to_suggestion)
    assert seen["bss"] == steps  # one penalty per step (one pass each)
