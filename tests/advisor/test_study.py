"""The study's bookkeeping: reuse of finished runs, regret, calibration; and the quick study end to end."""

import dataclasses
import json

import pytest
from conftest import CHROMIUM, render

from transferlab.advisor import study
from transferlab.advisor.study import calibrate, held_out_regrets, pick_regret
from transferlab.strategy import CutEvidence, Thresholds


def _cell(per_class, probes, accuracies):
    """A studied cell: the advisor's evidence (probe accuracy per cut) and every run's accuracy."""
    names = ["stage0", "stage1", "final"]
    evidence = [dataclasses.asdict(CutEvidence(n, 8, p, 0.3, 0.0, None)) for n, p in zip(names, probes)]
    runs = {name: {"test_accuracy": a, "seconds": 1.0} for name, a in accuracies.items()}
    return {"plan": {"images_per_class": per_class, "evidence": evidence}, "runs": runs, "best": max(runs, key=lambda k: runs[k]["test_accuracy"])}


RUNS = ("head@final", "truncate@stage0", "truncate@stage1", "finetune@final", "scratch@final")


def _accuracies(*values):
    return dict(zip(RUNS, values))


def test_pick_regret_scores_the_pick_the_thresholds_make():
    cell = _cell(20, [0.5, 0.9, 0.6], _accuracies(0.60, 0.50, 0.80, 0.85, 0.30))
    assert pick_regret(cell, Thresholds(small_data=100)) == pytest.approx(5.0)  # small, different: truncate@stage1
    assert pick_regret(cell, Thresholds(small_data=1)) == pytest.approx(0.0)  # not small: finetune


def test_calibration_finds_where_small_ends_and_held_out_scores_unseen_cells():
    cells = [  # head wins up to 50 per class, finetune from 200
        _cell(10, [0.5, 0.6, 0.8], _accuracies(0.70, 0.3, 0.4, 0.60, 0.1)),
        _cell(50, [0.5, 0.6, 0.8], _accuracies(0.80, 0.3, 0.4, 0.75, 0.2)),
        _cell(200, [0.5, 0.6, 0.8], _accuracies(0.82, 0.3, 0.4, 0.90, 0.5)),
        _cell(1000, [0.5, 0.6, 0.8], _accuracies(0.85, 0.3, 0.4, 0.95, 0.7)),
    ]
    thresholds = calibrate(cells)
    assert 50 < thresholds.small_data <= 200
    assert all(pick_regret(c, thresholds) == 0 for c in cells)
    held_out = held_out_regrets(cells)
    assert len(held_out) == 4 and held_out[0] == held_out[3] == 0  # the ends are learnt from the others
    assert max(held_out) > 0  # leaving out the cell at 50 or 200 moves the threshold past it


def test_finished_runs_are_reused_only_with_the_same_settings(tmp_path, monkeypatch):
    calls = []

    def fake_train(prepared, config):
        calls.append(config)
        return {"test_accuracy": 0.5}

    monkeypatch.setattr(study, "train_prepared", fake_train)
    config = study.TrainConfig(data="digits", out=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    first = study._run(None, config)
    assert study._run(None, config) == first and len(calls) == 1
    assert json.loads((tmp_path / "run" / "study-run.json").read_text())["result"] == first
    study._run(None, dataclasses.replace(config, epochs=3))
    assert len(calls) == 2


@pytest.mark.slow
def test_quick_study_runs_every_strategy_and_scores_the_advisor(tmp_path):
    summary = study.run_study(quick=True, out=tmp_path / "study", cache_dir=str(tmp_path / "cache"))
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
    if CHROMIUM:  # the report as a browser renders it: every plot loads
        seen = render(tmp_path / "study" / "report.html", tmp_path)
        assert seen["images"] == 3 and seen["broken"] == 0 and seen["tables"] >= 2
    assert len(summary["held_out_regret_points"]) == 4 and summary["calibrated_mean_regret_points"] <= summary["mean_regret_points"]
