"""The decision among the four strategies, from data size and the per-cut evidence (torch-free)."""

import json

import pytest

from transferlab.strategy import CutEvidence, Decision, Plan, Thresholds, decide, make_plan


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
    decision = decide(per_class, _evidence(probes, random), thresholds)
    assert (decision.strategy, decision.cut) == expected


def test_decision_is_typed_and_reports_its_answers():
    decision = decide(10, _evidence([0.5, 0.9, 0.6], random=0.4), Thresholds())
    assert decision == Decision("truncate", "stage1", small=True, similar=False, transfer_gain=pytest.approx(0.5))


def test_similarity_margin_is_the_resolution_rule_between_head_and_truncate():
    """Within the margin of the best cut, the final cut counts as similar (head); beyond it, truncate."""
    thresholds = Thresholds(similarity_margin=0.05)
    assert decide(10, _evidence([0.5, 0.90, 0.86]), thresholds).strategy == "head"
    assert decide(10, _evidence([0.5, 0.90, 0.84]), thresholds).strategy == "truncate"


def test_plan_round_trips_through_json_and_explains_itself(tmp_path):
    evidence = _evidence([0.5, 0.9, 0.6])
    decision = decide(10, evidence)
    plan = make_plan(decision, evidence, 10, 0.5, 64, "efficientnet_lite0", Thresholds())
    assert (plan.epochs, plan.lr, plan.freeze_bn) == (40, 1e-3, False)  # truncate's defaults
    assert Plan.load(plan.save(tmp_path / "plan.json")) == plan
    assert json.loads((tmp_path / "plan.json").read_text())["strategy"] == "truncate"
    assert "10 training images per class is small" in plan.explanation and "stage1" in plan.explanation
    assert plan.evidence_table().splitlines()[2].endswith("<- plan")


def test_an_earlier_cut_must_beat_the_final_one_beyond_its_noise():
    """The same probe gap reads as 'different' on many images and as noise on few."""
    few = [CutEvidence("stage0", 8, 0.80, 0.3, 0.0, None, images=20), CutEvidence("final", 8, 0.72, 0.3, 0.0, None, images=20)]
    many = [CutEvidence("stage0", 8, 0.80, 0.3, 0.0, None, images=2000),
            CutEvidence("final", 8, 0.72, 0.3, 0.0, None, images=2000)]  # fmt: skip
    assert few[0].probe_stderr == pytest.approx((0.8 * 0.2 / 20) ** 0.5)
    assert decide(10, few).strategy == "head" and "inside its noise" in make_plan(
        decide(10, few), few, 10, 1.0, 64, "b", Thresholds()).explanation  # fmt: skip
    assert decide(10, many).strategy == "truncate"


def test_the_explanation_carries_the_estimate_the_learning_curve_and_thin_evidence():
    evidence = [CutEvidence("stage0", 8, 0.6, 0.3, 0.0, None, images=30), CutEvidence("final", 8, 0.9, 0.3, 0.0, None, images=30)]
    plan = make_plan(decide(6, evidence), evidence, 6, 1.0, 64, "b", Thresholds(), curve=((2, 0.7), (3, 0.8), (6, 0.9)))
    assert "estimated at 90.0% +- 5.5%" in plan.explanation  # sqrt(0.9 x 0.1 / 30)
    assert "+12.6 points per doubling" in plan.explanation  # 20 points over log2(6 / 2) doublings
    assert "The evidence is thin" in plan.explanation
    assert plan.learning_curve == ((2, 0.7), (3, 0.8), (6, 0.9))
