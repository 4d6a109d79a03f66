import json

import pytest
import torch

import transferlab as tl
from transferlab.advisor.measure import random_twin
from transferlab.config import SPECIFIC_OPTIONS
from transferlab.forecast import Forecaster
from transferlab.plan import Plan, decide_by_forecast, signals_of, transfer_gain
from transferlab.strategies import STRATEGIES, advised_options, forecast_options


@pytest.fixture(scope="module")
def advised(tmp_path_factory):
    from conftest import write_folder

    root = tmp_path_factory.mktemp("advise")
    data = write_folder(root / "d", per_class=12)
    plan = tl.advise(str(data), measure_per_class=12, resolution=32, cache_dir=str(root / "cache"), time_budget="0")
    return root, data, plan  # the forecast's plan (checked on the images: tests/advisor/test_decide.py)


def test_advise_measures_every_cut_pilots_and_explains(advised):
    _, _, plan = advised
    assert [e.cut for e in plan.evidence] == ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6", "final"]
    assert plan.images_per_class == 11 and plan.class_balance == 1.0  # 12 a class, 1 held out
    signals = signals_of(11, plan.evidence, plan.learning_curve, plan.pilot["gain"], plan.signals["probe_all"])
    decision, choice = decide_by_forecast(signals, plan.evidence, Forecaster.load())
    assert (plan.strategy, plan.cut) == (decision.strategy, decision.cut)
    assert [f["option"] for f in plan.forecasts] == [f.option for f in choice.forecasts]
    assert {f["option"] for f in plan.forecasts} == set(forecast_options())  # every option, as evidence
    assert plan.strategy in advised_options()
    assert all(0 <= e.probe_accuracy <= 1 and 0 <= e.random_probe_accuracy <= 1 for e in plan.evidence)
    assert all(e.batchnorm_gap is not None for e in plan.evidence)
    assert plan.transfer_gain == pytest.approx(transfer_gain(plan.evidence))
    pilot = plan.pilot
    assert pilot["val_images"] == 3 and pilot["seconds"] > 0  # one validation image per class
    assert pilot["gain"] == pytest.approx(pilot["tuned_val_accuracy"] - pilot["probe_val_accuracy"])
    assert "Forecast test accuracy" in plan.explanation and "pilot epoch of fine-tuning" in plan.explanation
    assert "<- plan" in plan.evidence_table() and "<- plan" in plan.forecast_table()


def test_the_pilot_fine_tunes_one_epoch_without_the_test_split(image_folder, tmp_path, monkeypatch):
    from transferlab.advisor import pilot as pilot_module
    from transferlab.config import TrainConfig
    from transferlab.prepare import prepare

    seen = []
    real = pilot_module.fit_stages

    def watched(prepared, config, out):
        seen.append((prepared.splits.test, config.strategy, config.epochs, config.freeze_bn, config.holdout))
        found = real(prepared, config, out)
        seen.append(found[2])
        return found

    monkeypatch.setattr(pilot_module, "fit_stages", watched)
    config = TrainConfig(data=str(image_folder), strategy="auto", resolution=32, cache_dir=str(tmp_path / "c"))
    prepared = prepare(config)
    result = pilot_module.pilot_finetune(prepared, config)
    stages = seen.pop()
    assert seen == [(None, "finetune", 1, True, True)]  # scored on the validation images: never trained on them
    assert 0 <= result.probe_val_accuracy <= 1 and 0 <= result.tuned_val_accuracy <= 1 and result.val_images == 3
    probe, network = stages.values()  # the parts the cost estimate reads, each the stage's own
    assert "validation" not in probe.details and "validation" not in network.details  # neither fitted them
    assert result.probe_seconds == sum(probe.seconds.values())
    assert result.features_seconds == probe.seconds["features_seconds"]
    assert result.epoch_seconds == network.seconds["network_seconds"]


def test_random_twin_is_seeded_and_its_batchnorms_see_the_target():
    from transferlab.sources import build_backbone

    lite0 = build_backbone("efficientnet_lite0")
    pixels = (torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    twin = random_twin(lite0, pixels)
    assert twin.weights_fingerprint() == random_twin(lite0, pixels).weights_fingerprint()
    assert twin.weights_fingerprint() != lite0.weights_fingerprint()
    first = twin.model.bn1  # running statistics: the average over the target images, not the initial 0 / 1
    assert not twin.model.training and first.num_batches_tracked.item() > 0
    assert not torch.allclose(first.running_mean, torch.zeros_like(first.running_mean))


def test_auto_carries_out_a_saved_plan(advised, tmp_path):
    root, data, plan = advised
    path = plan.save(tmp_path / "plan.json")
    assert Plan.from_json(json.loads(path.read_text())) == plan
    resolved = plan.resolved_config  # the run that carries the plan out, every default filled in, beside what was typed
    assert plan.config["strategy"] == "auto" and plan.config["epochs"] is None
    assert (resolved["strategy"], resolved["cut"], resolved["resolution"]) == (plan.strategy, plan.cut, 32)
    options = STRATEGIES[plan.strategy].options  # the planned strategy's own: filled in; any other's: not recorded
    assert {name for name in resolved if name in SPECIFIC_OPTIONS} == options and resolved["device"] == "cpu"
    assert all(resolved[name] > 0 for name in ("epochs", "lr") if name in options)
    metrics = tl.train(str(data), strategy="auto", plan=str(path), out=str(tmp_path / "run"),
                       cache_dir=str(root / "cache"), epochs=5).metrics  # fmt: skip
    assert metrics["strategy"] == plan.strategy and metrics["cut"] == plan.cut
    assert metrics["resolution"] == plan.resolution == 32
    assert json.loads(json.dumps(metrics["plan"])) == json.loads(path.read_text())
    assert (tmp_path / "run" / "plan.json").read_text() == path.read_text()


def test_samples_per_class_sets_the_data_size(tiny_fashion_dir, tmp_path):
    plan = tl.advise("fashion-mnist", data_dir=str(tiny_fashion_dir), measure_per_class=4, resolution=32,
                     cache_dir=str(tmp_path / "c"), samples_per_class=3, time_budget="0")  # fmt: skip
    assert plan.images_per_class == 3


def test_learning_curve_rises_with_more_data_on_a_hard_constructed_task():
    import numpy as np

    from transferlab.advisor.measure import probe_learning_curve

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 80)
    features = rng.normal(0, 1, (len(labels), 256)) + np.eye(4, 256)[labels] * 2.5  # informative, many noisy dims
    curve = probe_learning_curve(features, labels)
    assert [n for n, _ in curve] == [20, 40, 80]
    assert curve[-1][1] > curve[0][1] + 0.1, curve  # more data, a better probe: the curve says so
