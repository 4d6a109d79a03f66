"""The default decided on the user's own images: candidates scored out of fold, resumed, combined,
and the plan that carries the combination out; the time budget."""

import dataclasses
import json
import logging
import types

import numpy as np
import pytest
import torch
from conftest import COLOURS, assert_one_line_error, make_image, run_here, write_folder

import transferlab as tl
from transferlab import features
from transferlab.advisor import crossfit
from transferlab.advisor.crossfit import FOLDS, Candidate, candidates, fold_plan
from transferlab.advisor.decide import cost_estimate, pilot_needed
from transferlab.config import TrainConfig, with_plan
from transferlab.data import split_dataset
from transferlab.datasets import load_dataset
from transferlab.offline import OFFLINE_BACKBONES
from transferlab.plan import CutEvidence, best_cut
from transferlab.prepare import prepare
from transferlab.strategies import STRATEGIES, ensemble_entry


def _evidence(best: str) -> tuple[CutEvidence, ...]:
    return tuple(CutEvidence(cut, 8, 0.9 if cut == best else 0.5, 0.3, 0.0, None) for cut in ("blocks.0", "final"))


def test_candidates_are_the_tables_marked_strategies_with_the_best_single_cut_and_both_batchnorm_settings():
    at_final = {c.name: c for c in candidates(_evidence("final"))}
    assert set(at_final) == {"head", "multicut", "finetune", "finetune-adapted-bn"}
    assert at_final["finetune"].freeze_bn is True and at_final["finetune-adapted-bn"].freeze_bn is False
    earlier = {c.name: c for c in candidates(_evidence("blocks.0"))}
    assert earlier["truncate@blocks.0"] == Candidate("truncate@blocks.0", "truncate", "blocks.0")
    assert {c.strategy for c in candidates(_evidence("final"))} == {n for n, s in STRATEGIES.items() if s.candidate}


def test_where_cuts_probe_alike_the_head_candidate_reads_the_cut_the_plans_words_name():
    tied = tuple(CutEvidence(cut, 8, 0.9, 0.3, logme, None) for cut, logme in
                 (("blocks.0", -0.1), ("blocks.1", 0.2), ("final", -0.3)))  # fmt: skip
    assert best_cut(tied).cut == "blocks.1"  # LogME breaks the tie
    assert "truncate@blocks.1" in {c.name for c in candidates(tied)}


def test_the_fine_tuning_candidates_train_augmented_where_the_ensembles_member_would_and_the_plan_carries_it():
    from transferlab.advisor.combine import Combination
    from transferlab.advisor.decide import decided_plan

    augmented = {c.name: c.augment for c in candidates(_evidence("final"), augment=True)}
    assert augmented == {"head": None, "multicut": None, "finetune": True, "finetune-adapted-bn": True}
    assert {c.augment for c in candidates(_evidence("final"))} == {None, False}
    chosen = candidates(_evidence("final"), augment=True)
    plan = _plan_for_members()
    alone = Combination({"finetune": 1.0}, {"finetune": 1.0}, "best alone", {})
    single = decided_plan(plan, alone, chosen, {"images": 9, "folds": 3, "seconds": 1, "candidates": {},
                                                "left_out": [], "augmented": ["finetune"]})  # fmt: skip
    assert (single.strategy, single.augment) == ("finetune", True)
    assert "finetune trained on augmented images" in single.explanation
    assert with_plan(TrainConfig(data="x", strategy="auto"), single).resolved_augment is True
    both = Combination({"multicut": 0.5, "finetune": 0.5}, {"multicut": 1.0, "finetune": 1.0}, "reference", {})
    mixed = decided_plan(plan, both, chosen, {"images": 9, "folds": 3, "seconds": 1, "candidates": {},
                                              "left_out": [], "augmented": []})  # fmt: skip
    assert [(m["candidate"], m["augment"]) for m in mixed.members] == [("multicut", None), ("finetune", True)]


def _plan_for_members():
    from transferlab.plan import Plan

    return Plan("multicut", "all", 1e-3, 1, 32, "efficientnet_lite0", 9, 1.0, False, 0.0, _evidence("final"), "Forecast.")


