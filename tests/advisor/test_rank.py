"""Ranking source backbones: scores per candidate, the choice carried into the plan, the CLI."""

import json

import pytest
from conftest import assert_one_line_error, run, run_here, write_folder

import transferlab as tl


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    return root, write_folder(root / "d", per_class=10)


def test_rank_scores_every_candidate_best_first(folder):
    root, data = folder
    ranking = tl.rank(str(data), ("mobilenet_v2", "efficientnet_lite0"), resolution=32, cache_dir=str(root / "c"))
    assert {s.backbone for s in ranking.scores} == {"mobilenet_v2", "efficientnet_lite0"}
    probes = [s.probe_accuracy for s in ranking.scores]
    assert probes == sorted(probes, reverse=True) and ranking.best is ranking.scores[0]
    for score in ranking.scores:
        assert score.leep is not None and score.leep < 0  # a log-likelihood
        assert score.best_cut in [e.cut for e in score.evidence] and score.seconds > 0
        assert score.parameters > 1_000_000 and score.resolution == 32
    assert ranking.table().splitlines()[1].startswith(ranking.best.backbone)


def test_advise_with_several_backbones_plans_with_the_best_one(folder):
    root, data = folder
    plan = tl.advise(str(data), backbones=("mobilenet_v2", "efficientnet_lite0"), resolution=32,
                     cache_dir=str(root / "c"), time_budget="0")  # fmt: skip
    assert plan.backbone == plan.candidates[0]["backbone"] and len(plan.candidates) == 2
    assert plan.evidence[0].cut == ("features.1" if plan.backbone == "mobilenet_v2" else "blocks.0")
    result = tl.train(str(data), strategy="auto", backbones=("mobilenet_v2", "efficientnet_lite0"), resolution=32,
                      epochs=2, cache_dir=str(root / "c"), out=str(root / "run"))  # fmt: skip
    companions = tl.TrainConfig(data="x").resolved_companions(plan.backbone)
    chosen = [name for name, row in result.plan.crossfit["candidates"].items() if row.get("weight")]
    alone = chosen[0].removeprefix("multicut-") if chosen[0].removeprefix("multicut-") in companions else None
    # the ranked source, or the one companion the check chose alone (multicut on its backbone)
    assert result.metrics["backbone"] == result.plan.backbone == (alone if len(chosen) == 1 and alone else plan.backbone)
    assert [c["probe_accuracy"] for c in result.plan.candidates] == [c["probe_accuracy"] for c in plan.candidates]


def test_rank_from_the_command_line(folder, tmp_path):
    root, data = folder
    result = run("rank", str(data), "efficientnet_lite0,mobilenet_v2", "--resolution", "32", "--out", str(tmp_path / "r"),
                 cache=root / "c")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "best start:" in result.stdout and (tmp_path / "r" / "rank.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "r" / "ranking.json").read_text())) == 2
    assert_one_line_error(run_here("rank", str(data), "efficientnet_lite9", cache=root / "c"), "Unknown backbone 'efficientnet_lite9'")
    assert_one_line_error(run_here("rank", str(data), "--backbones", "efficientnet_lite9,mobilenet_v2", cache=root / "c"),
                          "Unknown backbone 'efficientnet_lite9'")  # the flag the other commands take, the same names


def test_ranking_on_onnx_runtime_engines_scores_as_pytorch_does(folder):
    root, data = folder
    scores = {engine: tl.rank(str(data), ("efficientnet_lite0",), resolution=32, cache_dir=str(root / "e"),
                              engine=engine).best for engine in ("pytorch", "onnxruntime", "onnxruntime-int8")}  # fmt: skip
    exact, quantized = scores["onnxruntime"], scores["onnxruntime-int8"]
    assert [e.probe_accuracy for e in exact.evidence] == [e.probe_accuracy for e in scores["pytorch"].evidence]
    assert exact.logme == pytest.approx(scores["pytorch"].logme, abs=1e-3)
    assert abs(quantized.probe_accuracy - scores["pytorch"].probe_accuracy) <= 0.15  # close, on a few dozen images
    assert len(list((root / "e" / "onnx").glob("*.onnx"))) >= 2  # the exported bodies, kept under their keys
