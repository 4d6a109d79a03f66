"""The choice among the four strategies: the plan from the forecast, and the threshold rule the study
keeps as a baseline (torch-free)."""

import json

import pytest

from transferlab.forecast import Forecaster, OptionModel
from transferlab.plan import CutEvidence, Decision, Plan, Thresholds, decide, gain_per_doubling, make_plan, signals_of

ZERO = (0.0,) * 7


def _forecaster(**offsets):
    """A forecaster whose forecast is each option's anchor probe plus a fixed offset, with spread 0.01."""
    models = {o: OptionModel((offsets.get(o, 0.0), *ZERO[1:]), 0.01) for o in ("head", "truncate", "finetune", "scratch")}
    return Forecaster((0.0,) * 6, (1.0,) * 6, models, 12, "constructed")


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
    assert decision == Decision("truncate", "stage1", transfer_gain=pytest.approx(0.5))


def test_similarity_margin_is_the_resolution_rule_between_head_and_truncate():
    """Within the margin of the best cut, the final cut counts as similar (head); beyond it, truncate."""
    thresholds = Thresholds(similarity_margin=0.05)
    assert decide(10, _evidence([0.5, 0.90, 0.86]), thresholds).strategy == "head"
    assert decide(10, _evidence([0.5, 0.90, 0.84]), thresholds).strategy == "truncate"


def test_plan_round_trips_through_json_and_explains_itself(tmp_path):
    evidence = _evidence([0.5, 0.9, 0.6])
    plan = make_plan(10, 0.5, 64, "efficientnet_lite0", evidence, forecaster=_forecaster(scratch=-0.5))
    assert (plan.strategy, plan.cut) == ("truncate", "stage1")  # the best probe before the final cut
    assert (plan.epochs, plan.lr, plan.freeze_bn) == (1, 1e-3, False)  # truncate's defaults
    assert Plan.load(plan.save(tmp_path / "plan.json")) == plan
    assert json.loads((tmp_path / "plan.json").read_text())["strategy"] == "truncate"
    assert "fitted on constructed" in plan.explanation and "truncate 90.0% +- 1.0%" in plan.explanation
    assert plan.evidence_table().splitlines()[2].endswith("<- plan")
    assert plan.forecast_table().splitlines()[1].startswith("truncate") and "<- plan" in plan.forecast_table()


def test_the_plan_follows_the_forecast_and_says_when_it_played_safe():
    evidence = _evidence([0.5, 0.7, 0.8])
    assert make_plan(10, 1.0, 64, "b", evidence, forecaster=_forecaster(finetune=0.05)).strategy == "finetune"
    close = make_plan(10, 1.0, 64, "b", evidence, forecaster=_forecaster(finetune=0.005))  # within the intervals
    assert close.strategy in ("head", "finetune") and "smaller worst-case loss" in close.explanation


def test_signals_read_the_evidence_the_curve_and_the_pilot():
    evidence = [CutEvidence("stage0", 8, 0.6, 0.3, 0.0, None), CutEvidence("stage1", 8, 0.7, 0.4, 0.0, None),
                CutEvidence("final", 8, 0.65, 0.35, 0.0, None)]  # fmt: skip
    signals = signals_of(20, evidence, ((5, 0.5), (20, 0.7)), 0.03)
    assert (signals.probe_final, signals.probe_stage, signals.probe_best) == (0.65, 0.7, 0.7)
    assert signals.transfer_gain == pytest.approx(0.3) and signals.pilot_gain == 0.03
    assert signals.curve_slope == pytest.approx(gain_per_doubling(((5, 0.5), (20, 0.7)))) == pytest.approx(0.1)
    assert signals.anchor("head") == signals.anchor("finetune") == 0.65  # LP-FT starts from the final probe
    assert signals.anchor("truncate") == 0.7 and signals.anchor("scratch") == pytest.approx(0.4)  # the random twin