def test_a_folds_saved_scores_are_reused_for_an_unaugmented_candidate_and_not_for_an_augmented_one(tmp_path,
                                                                                                 monkeypatch):  # fmt: skip
    write_folder(tmp_path / "d", per_class=6)
    labelled, folds = crossfit.labelled_folds(split_dataset(load_dataset(str(tmp_path / "d"))), seed=0)

    def key(**typed) -> str:
        return crossfit._key(labelled, folds[0], TrainConfig(data="x", strategy="finetune", **typed), None)

    plain, augmented = key(), key(augment=True)
    assert key(augment=False) == plain and augmented != plain
    monkeypatch.setattr(crossfit, "AUGMENTATION_RECIPE", crossfit.AUGMENTATION_RECIPE + 1)  # a new augmentation
    assert key(augment=True) != augmented and key() == plain


def test_folds_are_stratified_and_cover_every_image_below_the_limit_and_the_runs_own_split_above_it(tmp_path):
    labels = np.repeat(np.arange(3), 10)
    folds = [fold.scored for fold in fold_plan(labels, seed=0)]
    assert len(folds) == FOLDS and sorted(np.concatenate(folds).tolist()) == list(range(30))
    assert all(np.bincount(labels[f], minlength=3).min() >= 3 for f in folds)
    write_folder(tmp_path / "d", per_class=crossfit.FOLD_LIMIT + 12)
    splits = split_dataset(load_dataset(str(tmp_path / "d")))
    labelled, (holdout,) = crossfit.labelled_folds(splits, seed=0)
    assert holdout.final_run and holdout.scored.tolist() == list(range(len(splits.train), len(labelled)))
    run = crossfit.fold_splits(labelled, holdout, TrainConfig(data="x"))
    assert run.test is None and run.train.fingerprint() == splits.train.fingerprint()
    assert run.val.fingerprint() == splits.val.fingerprint()  # the final run's own split, scored where it validates
    assert not run.val_given and crossfit.fold_splits(labelled, holdout, TrainConfig(data="x"), val_given=True).val_given
    assert not pilot_needed(splits, TrainConfig(data="x"))  # the check decides alone: nothing for a pilot to change
    assert pilot_needed(splits, TrainConfig(data="x", time_budget="10m"))  # the forecast may decide: it needs one
    small = split_dataset(load_dataset(str(write_folder(tmp_path / "small", per_class=9))))
    assert pilot_needed(small, TrainConfig(data="x"))  # folds: the pilot times their estimate


def test_the_cost_estimate_pays_the_pilots_epoch_per_epoch_and_its_set_up_and_frozen_pass_once():
    """On a GPU the pilot's whole time (24 s) times the epochs estimated 843 s for a search that took
    32 s: only the pilot's epoch scales with the epochs, its probe's head comes once a fold, its
    frozen pass over the labelled images once for a frozen candidate at another cut (the folds
    gather the rows of the passes the run has made)."""
    plan = types.SimpleNamespace(pilot={"seconds": 10.0, "probe_seconds": 2.0, "epoch_seconds": 1.0,
                                        "features_seconds": 1.5})  # fmt: skip
    folds = fold_plan(np.repeat(np.arange(3), 10), seed=0)  # three folds, each training on 2/3 of the images
    config = TrainConfig(data="d", epochs=6)
    body, frozen = Candidate("finetune", "finetune"), Candidate("multicut", "multicut")
    assert cost_estimate(plan, [body], folds, config) == pytest.approx(3 * 2 / 3 * (0.5 + 6 * 1.0))
    assert cost_estimate(plan, [body, frozen], folds, config) == pytest.approx(13.0 + 1.5 + 3 * 0.5)
    timed_before = types.SimpleNamespace(pilot={"seconds": 10.0, "probe_seconds": 2.0, "epoch_seconds": 1.0})
    assert cost_estimate(timed_before, [body, frozen], folds, config) == pytest.approx(16.0 + 3 * 2.0)
    saved_before = types.SimpleNamespace(pilot={"seconds": 10.0})  # a plan saved before the pilot timed its parts
    assert cost_estimate(saved_before, [body], folds, config) == pytest.approx(3 * 2 / 3 * (10.0 + 6 * 10.0))
    assert cost_estimate(types.SimpleNamespace(pilot={}), [body], folds, config) is None  # no pilot ran: nothing timed


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("decide")
    return root, write_folder(root / "d", per_class=9)


