"""The ensemble (``--strategy ensemble``): temperatures that undo a known over- or under-confidence,
the average of calibrated probabilities, members trained exactly as their own runs, one bundle
that reloads, predicts and exports as the run measured, and one-line refusals."""

import dataclasses
import json
import math
import types
from pathlib import Path

import pytest
import torch

import transferlab as tl
from transferlab.bundle import load_bundle
from transferlab.ensemble import TEMPERATURES, Ensemble, combined, fit_temperature
from transferlab.prepare import prepare
from transferlab.strategies import STRATEGIES, Strategy, register_strategy
from transferlab.trainer.train import ensemble_members


def _calibrated(seed: int, images: int = 4000, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from their softmax: temperature 1 is the truth."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(images, classes, generator=generator)
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("scale", [0.25, 1.0, 3.0])
def test_the_temperature_undoes_a_known_scaling_of_calibrated_logits(scale):
    logits, labels = _calibrated(0)
    fitted = fit_temperature(scale * logits, labels)
    assert fitted in TEMPERATURES
    assert abs(math.log(fitted / scale)) < 0.155  # within one step of the grid (17%)


def test_a_class_weight_counts_as_that_many_copies_of_the_class_images():
    """Weighted by class, the temperature is the one fitted on the images repeated by their weight."""
    logits, labels = _calibrated(1, images=600)
    logits = logits * torch.where(labels == 0, 4.0, 0.5)[:, None]  # class 0 overconfident, the others not
    weights = torch.tensor([5.0, 1.0, 1.0, 1.0, 1.0])
    repeated = torch.cat([logits, *[logits[labels == 0]] * 4]), torch.cat([labels, *[labels[labels == 0]] * 4])
    assert fit_temperature(logits, labels, weights) == fit_temperature(*repeated)
    assert fit_temperature(logits, labels, weights) != fit_temperature(logits, labels)


def test_the_average_is_of_calibrated_probabilities_and_is_a_distribution():
    sure = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 8.0]])
    unsure = torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]])
    log_mean = combined([sure, unsure], [1.0, 1.0])
    expected = (torch.softmax(sure, 1) + torch.softmax(unsure, 1)) / 2
    assert torch.allclose(log_mean.exp(), expected, atol=1e-6)
    assert torch.allclose(log_mean.exp().sum(1), torch.ones(2))
    assert log_mean.argmax(1).tolist() == [0, 2]  # the confident member decides
    cooled = combined([sure, unsure], [64.0, 1.0])  # a temperature that flattens the confident member hands it over
    assert cooled.argmax(1).tolist() == [1, 0]


def test_an_ensemble_network_is_the_average_of_its_members():
    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 3) for _ in range(2)]
    for member in members:
        member.preprocessing = None
    ensemble = Ensemble(members, [0.5, 2.0])
    x = torch.randn(6, 4)
    with torch.no_grad():
        assert torch.allclose(ensemble(x), combined([m(x) for m in members], [0.5, 2.0]))
    with pytest.raises(ValueError, match="two members or more"):
        Ensemble(members[:1], [1.0])


def test_an_entry_has_stages_or_members_and_its_members_must_exist():
    with pytest.raises(ValueError, match="stages or members, not both or neither"):
        Strategy("both", "x", 1, 1.0, ("head",), "the head", members=("head",))
    with pytest.raises(ValueError, match="members nowhere are not registered"):
        register_strategy(Strategy("lost", "x", 1, 1.0, (), "the heads", members=("head", "nowhere")))
    assert "lost" not in STRATEGIES


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The ensemble and its two members trained alone, on the same tiny set with the same settings;
    the network with ``--holdout``, as the ensemble trains its member: 3 validation images a class
    choose nothing, so alone it would train on them, where the member's temperature is fitted."""
    from conftest import split_folders

    root = split_folders(tmp_path_factory.mktemp("ensemble"), 10, 7)

    def run(strategy: str, backbone: str = "efficientnet_lite0") -> dict:
        steps = {} if tl.STRATEGIES[strategy].computed else {"batch_size": 8, "epochs": 2}
        steps.update({"holdout": True} if strategy == "finetune" else {})
        config = tl.TrainConfig(data=str(root / "d"), strategy=strategy, out=str(root / f"{strategy}-{backbone}"),
                                resolution=32, val_fraction=0.3, cache_dir=str(root / "cache"), backbone=backbone,
                                **steps)  # fmt: skip
        return tl.train(config).metrics

    found = {strategy: run(strategy) for strategy in ("ensemble", "multicut", "finetune")}
    return root, {**found, "multicut-mobilenet_v2": run("multicut", "mobilenet_v2")}