def test_an_earlier_cut_must_beat_the_final_one_beyond_its_noise():
    """The same probe gap reads as 'different' on many images and as noise on few (the threshold rule)."""
    few = [CutEvidence("stage0", 8, 0.80, 0.3, 0.0, None, images=20), CutEvidence("final", 8, 0.72, 0.3, 0.0, None, images=20)]
    many = [CutEvidence("stage0", 8, 0.80, 0.3, 0.0, None, images=2000),
            CutEvidence("final", 8, 0.72, 0.3, 0.0, None, images=2000)]  # fmt: skip
    assert few[0].probe_stderr == pytest.approx((0.8 * 0.2 / 20) ** 0.5)
    assert decide(10, few).strategy == "head"
    assert decide(10, many).strategy == "truncate"


def test_the_explanation_carries_the_estimate_the_learning_curve_and_thin_evidence():
    evidence = [CutEvidence("stage0", 8, 0.6, 0.3, 0.0, None, images=30), CutEvidence("final", 8, 0.9, 0.3, 0.0, None, images=30)]
    plan = make_plan(6, 1.0, 64, "b", evidence, curve=((2, 0.7), (3, 0.8), (6, 0.9)), pilot={"gain": -0.02},
                     forecaster=_forecaster())  # fmt: skip
    assert "estimated at 90.0% +- 5.5%" in plan.explanation  # sqrt(0.9 x 0.1 / 30)
    assert "+12.6 points per doubling" in plan.explanation  # 20 points over log2(6 / 2) doublings
    assert "The evidence is thin" in plan.explanation and "-2.0 points" in plan.explanation
    assert plan.learning_curve == ((2, 0.7), (3, 0.8), (6, 0.9))


def test_a_plan_of_an_older_release_still_loads(tmp_path):
    plan = make_plan(10, 1.0, 64, "b", _evidence([0.5, 0.9, 0.6]), forecaster=_forecaster())
    old = {**plan.to_json(), "small": True, "similar": False, "thresholds": {}}  # fields the 0.x plans carried
    assert Plan.from_json(old) == plan


def test_auto_chooses_among_the_advised_options_and_keeps_every_forecast_as_evidence():
    def plan_with(multicut: float, ensemble: float):
        models = {o: OptionModel((offset, *ZERO[1:]), 0.01) for o, offset in
                  (("head", 0.05), ("finetune", 0.0), ("multicut", multicut), ("ensemble", ensemble))}  # fmt: skip
        forecaster = Forecaster((0.0,) * 6, (1.0,) * 6, models, 12, "constructed")
        return make_plan(10, 1.0, 64, "b", _evidence([0.5, 0.7, 0.8]), forecaster=forecaster, probe_all=0.8)

    clear = plan_with(multicut=-0.05, ensemble=0.0)
    assert (clear.strategy, clear.cut) == ("ensemble", "final")  # head is forecast higher, but is not advised
    assert clear.forecasts[0]["option"] == "head" and "clear of 'multicut'" in clear.explanation
    assert "<- plan" in [line for line in clear.forecast_table().splitlines() if line.startswith("ensemble")][0]
    every_cut = plan_with(multicut=0.0, ensemble=-0.05)
    assert (every_cut.strategy, every_cut.cut) == ("multicut", "all")
    assert all(line.endswith("<- plan") for line in every_cut.evidence_table().splitlines()[1:])  # it reads them all
    assert "within each other's intervals" in plan_with(multicut=0.0, ensemble=-0.005).explanation


def test_a_single_advised_option_is_taken_as_it_is():
    from transferlab.forecast import Forecast, choose

    forecasts = [Forecast("head", 0.9, 0.01), Forecast("ensemble", 0.8, 0.01)]
    choice = choose(forecasts, ["ensemble"])
    assert choice.option == "ensemble" and [f.option for f in choice.forecasts] == ["head", "ensemble"]
    assert choose(forecasts, ["nothing forecast"]).option == "head"  # none of them forecast: every option counts