def test_out_of_fold_scores_cover_every_labelled_image_and_an_interrupted_search_resumes(folder, monkeypatch):
    root, data = folder
    config = TrainConfig(data=str(data), resolution=32, epochs=1, cache_dir=str(root / "cache"))
    prepared = prepare(config)
    chosen = [Candidate("head", "head"), Candidate("multicut", "multicut")]
    first = crossfit.cross_fit(prepared, config, chosen, root / "folds")
    assert set(first) == {"head", "multicut"}
    assert len(first["head"].labels) == 27 and first["head"].logits.shape == (27, 3)  # train + val, never test
    (root / "folds" / "multicut" / "fold-1.npz").unlink()  # as if stopped during that fold
    trained = []
    real = crossfit.fit_stages
    monkeypatch.setattr(crossfit, "fit_stages",
                        lambda run, cfg, out, **kw: trained.append(cfg.strategy) or real(run, cfg, out, **kw))  # fmt: skip
    second = crossfit.cross_fit(prepared, config, chosen, root / "folds")
    assert trained == ["multicut"]  # only the missing fold ran again
    assert np.allclose(second["head"].logits, first["head"].logits)
    assert np.allclose(second["multicut"].logits, first["multicut"].logits, atol=1e-4)


@pytest.mark.parametrize("level, lines", [("INFO", 0), ("DEBUG", 3)])
def test_the_folds_runs_keep_their_info_lines_back_unless_debugging(folder, tmp_path, caplog, level, lines):
    """A check trains a dozen runs that each would log what the final run logs once; at INFO they
    are quiet (the fold bar shows progress), at DEBUG every line shows, and the level is restored."""
    root, data = folder
    config = TrainConfig(data=str(data), resolution=32, cache_dir=str(root / "cache"))
    prepared = prepare(config)
    with caplog.at_level(level, logger="transferlab"):
        crossfit.cross_fit(prepared, config, [Candidate("head", "head")], tmp_path / "folds")
        assert logging.getLogger("transferlab").level == getattr(logging, level)
    kept = [r for r in caplog.records if r.getMessage().startswith("head: kept epoch")]
    assert len(kept) == lines


def test_the_folds_pass_each_labelled_image_through_the_frozen_body_and_the_decoder_once(folder, tmp_path, monkeypatch):
    """Features are shared across folds: every fold's training, validation and scored images are
    labelled images, gathered from the first fold's passes (the frozen body's at the candidate's
    cut; the decoded pixels the fine-tuning reads) instead of computed fold after fold."""
    _, data = folder
    config = TrainConfig(data=str(data), resolution=32, epochs=1, cache_dir=str(tmp_path / "cache"))
    prepared = prepare(config)
    passed: dict[str, int] = {}
    real = features.compute_outputs

    def counted(model, images, *args, **kwargs):
        what = "decoded" if model is None else "features"
        passed[what] = passed.get(what, 0) + len(images)
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(features, "compute_outputs", counted)
    crossfit.cross_fit(prepared, config, [Candidate("head", "head"), Candidate("finetune", "finetune")], tmp_path / "folds")
    labelled = len(prepared.splits.train) + len(prepared.splits.val)
    assert passed["features"] == labelled  # the fine-tuned networks' own predictions do not go through the cache
    assert passed["decoded"] == labelled


def test_unlabelled_images_reach_the_folds_of_the_candidates_that_learn_from_them(folder, tmp_path, monkeypatch):
    """So their gain (kept only where the fold's validation says it helps) is in the out-of-fold
    scores the choice is made on; a candidate that does not learn from them is not handed them."""
    root, data = folder
    rng = np.random.default_rng(9)
    (tmp_path / "more").mkdir()
    for i, colour in enumerate(list(COLOURS.values()) * 4):  # loose, without labels
        make_image(colour, rng).save(tmp_path / "more" / f"{i:02d}.png")
    config = TrainConfig(data=str(data), resolution=32, epochs=1, cache_dir=str(root / "cache"),
                         unlabeled=str(tmp_path / "more"))  # fmt: skip
    prepared = prepare(config)
    handed = {}
    real = crossfit.fit_stages

    def watched(run, cfg, out, **kw):
        handed.setdefault(cfg.strategy, set()).add(None if run.splits.unlabeled is None else len(run.splits.unlabeled))
        return real(run, cfg, out, **kw)

    monkeypatch.setattr(crossfit, "fit_stages", watched)
    chosen = [Candidate("head", "head"), Candidate("finetune", "finetune", freeze_bn=True)]
    crossfit.cross_fit(prepared, dataclasses.replace(config, epochs=None), chosen, tmp_path / "folds")
    assert handed == {"head": {12}, "finetune": {None}}