COMPANIONS = ["multicut-efficientnet_lite1", "multicut-efficientnet_lite2", "multicut-mobilenet_v2"]


def test_each_member_is_trained_exactly_as_its_own_run(runs):
    _, metrics = runs
    members = {m["strategy"]: m for m in metrics["ensemble"]["members"]}
    assert list(members) == ["multicut", "finetune", *COMPANIONS] and members["multicut"]["cut"] == "all"
    assert members["finetune"]["resolved_config"]["holdout"] and not members["multicut"]["resolved_config"]["holdout"]
    companions = [members[name]["resolved_config"] for name in COMPANIONS]
    assert [c["backbone"] for c in companions] == ["efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"]
    assert all(c["resolution"] == 32 and c["strategy"] == "multicut" for c in companions)
    for name in ("multicut", "finetune", "multicut-mobilenet_v2"):  # a companion: multicut alone on its backbone
        alone = metrics[name]
        assert members[name]["val_accuracy"] == pytest.approx(alone["val_accuracy"], abs=1e-6)
        assert members[name]["test_balanced_accuracy"] == pytest.approx(alone["balanced_accuracy"], abs=1e-6)
    assert metrics["ensemble"]["history"] == metrics["finetune"]["history"]
    assert {"multicut_features_seconds", "finetune_network_seconds"} <= set(metrics["ensemble"])  # each member's times
    assert metrics["ensemble"]["interpolation"] == metrics["finetune"]["interpolation"]


def test_from_the_tables_size_the_fine_tuned_member_trains_on_augmented_images_unless_no_augment_is_typed(
        runs, tmp_path, monkeypatch):  # fmt: skip
    """The fixture's folder has 10 labelled images a class: below the table's size the members train
    as alone (above); with the size lowered under it, the fine-tuned member's batches are augmented
    and its run says so, the frozen member unchanged; a typed --no-augment wins."""
    from transferlab.trainer import loops

    root, metrics = runs
    assert all("augment" not in m["resolved_config"] or m["resolved_config"]["augment"] is False
               for m in metrics["ensemble"]["members"])  # fmt: skip
    monkeypatch.setitem(STRATEGIES, "ensemble", dataclasses.replace(STRATEGIES["ensemble"], augment_members_from=10))
    augmented = []
    real = loops.augment_batch
    monkeypatch.setattr(loops, "augment_batch", lambda pixels, *flips: augmented.append(len(pixels)) or real(pixels, *flips))

    def ensemble(**typed) -> dict:
        config = tl.TrainConfig(data=str(root / "d"), strategy="ensemble", out=str(tmp_path / str(typed)),
                                resolution=32, val_fraction=0.3, cache_dir=str(root / "cache"), batch_size=8, epochs=2,
                                companions=("none",), **typed)  # fmt: skip
        return {m["strategy"]: m for m in tl.train(config).metrics["members"]}

    members = ensemble()
    assert members["finetune"]["resolved_config"]["augment"] is True and augmented
    assert "augment" not in members["multicut"]["resolved_config"]
    assert members["multicut"]["test_balanced_accuracy"] == metrics["multicut"]["balanced_accuracy"]
    augmented.clear()
    assert ensemble(augment=False)["finetune"]["resolved_config"]["augment"] is False and not augmented


def test_the_bundle_is_its_members_bundles_and_reloads_to_what_the_run_measured(runs):
    root, metrics = runs
    network, info = load_bundle(root / "ensemble-efficientnet_lite0" / "model")
    assert isinstance(network, Ensemble) and [m.folder for m in info.members] == ["multicut", "finetune", *COMPANIONS]
    assert info.backbone == "efficientnet_lite0"  # the run's own, not its last companion's
    _, companion = load_bundle(root / "ensemble-efficientnet_lite0" / "model" / "multicut-mobilenet_v2")
    assert (companion.backbone, companion.arch, companion.preprocessing.resolution) == ("mobilenet_v2", "transferlab:mobilenet_v2", 32)
    temperatures = [m["temperature"] for m in metrics["ensemble"]["members"]]
    assert network.temperatures.tolist() == pytest.approx(temperatures)
    meta = json.loads((root / "ensemble-efficientnet_lite0" / "model" / "bundle.json").read_text())
    assert meta["format_version"] == 3 and meta["strategy"] == "ensemble"
    alone, _ = load_bundle(root / "ensemble-efficientnet_lite0" / "model" / "finetune")  # each member: a bundle of its own
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(network(x), combined([m(x) for m in network.members], temperatures), atol=1e-6)
        assert torch.allclose(network.members[1](x), alone(x), atol=1e-6)
    model = tl.load(root / "ensemble-efficientnet_lite0" / "model")
    again = model.evaluate(str(root / "d" / "test"))
    assert again["accuracy"] == pytest.approx(metrics["ensemble"]["test_accuracy"], abs=1e-6)
    predictions = model.predict(sorted((root / "d" / "test" / "red").iterdir())[:2], top_k=3)
    assert all(sum(p for _, p in prediction.top) == pytest.approx(1.0, abs=1e-5) for prediction in predictions)
    assert model.export("onnx").exists()  # with parity, or it raises


