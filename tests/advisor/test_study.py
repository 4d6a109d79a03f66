"""The study's bookkeeping and scoring: reuse of finished runs, regret, the one-seed pick regret, the race,
leave-one-data-set-out; and the quick study end to end through the CLI."""

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import CHROMIUM, render, write_folder

from transferlab.advisor import study
from transferlab.advisor.advise import Measurements
from transferlab.forecast import Forecaster
from transferlab.plan import STRATEGIES, CutEvidence


def _seed(data, size, seed, accuracies, probes=(0.5, 0.8, 0.7), pilot=0.0, advise_seconds=1.0):
    """A studied seed: the advisor's measurements and every run's balanced accuracy, 10 s and 4 epochs each."""
    evidence = tuple(CutEvidence(n, 8, p, 0.3, 0.0, None, images=40) for n, p in zip(("stage0", "stage1", "final"), probes))
    measurements = Measurements(size, 1.0, "b", 64, evidence, ((size // 2, probes[1] - 0.05), (size, probes[1])),
                                {"gain": pilot}, ())  # fmt: skip
    runs = {key: study.RunResult(a, 10.0, (a - 0.3, a - 0.2, a - 0.1, a)) for key, a in accuracies.items()}
    return study.SeedRecord(data, size, seed, study.Measured(measurements, advise_seconds), runs)


KEYS = ("head@final", "truncate@stage0", "truncate@stage1", "finetune@final", "scratch@final", "multicut@all",
        "ensemble@final")  # fmt: skip


def _accuracies(*values):
    """The runs' accuracies in the order of KEYS; multicut a point below head and the ensemble two unless given."""
    return {**dict(zip(KEYS, values)), "multicut@all": values[5] if len(values) > 5 else values[0] - 0.01,
            "ensemble@final": values[6] if len(values) > 6 else values[0] - 0.02}  # fmt: skip


def test_regret_is_against_the_mean_over_seeds_and_the_one_seed_pick_regret_defined_only_with_two_seeds():
    seeds = [_seed("a", 10, 0, _accuracies(0.70, 0.4, 0.60, 0.80, 0.1)),
             _seed("a", 10, 1, _accuracies(0.74, 0.4, 0.60, 0.70, 0.1))]  # fmt: skip
    assert study.cell_means(seeds)["finetune@final"] == pytest.approx(0.75)  # the oracle; head averages 0.72
    assert study.regret(seeds, ["head@final", "finetune@final"]) == pytest.approx(1.5)  # (3 + 0) / 2 points
    assert study.one_seed_pick_regret(seeds) == pytest.approx(1.5)  # seed 1 alone would have picked head
    assert study.one_seed_pick_regret(seeds[:1]) is None  # 0 by construction with one seed: not defined


def test_an_advised_option_stands_for_its_run():
    seed = _seed("a", 10, 0, _accuracies(0.7, 0.4, 0.9, 0.8, 0.1))
    assert study.option_run(seed, "truncate") == "truncate@stage1"  # the best probing earlier cut (0.8)
    assert study.option_run(seed, "multicut") == "multicut@all"
    assert study.option_run(seed, "ensemble") == "ensemble@final"
    assert study.outcome(seed) == pytest.approx({"head": 0.7, "truncate": 0.9, "finetune": 0.8, "multicut": 0.69,
                                                 "ensemble": 0.68, "scratch": 0.1})


def test_the_race_sees_only_what_its_budget_buys():
    seed = _seed("a", 10, 0, _accuracies(0.7, 0.4, 0.6, 0.9, 0.1))
    seed.runs["head@final"] = dataclasses.replace(seed.runs["head@final"], seconds=0.4)  # 0.1 s an epoch
    assert study.race(seed, budget=3.0) == "head@final"  # nobody else finished an epoch (2.5 s each)
    assert study.race(seed, budget=1000.0) == "finetune@final"  # everyone ran to the end
    assert study.race(seed, budget=1.0) is None  # 0.05 s an arm in the first round: no arm watched, no race


def test_each_parent_set_is_scored_by_a_forecaster_that_never_saw_it(monkeypatch):
    records = [_seed(d, n, s, _accuracies(0.7, 0.4, 0.6, 0.8 if n == 30 else 0.65, 0.1), pilot=0.01 * s)
               for d in ("a", "b", "c") for n in (10, 30) for s in (0, 1)]  # fmt: skip
    fitted_on = []
    real = study.fit_forecaster

    def watched(rows, cells, source=""):
        fitted_on.append(cells)
        return real(rows, cells, source)

    monkeypatch.setattr(study, "fit_forecaster", watched)
    scored = study.leave_one_parent_out(records)
    assert fitted_on == [4, 4, 4]  # two of the three parents, two sizes each
    assert list(scored) == ["a@10", "a@30", "b@10", "b@30", "c@10", "c@30"]
    assert scored["a@30"]["oracle"] == "finetune@final" and scored["a@10"]["oracle"] == "head@final"
    assert scored["a@30"]["always finetune"] == 0 and scored["a@30"]["always head"] == pytest.approx(10)
    assert scored["a@30"]["picks"] == ["ensemble@final"] * 2  # the one advised option
    assert scored["a@30"]["advisor"] == pytest.approx(12)  # two points below head
    assert scored["a@30"]["forecast, any option"] <= scored["a@30"]["always head"]
    assert scored["a@30"]["always ensemble"] == pytest.approx(12)
    assert scored["a@10"]["cost"] == pytest.approx(1 / 60)  # 1 s of advice against six trained runs of 10 s
    assert scored["a@10"]["training cost"] == pytest.approx(1 / 6)  # the ensemble's seconds are scored as 10 s here
    summary = study.summarize(scored)
    assert summary["always head"]["worst"] == pytest.approx(10) and summary["cost"]["median"] == pytest.approx(1 / 60)
    assert "| **mean** |" in study.table(scored)
    assert study.parent_table(scored).splitlines()[2].startswith("| a | 2 | 0.750 | ")  # two cells, oracles 0.7 and 0.8


def test_finished_runs_are_reused_only_with_the_same_settings(tmp_path, monkeypatch):
    calls = []

    def fake_train(prepared, config):
        calls.append(config)
        return {"balanced_accuracy": 0.5, "history": [{"val_accuracy": 0.4, "val_loss": 1.0}]}

    monkeypatch.setattr(study, "train_prepared", fake_train)
    config = study.TrainConfig(data="digits", out=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    first = study._run(lambda: None, config)
    assert study._run(lambda: None, config) == first and len(calls) == 1
    assert study.read_record(tmp_path / "run" / "study-run.json", study._key(config), study.RunResult) == first
    assert json.loads((tmp_path / "run" / "study-run.json").read_text())["result"]["trajectory"] == [0.4]
    assert first.trajectory == (0.4,)
    study._run(lambda: None, dataclasses.replace(config, epochs=3))
    assert len(calls) == 2


@pytest.mark.slow
def test_quick_study_runs_every_option_and_scores_the_advisor_leaving_each_set_out(tmp_path):
    from conftest import assert_one_line_error, run

    out, cache = tmp_path / "study", tmp_path / "cache"
    result = run("study", "--quick", "--out", str(out), cache=cache)
    assert result.returncode == 0, result.stderr
    assert "leave one data set out: advisor mean regret" in result.stdout
    summary = json.loads((out / "study.json").read_text())
    assert list(summary["cells"]) == ["orientation@5", "colour-shape@5"]
    for cell in summary["cells"].values():
        assert cell["seeds"] == 2 and all(pick.split("@")[0] in STRATEGIES for pick in cell["picks"])
        assert cell["advisor"] >= 0 and cell["always head"] >= 0 and (cell[study.PICK_NOISE] is None or cell[study.PICK_NOISE] >= 0) and 0 < cell["cost"] < 1
    seed = json.loads((out / "orientation@5" / "seed0" / "measurements.json").read_text())["result"]
    assert seed["measurements"]["pilot"]["val_images"] == 4 * 5  # 4 classes, validation as large as training
    ensemble = json.loads((out / "orientation@5" / "seed0" / "ensemble-final" / "study-run.json").read_text())
    assert [m["strategy"] for m in ensemble["config"]["members"]] == ["multicut", "finetune"]
    # 5 validation images a class choose nothing: `finetune` alone trained on them, the ensemble's member (tempered
    # there) kept them out, a run of its own
    runs = {f: json.loads((out / "orientation@5" / "seed0" / f / "study-run.json").read_text())["result"]
            for f in ("multicut-all", "finetune-final", "finetune-final-held-out")}  # fmt: skip
    assert runs["finetune-final"]["trained_on_validation"] and not runs["finetune-final-held-out"]["trained_on_validation"]
    members = [runs["multicut-all"], runs["finetune-final-held-out"]]
    assert ensemble["result"]["seconds"] == pytest.approx(sum(m["seconds"] for m in members))  # it costs both members
    assert 0.25 <= ensemble["result"]["balanced_accuracy"] <= 1  # above chance on four orientations
    assert Forecaster.load(out / "forecaster.json").cells == 2
    assert "| **worst** |" in (out / "table.md").read_text()
    again = run("study", "--quick", "--out", str(out), cache=cache)
    assert again.returncode == 0 and json.loads((out / "study.json").read_text())["cells"] == summary["cells"]  # reused
    elsewhere = run("study", "--quick", "--out", str(out), "--finished", "--resolution", "24", cache=cache)
    assert_one_line_error(elsewhere, "No finished seed in")  # runs at 32 px do not stand for runs at 24 px
    if CHROMIUM:  # the report as a browser renders it: the plot loads
        seen = render(out / "report.html", tmp_path)
        assert seen["images"] == 1 and seen["broken"] == 0 and seen["tables"] >= 2


def test_the_paired_test_tells_a_steady_gain_from_noise():
    steady = {f"c{i}": {"advisor": 1.0, "always finetune": 2.0 + 0.1 * (i % 3)} for i in range(12)}
    result = study.paired_test(steady, "advisor", "always finetune", draws=20_000)
    assert result["mean_difference"] == pytest.approx(1.1) and result["p_value"] < 0.001  # 12 cells, all one way
    noisy = {f"c{i}": {"advisor": 1.0, "always finetune": 1.0 + (1 if i % 2 else -1)} for i in range(12)}
    assert study.paired_test(noisy, "advisor", "always finetune", draws=20_000)["p_value"] > 0.9  # half each way


def test_multicut_is_compared_with_the_best_frozen_head_on_one_cut_up_to_thirty_per_class():
    records = [_seed("a", 10, s, _accuracies(0.70, 0.4, 0.75, 0.9, 0.1, 0.745)) for s in (0, 1)]
    records += [_seed("a", 100, 0, _accuracies(0.70, 0.4, 0.75, 0.9, 0.1, 0.5))]  # above 30 per class: not compared
    gaps = study.multicut_gaps(records)
    assert list(gaps) == ["a@10"] and gaps["a@10"] == pytest.approx(0.5)  # truncate@stage1 is the best frozen head


def test_the_paired_test_by_data_set_counts_sets_not_cells():
    """36 cells of 9 sets, all one way: by cells p < 1e-4; by sets the exact test's floor, 2 / 2^9."""
    cells = {f"set{s}@{n}": {"advisor": 1.0, "always finetune": 2.0} for s in range(9) for n in (5, 10, 30, 100)}
    by_cell = study.paired_test(cells, "advisor", "always finetune", draws=20_000)
    by_set = study.paired_test_by_set(cells, "advisor", "always finetune")
    assert by_cell["p_value"] < 1e-4 and by_set["sets"] == 9
    assert by_set["p_value"] == pytest.approx(2 / 2**9) and by_set["mean_difference"] == pytest.approx(1.0)


def test_a_subset_of_the_pool_runs_only_its_cells_and_anything_outside_it_is_refused():
    colour = study.POOLS["colour"]
    subset = study.within(colour, {"sizes": (10,), "seeds": (0,)})
    assert (subset.sizes, subset.seeds, subset.data) == ((10,), (0,), colour.data)
    with pytest.raises(study.ConfigError, match=r"^--sizes 7 is not in the pool's 5, 10, 30\.$"):
        study.within(colour, {"sizes": (7,)})


def test_scoring_only_the_finished_seeds_trains_nothing_and_says_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "prepare", lambda config: pytest.fail("nothing may be prepared or trained"))
    with pytest.raises(study.Unfinished):
        study.run_seed("orientation", 5, 0, study.QUICK, tmp_path, None, finished_only=True)
    with pytest.raises(study.ConfigError, match="No finished seed in"):
        study.run_study(quick=True, out=tmp_path, finished_only=True)


def test_an_ensembles_runs_are_redone_when_a_members_recipe_changes(monkeypatch):
    """A study run is keyed by its strategy's recipe, and an ensemble's by its members' too: a
    member trained another way makes the ensemble's finished runs stale."""
    config = study.TrainConfig(data="digits", strategy="ensemble")
    before = study._key(config)
    member = STRATEGIES["ensemble"].members[0]
    monkeypatch.setitem(STRATEGIES, member, dataclasses.replace(STRATEGIES[member], recipe=STRATEGIES[member].recipe + 1))
    assert study._key(config) != before
    head = study.TrainConfig(data="digits", strategy="head")
    assert study._key(head) == {"version": study.RUN_VERSION, "recipe": STRATEGIES["head"].recipe, "strategy": "head"}
    monkeypatch.setitem(STRATEGIES, "head", dataclasses.replace(STRATEGIES["head"], recipe=1))
    assert study._key(head) == {"version": study.RUN_VERSION, "strategy": "head"}  # a first recipe keys nothing


def test_the_studys_ensemble_trains_its_members_as_the_ensemble_strategy_does_at_each_size(tmp_path):
    from transferlab.config import for_strategy
    from transferlab.data import split_dataset
    from transferlab.datasets import load_dataset
    from transferlab.trainer.train import ensemble_members

    base = study.TrainConfig(data="digits")
    configs = {key: for_strategy(base, key.split("@")[0], out=str(tmp_path / key.replace("@", "-")))
               for key in ("multicut@all", "finetune@final")}  # fmt: skip
    members = list(configs)
    runs = {key: study.RunResult(0.5, 1.0, ()) for key in members}
    assert study.member_configs(configs, "ensemble@final", members, 10, runs) == list(configs.values())  # 20 a class
    multicut, finetune = study.member_configs(configs, "ensemble@final", members, 30, runs)  # 60 labelled a class
    assert multicut is configs["multicut@all"]
    assert finetune.strategy == "finetune" and finetune.augment is True and finetune.out.endswith("finetune-final-augmented")
    assert not finetune.holdout
    # where the option's own network trained on its validation images, the member (tempered there) is a run of its own
    trained_there = {**runs, "finetune@final": study.RunResult(0.5, 1.0, (), trained_on_validation=True)}
    multicut, finetune = study.member_configs(configs, "ensemble@final", members, 5, trained_there)
    assert multicut is configs["multicut@all"] and finetune.holdout and finetune.out.endswith("finetune-final-held-out")
    # the runs trained only as a member are told from the options' runs by their folders (the benchmarks judge by options)
    augmented_held_out = study.member_configs(configs, "ensemble@final", members, 30, trained_there)[1]
    assert augmented_held_out.out.endswith("finetune-final-augmented-held-out")
    assert study.member_run(Path(augmented_held_out.out).name) and study.member_run(Path(finetune.out).name)
    assert not any(study.member_run(Path(config.out).name) for config in configs.values())
    for size in (5, 10, 30):  # as --strategy ensemble trains them on a folder of that many labelled images a class
        write_folder(tmp_path / f"d{size}", per_class=study.labelled_per_class(size))
        splits = split_dataset(load_dataset(str(tmp_path / f"d{size}")), val_fraction=0.5)  # the study's protocol
        trained = ensemble_members(for_strategy(base, "ensemble", companions=("none",)), tmp_path, None, splits, 64)
        studied = study.member_configs(configs, "ensemble@final", members, size, trained_there if size < 10 else runs)
        assert [m.config.resolved_augment for m in trained] == [c.resolved_augment for c in studied]
        assert [m.config.holdout for m in trained] == [c.holdout for c in studied] == [False, size < 10]