def test_auto_trains_what_the_out_of_fold_scores_chose_and_reports_them(folder):
    root, data = folder
    result = tl.train(str(data), resolution=32, epochs=1, cache_dir=str(root / "cache"),
                      out=str(root / "run"))  # fmt: skip
    plan = result.plan
    evidence = plan.crossfit
    assert evidence["folds"] == FOLDS and evidence["images"] == 27
    checked = candidates(plan.evidence, companions=OFFLINE_BACKBONES[1:])  # the other offline backbones' multicut
    assert [c.backbone for c in checked[-3:]] == list(OFFLINE_BACKBONES[1:])
    assert set(evidence["candidates"]) == {*(c.name for c in checked), "combination"}
    weights = {name: row["weight"] for name, row in evidence["candidates"].items() if name != "combination"}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert "Checked on your own 27 labelled images" in plan.explanation
    table = plan.crossfit_table().splitlines()
    assert table[0].startswith("checked on your images") and [line.split()[0] for line in table[1:]] == list(
        evidence["candidates"])
    chosen = [name for name, w in weights.items() if w > 0]
    by_name = {c.name: c for c in checked}
    if len(chosen) > 1:
        assert plan.members and [m["candidate"] for m in plan.members] == chosen
        saved = json.loads((root / "run" / "model" / "bundle.json").read_text())
        assert [m["weight"] for m in saved["members"]] == pytest.approx([weights[n] for n in chosen])
        for member in saved["members"]:  # each member trained on its own backbone (a companion on another)
            info = json.loads((root / "run" / "model" / member["folder"] / "bundle.json").read_text())
            assert info["backbone"] == (by_name[member["folder"]].backbone or "efficientnet_lite0")
    else:
        assert not plan.members and plan.strategy == by_name[chosen[0]].strategy
        assert plan.backbone == (by_name[chosen[0]].backbone or "efficientnet_lite0")
    assert json.loads((root / "run" / "plan.json").read_text())["crossfit"]["folds"] == FOLDS
    report = (root / "run" / "report.html").read_text()  # the evidence drawn too
    for figure, caption in (("depth.png", "Your images, depth by depth"), ("checked.png", "Checked on your images: out-of")):
        assert (root / "run" / figure).stat().st_size > 0 and caption in report
    # the run's time is the whole run's, the measuring and the check included (what the CLI prints)
    assert result.metrics["train_seconds"] > evidence["seconds"]


def test_from_the_ensembles_size_the_checks_fine_tuning_folds_train_on_augmented_images(folder, tmp_path, monkeypatch):
    """With the table's size lowered under the folder's 9 labelled images a class, every fold of a
    fine-tuning candidate draws augmented batches (and only theirs), and the plan says so."""
    from transferlab.trainer import loops, network

    _, data = folder
    monkeypatch.setitem(STRATEGIES, "ensemble", dataclasses.replace(STRATEGIES["ensemble"], augment_members_from=9))
    runs = []
    real_fit, real_augment = network.fit_network, loops.augment_batch
    monkeypatch.setattr(network, "fit_network", lambda *a, **k: runs.append(a[6].augment) or real_fit(*a, **k))
    monkeypatch.setattr(loops, "augment_batch", lambda pixels, *flips: runs.append("batch") or real_augment(pixels, *flips))
    plan = tl.advise(str(data), resolution=32, epochs=1, cache_dir=str(tmp_path / "cache"))
    fine_tuning = [c for c in candidates(plan.evidence, augment=True) if c.augment]
    assert runs.count(True) == len(fine_tuning) * FOLDS and "batch" in runs
    assert plan.crossfit["augmented"] == [c.name for c in fine_tuning]
    assert "finetune, finetune-adapted-bn trained on augmented images" in plan.explanation