def test_an_ensemble_cannot_be_cut_or_be_a_backbone_and_suggest_reads_its_frozen_member(runs, tmp_path):
    import numpy as np
    from conftest import COLOURS, make_image

    root, _ = runs
    with pytest.raises(tl.ConfigError, match="^--strategy ensemble keeps the whole body"):
        tl.TrainConfig(data="x", strategy="ensemble", cut="blocks.2")
    with pytest.raises(tl.BackboneError, match="is an ensemble of 5 networks; give one of them as the backbone"):
        tl.build_backbone(str(root / "ensemble-efficientnet_lite0" / "model"))
    pool, rng = tmp_path / "pool", np.random.default_rng(5)
    pool.mkdir()
    for i, colour in enumerate(list(COLOURS.values()) * 3):  # loose images, no class folders
        make_image(colour, rng).save(pool / f"{i:02d}.png")
    from_ensemble = tl.suggest(root / "ensemble-efficientnet_lite0" / "model", pool, n=4, out=tmp_path / "s1")
    from_member = tl.suggest(root / "ensemble-efficientnet_lite0" / "model" / "multicut", pool, n=4, out=tmp_path / "s2")
    assert from_ensemble["suggestions"] == from_member["suggestions"] and len(from_ensemble["suggestions"]) == 4
    assert from_ensemble["forecast"] is not None  # the run's metrics.json, above the member's folder


def test_without_a_typed_resolution_the_companions_train_at_the_ensembles_own(runs):
    """Each backbone has a resolution of its own (Lite2: 260 px); an ensemble's members see the same
    images at prediction, so its companions take the ensemble's backbone's, and --companions none
    leaves the members alone."""
    root, _ = runs
    config = tl.TrainConfig(data=str(root / "d"), strategy="ensemble", val_fraction=0.3, cache_dir=str(root / "cache"))
    splits = prepare(config).splits
    members = ensemble_members(config, Path("out"), None, splits, 224)
    assert [m.name for m in members] == ["multicut", "finetune", *COMPANIONS]
    assert [(m.config.backbone, m.config.resolution, m.config.out) for m in members[2:]] == [
        (name.removeprefix("multicut-"), 224, str(Path("out") / name)) for name in COMPANIONS]
    alone = ensemble_members(dataclasses.replace(config, companions=("none",)), Path("out"), None, splits, 224)
    assert [m.name for m in alone] == ["multicut", "finetune"]


def test_a_plans_companion_trains_on_its_own_backbone_and_an_older_plans_members_on_the_runs(runs):
    """A plan's member carries its backbone where the check chose a companion; a plan saved before
    the companions has no such key, and its members train on the run's backbone as then."""
    root, _ = runs
    config = tl.TrainConfig(data=str(root / "d"), strategy="ensemble", resolution=32, cache_dir=str(root / "cache"))
    splits = prepare(config).splits
    member = {"candidate": "multicut", "strategy": "multicut", "cut": "all", "freeze_bn": None, "augment": None,
              "holdout": None, "weight": 0.5, "temperature": 1.0}  # fmt: skip
    companion = {**member, "candidate": "multicut-mobilenet_v2", "backbone": "mobilenet_v2"}
    plan = types.SimpleNamespace(members=(member, companion))
    planned = ensemble_members(config, Path("out"), plan, splits, 32)
    assert [(m.name, m.config.backbone, m.config.resolution) for m in planned] == [
        ("multicut", "efficientnet_lite0", 32), ("multicut-mobilenet_v2", "mobilenet_v2", 32)]
    assert [m.weight for m in planned] == [0.5, 0.5] and planned[1].config.companions is None
