import json

import pytest
import torch

import transferlab as tl
from transferlab.advisor import (
    CutEvidence,
    Plan,
    Thresholds,
    advise,
    decide,
    evidence_table,
    random_twin,
    transfer_gain,
)


def _evidence(probes, random=0.3):
    names = [f"stage{i}" for i in range(len(probes) - 1)] + ["final"]
    return [CutEvidence(n, 8, p, random, 0.0, None) for n, p in zip(names, probes)]


@pytest.mark.parametrize(
    "per_class, probes, random, expected",
    [
        (20, [0.5, 0.7, 0.9], 0.3, ("head", "final")),  # small, deepest features best: similar
        (20, [0.5, 0.9, 0.6], 0.3, ("truncate", "stage1")),  # small, an earlier cut best: different
        (100, [0.5, 0.7, 0.9], 0.3, ("finetune", "final")),  # large
        (5000, [0.5, 0.9, 0.6], 0.3, ("finetune", "final")),  # large, pretraining helps
        (5000, [0.5, 0.9, 0.6], 0.89, ("scratch", "final")),  # large, random weights as good: no gain
        (500, [0.5, 0.9, 0.6], 0.89, ("finetune", "final")),  # no gain, but too little data for scratch
        (20, [0.5, 0.7, 0.9], 0.95, ("finetune", "final")),  # no gain: train the body, too little data for scratch
    ],
)
def test_decision_follows_size_similarity_and_transfer_gain(per_class, probes, random, expected):
    thresholds = Thresholds(small_data=100, scratch=1000, transfer_gain=0.02, similarity_margin=0.02)
    strategy, cut, _, _ = decide(per_class, _evidence(probes, random), thresholds)
    assert (strategy, cut) == expected


@pytest.fixture(scope="module")
def advised(tmp_path_factory):
    from conftest import write_folder

    root = tmp_path_factory.mktemp("advise")
    data = write_folder(root / "d", per_class=12)
    plan = advise(str(data), sample_per_class=12, resolution=32, cache_dir=str(root / "cache"))
    return root, data, plan


def test_advise_measures_every_cut_and_explains(advised):
    _, _, plan = advised
    assert [e.cut for e in plan.evidence] == ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6", "final"]
    assert plan.small and plan.images_per_class == 12 and plan.class_balance == 1.0
    assert (plan.strategy, plan.cut) == decide(12, list(plan.evidence))[:2]
    assert all(0 <= e.probe_accuracy <= 1 and 0 <= e.random_probe_accuracy <= 1 for e in plan.evidence)
    assert all(e.batchnorm_gap is not None for e in plan.evidence)
    assert plan.transfer_gain == pytest.approx(transfer_gain(plan.evidence))
    assert "12 training images per class is small" in plan.explanation and "pretraining adds" in plan.explanation
    assert "<- plan" in evidence_table(plan)


def test_random_twin_is_seeded_and_its_batchnorms_see_the_target(advised):
    from transferlab.backbones import build_backbone
    from transferlab.data import load_dataset

    _, data, _ = advised
    images = load_dataset(str(data)).train
    twin = random_twin("efficientnet_lite0", images, 32)
    assert twin.weights_fingerprint() == random_twin("efficientnet_lite0", images, 32).weights_fingerprint()
    assert twin.weights_fingerprint() != build_backbone("efficientnet_lite0").weights_fingerprint()
    first = twin.model.bn1  # running statistics: the average over the target images, not the initial 0 / 1
    assert not twin.model.training and first.num_batches_tracked.item() > 0
    assert not torch.allclose(first.running_mean, torch.zeros_like(first.running_mean))


def test_auto_carries_out_a_saved_plan(advised, tmp_path):
    root, data, plan = advised
    path = plan.save(tmp_path / "plan.json")
    assert Plan.from_json(json.loads(path.read_text())) == plan
    metrics = tl.train(tl.TrainConfig(data=str(data), strategy="auto", plan=str(path), out=str(tmp_path / "run"),
                                      cache_dir=str(root / "cache"), epochs=5))  # fmt: skip
    assert metrics["strategy"] == plan.strategy and metrics["cut"] == plan.cut
    assert metrics["resolution"] == plan.resolution == 32
    assert json.loads(json.dumps(metrics["plan"])) == json.loads(path.read_text())
    assert (tmp_path / "run" / "plan.json").read_text() == path.read_text()


def test_plan_only_with_auto(tmp_path):
    with pytest.raises(tl.ConfigError, match="--plan goes with --strategy auto"):
        tl.TrainConfig(data="x", strategy="head", plan="p.json")


def test_samples_per_class_sets_the_data_size(tiny_fashion_dir, tmp_path):
    plan = advise("fashion-mnist", data_dir=str(tiny_fashion_dir), sample_per_class=4, resolution=32,
                  cache_dir=str(tmp_path / "c"), samples_per_class=3)  # fmt: skip
    assert plan.images_per_class == 3 and plan.small