def test_a_time_budget_below_the_estimate_leaves_the_decision_to_the_forecast_and_says_so(folder):
    root, data = folder
    plan = tl.advise(str(data), resolution=32, epochs=1, cache_dir=str(root / "cache"), time_budget="0.01s")
    assert not plan.members and "exceeds --time-budget 0.01s; the forecast decided" in plan.explanation
    assert plan.crossfit["estimate_seconds"] > 0.01


def test_a_weighted_plan_with_two_members_of_one_strategy_trains_both_without_overwriting_stages(folder):
    root, data = folder
    plan = tl.advise(str(data), resolution=32, epochs=1, cache_dir=str(root / "cache"), time_budget="0")
    members = tuple({"candidate": name, "strategy": "finetune", "cut": "final", "freeze_bn": freeze, "weight": w,
                     "temperature": 1.0} for name, freeze, w in (("finetune", True, 0.7), ("finetune-adapted-bn", False, 0.3)))
    plan = dataclasses.replace(plan, strategy=ensemble_entry().name, cut="final", members=members)
    plan.save(root / "two.json")
    result = tl.train(str(data), resolution=32, epochs=1, cache_dir=str(root / "cache"),
                      out=str(root / "two"), plan=str(root / "two.json"))  # fmt: skip
    assert {"probe_history", "finetune-adapted-bn.probe_history"} <= set(result.metrics), sorted(result.metrics)
    assert [(r["strategy"], r["weight"], r["temperature"]) for r in result.metrics["members"]] == [
        ("finetune", 0.7, 1.0), ("finetune-adapted-bn", 0.3, 1.0)]
    # tempered by the plan, not on the validation images: the members trained on them (one a class), and the run says so
    from transferlab.trainer.network import TRAINED_ON_VALIDATION

    assert result.metrics["validation"] == TRAINED_ON_VALIDATION
    assert not any(r["resolved_config"]["holdout"] for r in result.metrics["members"])
    model = tl.load(root / "two" / "model")
    assert model.predict([str(next((data / "red").iterdir()))], top_k=1)


def test_a_class_of_two_images_leaves_the_decision_to_the_forecast_and_says_why(tmp_path):
    """Two images a class are enough to train (one to train, one to validate), not to fold: the rest
    of a fold that scores one of them cannot be split again. The check steps aside, by name."""
    data = write_folder(tmp_path / "d", per_class=9)
    for image in sorted((data / "blue").iterdir())[2:]:
        image.unlink()
    labelled, folds = crossfit.labelled_folds(split_dataset(load_dataset(str(data))), seed=0)
    assert "'blue' has fewer than 3 labelled images" in crossfit.fold_obstacle(labelled, folds)
    assert crossfit.fold_obstacle(labelled, [dataclasses.replace(folds[0], final_run=True)]) is None
    plan = tl.advise(str(data), resolution=32, epochs=1, cache_dir=str(tmp_path / "cache"))
    assert "Not checked on your images: 'blue' has fewer than 3 labelled images" in plan.explanation
    assert "the forecast decided" in plan.crossfit["reason"] and not plan.members


def test_a_val_folder_of_one_image_a_class_is_halved_across_the_classes_and_one_of_a_single_image_is_not(tmp_path):
    """Dealt class by class from the first half each time, one image a class left the second half
    empty and the default failed on a tensor shape; the dealing now carries on across classes."""
    write_folder(tmp_path / "d" / "train", per_class=6)
    write_folder(tmp_path / "d" / "val", per_class=1, seed=5)
    plan = tl.advise(str(tmp_path / "d"), resolution=32, epochs=1, cache_dir=str(tmp_path / "cache"))
    assert plan.crossfit["folds"] == "val/ halves" and plan.crossfit["images"] == len(COLOURS)
    labelled = split_dataset(load_dataset(str(tmp_path / "d"))).val
    single = fold_plan(labelled.labels, seed=0, given=np.array([0]))
    assert crossfit.fold_obstacle(labelled, single) == "your val/ folder holds 1 image, too few to halve"


def test_a_time_budget_that_is_not_a_duration_is_one_line(tmp_path):
    assert_one_line_error(run_here("train", str(tmp_path), "--time-budget", "soon", cache=tmp_path),
                          "--time-budget must be a duration such as 90s, 10m or 1h, got soon")


