import json

import pytest

import transferlab as tl
from transferlab.advisor import SMALL_DATA_THRESHOLD, CutEvidence, Plan, advise, decide, evidence_table


def _evidence(probes):
    names = [f"stage{i}" for i in range(len(probes) - 1)] + ["final"]
    return [CutEvidence(n, 8, p, 0.0, None) for n, p in zip(names, probes)]


@pytest.mark.parametrize(
    "per_class, probes, expected",
    [
        (20, [0.5, 0.7, 0.9], ("head", "final")),  # small, deepest features best: similar
        (20, [0.5, 0.9, 0.6], ("truncate", "stage1")),  # small, an earlier cut best: different
        (SMALL_DATA_THRESHOLD, [0.5, 0.7, 0.9], ("finetune", "final")),  # large and similar
        (500, [0.5, 0.9, 0.6], ("finetune", "final")),  # large, different, not enough for scratch
        (5000, [0.5, 0.9, 0.6], ("scratch", "final")),  # large and different
    ],
)
def test_decision_follows_the_four_cases(per_class, probes, expected):
    strategy, cut, _, _ = decide(per_class, _evidence(probes))
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
    assert plan.strategy in ("head", "truncate")
    assert all(0 <= e.probe_accuracy <= 1 and e.batchnorm_gap is not None for e in plan.evidence)
    assert "12 training images per class is small" in plan.explanation
    assert "<- plan" in evidence_table(plan)


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


@pytest.mark.slow
def test_quick_study_runs_every_strategy_and_scores_the_advisor(tmp_path):
    from transferlab.study import run_study

    summary = run_study(quick=True, out=tmp_path / "study", cache_dir=str(tmp_path / "cache"))
    assert len(summary["cells"]) == 4
    for cell in summary["cells"]:
        runs = cell["runs"]
        assert {"head@final", "finetune@final", "scratch@final"} <= set(runs)
        assert cell["pick"] in runs and cell["best"] == max(runs, key=lambda k: runs[k]["test_accuracy"])
        expected = 100 * (runs[cell["best"]]["test_accuracy"] - runs[cell["pick"]]["test_accuracy"])
        assert cell["regret_points"] == pytest.approx(expected) and cell["regret_points"] >= 0
        assert 0 < cell["advise_cost_fraction"] < 1
    assert list(summary["depth_curve"]) == ["stages.0", "stages.1", "stages.2", "final"]
    assert (tmp_path / "study" / "report.html").exists() and (tmp_path / "study" / "depth.png").exists()