def test_a_fine_tuning_candidate_clearly_behind_on_the_first_fold_runs_no_more_folds_a_frozen_one_stays():
    labels = np.arange(60) % 3

    def record(right: int) -> dict:
        logits = np.zeros((60, 3))
        logits[np.arange(60), np.where(np.arange(60) < right, labels, (labels + 1) % 3)] = 1.0
        return {"logits": logits, "labels": labels}

    first = {"multicut": record(55), "head": record(20), "finetune": record(50), "finetune-adapted-bn": record(25)}
    chosen = [Candidate("head", "head"), Candidate("multicut", "multicut"), Candidate("finetune", "finetune", freeze_bn=True),
              Candidate("finetune-adapted-bn", "finetune", freeze_bn=False)]  # fmt: skip
    assert crossfit.raced_out(first, chosen) == ["finetune-adapted-bn"]


def test_a_validation_folder_the_data_brought_is_where_the_check_scores_and_validates(tmp_path):
    """A val/ folder is the user's word for what the model will meet (another style, another site):
    the final run selects its model there, so the check scores the candidates there too, each half
    by runs trained on the whole training split and validated on the other half - not pooled with
    the training images, and not validated on training-style images the final run never uses."""
    write_folder(tmp_path / "d" / "train", per_class=6)
    write_folder(tmp_path / "d" / "val", per_class=3, seed=5)
    labelled, folds = crossfit.labelled_folds(split_dataset(load_dataset(str(tmp_path / "d"))), seed=0)
    first, second = folds
    assert sorted([*first.scored.tolist(), *second.scored.tolist()]) == list(range(18, 27))
    assert first.validates.tolist() == second.scored.tolist() and second.validates.tolist() == first.scored.tolist()
    assert all("/val/" in labelled.describe(i) for i in first.scored)
    run = crossfit.fold_splits(labelled, first, tl.TrainConfig(data="x"))
    assert len(run.train) == 18 and [run.val.describe(i) for i in range(len(run.val))] == [
        labelled.describe(i) for i in second.scored]
    assert run.val_given  # the user's held-out images, in the check as in the final run: multicut does not fit them
    drawn, three = crossfit.labelled_folds(split_dataset(load_dataset(str(tmp_path / "d" / "train"))), seed=0)
    assert len(three) == FOLDS and sorted(np.concatenate([f.scored for f in three]).tolist()) == list(range(len(drawn)))


def test_a_candidates_folds_are_scored_again_when_its_strategy_gets_a_new_recipe(tmp_path, monkeypatch):
    """A fold's saved scores are reused only for the same images, settings and training recipe: a
    strategy whose computation changed (its ``recipe`` raised) is not judged by its old scores."""
    write_folder(tmp_path / "d", per_class=6)
    labelled, folds = crossfit.labelled_folds(split_dataset(load_dataset(str(tmp_path / "d"))), seed=0)
    config = TrainConfig(data="x", strategy="multicut")
    before = crossfit._key(labelled, folds[0], config, None)
    assert crossfit._key(labelled, folds[0], config, None) == before
    newer = dataclasses.replace(STRATEGIES["multicut"], recipe=STRATEGIES["multicut"].recipe + 1)
    monkeypatch.setitem(STRATEGIES, "multicut", newer)
    assert crossfit._key(labelled, folds[0], config, None) != before


def _logits(labels: np.ndarray, right: int) -> torch.Tensor:
    """Logits right on the first ``right`` images, wrong on the rest."""
    predicted = np.where(np.arange(len(labels)) < right, labels, (labels + 1) % 3)
    return torch.nn.functional.one_hot(torch.from_numpy(predicted), 3).float()


def test_in_the_final_runs_split_a_later_fine_tuning_candidate_clearly_behind_the_first_at_the_race_epoch_stops():
    labels = np.arange(60) % 3
    trajectory = []
    first = crossfit.race(trajectory)(labels)
    for epoch, right in enumerate((30, 50, 55), start=1):
        first({"epoch": epoch}, _logits(labels, right))
    assert [t.sum() for t in trajectory] == [30, 50, 55]  # the first records each epoch
    level = crossfit.race(trajectory)(labels)
    for epoch in (1, 2, 3):
        level({"epoch": epoch}, _logits(labels, 50 if epoch == 2 else 20))  # level at the race epoch: runs on
    assert len(trajectory) == 3  # a later one records nothing
    behind = crossfit.race(trajectory)(labels)
    behind({"epoch": 1}, _logits(labels, 5))  # behind before the race epoch: not judged yet
    with pytest.raises(crossfit.RacedOut, match="at epoch 2"):
        behind({"epoch": crossfit.RACE_EPOCH}, _logits(labels, 35))


def test_a_run_the_check_kept_is_resumed_not_trained_again_and_one_of_other_settings_is_trained_afresh(
        folder, tmp_path, monkeypatch, caplog):  # fmt: skip
    from transferlab.trainer import loops, train

    root, data = folder
    config = TrainConfig(data=str(data), strategy="finetune", resolution=32, epochs=1,
                         cache_dir=str(root / "cache"), out=str(tmp_path / "kept"))  # fmt: skip
    prepared = prepare(config).without_test()
    _, _, kept = train.fit_stages(prepared, config, tmp_path / "kept")
    epochs = []
    real = loops._train_epoch
    monkeypatch.setattr(loops, "_train_epoch", lambda *a: epochs.append(a[2]) or real(*a))
    _, _, resumed = train.fit_or_resume(prepared, config, tmp_path / "final", str(tmp_path / "kept"))
    assert epochs == [] and torch.equal(resumed["network"].logits["val"], kept["network"].logits["val"])
    longer = dataclasses.replace(config, epochs=2)
    with caplog.at_level("WARNING"):
        train.fit_or_resume(prepared, longer, tmp_path / "final", str(tmp_path / "kept"))
    assert epochs == [0, 1] and "training it afresh" in caplog.text


def test_above_the_fold_limit_the_check_is_the_final_run_and_its_fine_tuning_is_not_trained_twice(
        folder, tmp_path, monkeypatch):  # fmt: skip
    """The holdout is the run's own validation split: each candidate trains once as the final run
    would, and the chosen ones' runs are resumed by the final training, which trains no more epochs;
    without a time budget no pilot epoch runs (the check decides alone), and the forecast says so."""
    from transferlab.trainer import loops

    _, data = folder
    monkeypatch.setattr(crossfit, "FOLD_LIMIT", 5)  # 9 labelled images per class: above it
    epochs = []
    real = loops._train_epoch
    monkeypatch.setattr(loops, "_train_epoch", lambda *a: epochs.append(a[2]) or real(*a))
    result = tl.train(str(data), resolution=32, epochs=1, cache_dir=str(tmp_path / "cache"),
                      out=str(tmp_path / "run"))  # fmt: skip
    evidence = result.plan.crossfit
    assert evidence["folds"] == "holdout" and evidence["images"] == 3  # the validation split: one image per class
    assert "your validation split" in result.plan.explanation
    body = [c.name for c in candidates(result.plan.evidence) if STRATEGIES[c.strategy].trains_body]
    assert len(epochs) == len(body)  # one each in the check; none in a pilot or in the final training
    assert result.plan.pilot == {} and result.plan.signals["pilot_gain"] is None
    assert "no fine-tuning pilot ran" in result.plan.explanation and evidence["estimate_seconds"] is None
    trained = [name for name, row in evidence["candidates"].items() if row["weight"]]
    assert set(evidence["checkpoints"]) == {name for name in trained if name in body}
    # scored on the validation split, a network keeps it out (one image a class: it would train on it otherwise)
    members = result.plan.members or ({"candidate": trained[0], "holdout": result.plan.holdout},)
    assert all(bool(m["holdout"]) == (m["candidate"] in body) for m in members)
    assert tl.load(tmp_path / "run" / "model").predict([str(next((data / "red").iterdir()))], top_k=1)


def test_the_plan_says_how_imbalanced_classes_are_weighed():
    from transferlab.advisor.advise import imbalance_text

    assert imbalance_text(np.array([10, 9, 8]), None) is None  # within 1.5x: nothing to say
    said = imbalance_text(np.array([40, 12, 4]), None)
    assert said.startswith("Classes of 4 to 40 training images: head, truncate, multicut and ensemble") and "none none" in said
    assert imbalance_text(np.array([40, 4]), "none") == "Classes of 4 to 40 training images: --class-weight none for every stage."
