"""The default decided on the user's own images: the forecast orders the candidates and is the
fallback; their out-of-fold scores decide (:mod:`.crossfit`), and the combination is fitted on
them (:mod:`.combine`).

The plan that comes out trains either one candidate (a plain run of its strategy) or several
(the table's ensemble, its members weighted and tempered as the out-of-fold scores said). Before
the search the plan's cost estimate is logged; with ``--time-budget`` below it, or ``0``, the
forecast decides alone and the plan says why.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from ..config import TrainConfig, duration_seconds
from ..data import Splits
from ..plan import Plan
from ..prepare import PreparedRun
from ..strategies import FINAL_CUT, STRATEGIES, ensemble_entry
from ..trainer.loops import balanced_weights
from .combine import Combination, combine
from .crossfit import Candidate, Fold, FoldScores, candidates, cross_fit, fold_cut, fold_obstacle, labelled_folds

log = logging.getLogger(__name__)

def pilot_needed(splits: Splits, config: TrainConfig) -> bool:
    """Whether the fine-tuning pilot can change what is trained: where the forecast may decide (a
    ``--time-budget`` the check may not fit in) or the check runs folds, whose cost it estimates first.
    Above the fold limit without a budget the check is the final run itself and decides alone."""
    return config.time_budget is not None or not labelled_folds(splits, config.seed)[1][0].final_run


def cost_estimate(plan: Plan, chosen: list[Candidate], folds: list[Fold], config: TrainConfig) -> float | None:
    """Seconds the search should take, about, from the pilot's parts (None: no pilot ran): a fold of
    a candidate that trains the body costs the probe's head and as many pilot epochs as it may
    train, scaled by the share of the images it trains on (the rest of the labelled images, or the
    whole training split beside a ``val/`` folder); a frozen candidate, one frozen pass over the
    labelled images (the pilot's, at another cut) and the probe's head per fold. The pilot's
    building of the model, its decoding and its frozen pass are not paid again: the folds gather
    those rows (a plan saved before the pilot timed its parts: its whole time stands for each)."""
    if not plan.pilot:
        return None
    whole = plan.pilot.get("seconds", 0.0)
    probe, epoch = plan.pilot.get("probe_seconds") or whole, plan.pilot.get("epoch_seconds") or whole
    features = plan.pilot.get("features_seconds", 0.0)
    head = probe - features
    shares = [1.0 if fold.validates is not None or len(folds) == 1 else (len(folds) - 1) / len(folds) for fold in folds]
    total = 0.0
    for candidate in chosen:
        entry = STRATEGIES[candidate.strategy]
        epochs = config.epochs or entry.epochs
        if entry.trains_body:
            total += sum(share * (head + epochs * epoch) for share in shares)
        else:
            total += features + head * len(folds)
    return total


def _members(combination: Combination, chosen: list[Candidate], final_run: bool) -> tuple[dict, ...]:
    """The chosen candidates as the plan's members; where the check was the ``final_run``, one that
    trains the body keeps the validation images out, as its kept run did (``holdout``)."""
    by_name = {c.name: c for c in chosen}
    held_out = {name: True if final_run and STRATEGIES[by_name[name].strategy].trains_body else None
                for name in combination.members}  # fmt: skip
    return tuple({"candidate": name, "strategy": by_name[name].strategy, "cut": fold_cut(by_name[name]),
                  "freeze_bn": by_name[name].freeze_bn, "augment": by_name[name].augment, "holdout": held_out[name],
                  "backbone": by_name[name].backbone, "weight": combination.weights[name],
                  "temperature": combination.temperatures[name]} for name in combination.members)  # fmt: skip


def _evidence(plan: Plan, combination: Combination, chosen: list[Candidate], folds: list[Fold], estimate: float,
              seconds: float, scores: dict[str, FoldScores]) -> dict:  # fmt: skip
    """The plan's record of the check; ``seconds`` it took now, its folds' training when they ran (a
    resumed check reuses folds); each candidate beside its strategy's forecast; where the final
    run's split was the check, the runs of the chosen members the final training resumes."""
    forecast = {f["option"]: f["accuracy"] for f in plan.forecasts}
    strategy_of = {c.name: c.strategy for c in chosen}
    left_out = [c.name for c in chosen if c.name not in combination.weights]
    rows = {name: {**score, "forecast": forecast.get(strategy_of.get(name)),
                   "weight": combination.weights.get(name), "temperature": combination.temperatures.get(name)}
            for name, score in combination.scores.items()}  # fmt: skip
    how = "holdout" if folds[0].final_run else ("val/ halves" if folds[0].validates is not None else len(folds))
    kept = {name: scores[name].checkpoints for name in combination.members if scores[name].checkpoints}
    return {"folds": how, "images": int(sum(len(f.scored) for f in folds)),
            "estimate_seconds": estimate, "seconds": seconds, "fold_seconds": sum(s.seconds for s in scores.values()),
            "reason": combination.reason, "candidates": rows, "left_out": left_out, "checkpoints": kept,
            "augmented": [c.name for c in chosen if c.augment]}  # fmt: skip


def _words(combination: Combination, evidence: dict) -> str:
    scored = ", ".join(f"{name} {row['accuracy']:.3f} [{row['interval'][0]:.3f}, {row['interval'][1]:.3f}]"
                       for name, row in evidence["candidates"].items())  # fmt: skip
    how = {"holdout": "your validation split, the chosen runs kept as the final ones",
           "val/ halves": "your val/ images, each half scored by runs validated on the other"}.get(
        evidence["folds"], f"{evidence['folds']} folds")  # fmt: skip
    weights = ", ".join(f"{name} {w:.2f}" for name, w in combination.weights.items() if w > 0)
    left_out = evidence["left_out"]
    raced = f" Left out, clearly behind: {', '.join(left_out)}." if left_out else ""
    augmented = evidence.get("augmented")
    crops = (f" {', '.join(augmented)} trained on augmented images (random crops and flips), as the ensemble's "
             "fine-tuned member would." if augmented else "")  # fmt: skip
    return (f"Checked on your own {evidence['images']} labelled images ({how}, {evidence['seconds']:.0f} s): "
            f"out-of-fold accuracy {scored}.{raced}{crops} Chosen: {weights} ({combination.reason}).")


def decided_plan(plan: Plan, combination: Combination, chosen: list[Candidate], evidence: dict) -> Plan:
    """``plan`` carrying out ``combination``: one candidate's strategy, or the ensemble of several."""
    members = _members(combination, chosen, evidence["folds"] == "holdout")
    explanation = f"{plan.explanation} {_words(combination, evidence)}"
    if len(members) == 1:
        member, entry = members[0], STRATEGIES[members[0]["strategy"]]
        freeze_bn = entry.freeze_bn if member["freeze_bn"] is None else member["freeze_bn"]
        return dataclasses.replace(plan, strategy=entry.name, cut=member["cut"], lr=entry.lr, epochs=entry.epochs,
                                   backbone=member["backbone"] or plan.backbone,
                                   freeze_bn=freeze_bn, augment=bool(member["augment"]), holdout=bool(member["holdout"]),
                                   explanation=explanation, crossfit=evidence, members=())  # fmt: skip
    entry = ensemble_entry()
    return dataclasses.replace(plan, strategy=entry.name, cut=FINAL_CUT,
                               lr=entry.lr, epochs=entry.epochs, freeze_bn=entry.freeze_bn, explanation=explanation,
                               crossfit=evidence, members=members)  # fmt: skip


def forecast_decides(plan: Plan, estimate: float | None, why: str) -> Plan:
    """The forecast's ``plan``, saying why the check did not run."""
    reason = f"Not checked on your images: {why}; the forecast decided."
    log.warning("%s", reason)
    return dataclasses.replace(plan, explanation=f"{plan.explanation} {reason}",
                               crossfit={"estimate_seconds": estimate, "reason": reason})  # fmt: skip


def check_on_own_images(prepared: PreparedRun, config: TrainConfig, plan: Plan) -> Plan:
    """The forecast's ``plan`` checked on the user's labelled images and decided by them, within
    ``--time-budget``; the forecast's plan, saying why, when the budget or the images do not allow it."""
    run = prepared.for_backbone(plan.backbone).with_fit(plan.fit)
    companions = config.resolved_companions(plan.backbone)
    chosen = candidates(plan.evidence, config.members_augment(run.splits.labelled_per_class()), companions)
    labelled, folds = labelled_folds(run.splits, config.seed)
    estimate = cost_estimate(plan, chosen, folds, config)
    obstacle = fold_obstacle(labelled, folds)
    if obstacle is not None:
        return forecast_decides(plan, estimate, obstacle)
    budget = duration_seconds(config.time_budget) if config.time_budget is not None else None
    log.info("checking %d candidates on your images (%s)%s", len(chosen),
             f"{len(folds)} folds" if len(folds) > 1 else "the final run's own validation split",
             "" if estimate is None else f": about {estimate:.0f} s estimated"
             + ("" if budget is None else f", budget {budget:.0f} s"))  # fmt: skip
    if budget is not None and estimate is not None and estimate > budget:
        return forecast_decides(plan, estimate, f"the estimate ({estimate:.0f} s) exceeds --time-budget {config.time_budget}")
    started = time.perf_counter()
    base = dataclasses.replace(config, backbone=plan.backbone, resolution=plan.resolution, fit=plan.fit)
    scores = cross_fit(run, base, chosen, config.cache_root / "crossfit" / labelled.fingerprint())
    labels = next(iter(scores.values())).labels
    reference = dict.fromkeys([*ensemble_entry().members, *(c.name for c in chosen if c.backbone is not None)], 1.0)
    class_weights = balanced_weights(torch.from_numpy(labels), len(run.classes), config.class_weight_for(ensemble_entry()))
    combination = combine({name: s.logits for name, s in scores.items()}, labels, reference,
                          None if class_weights is None else class_weights.numpy())  # fmt: skip
    evidence = _evidence(plan, combination, chosen, folds, estimate, time.perf_counter() - started, scores)
    log.info("out of fold: %s; weights %s (%s)", ", ".join(f"{n} {r['accuracy']:.3f}" for n, r in
             evidence["candidates"].items()), combination.weights, combination.reason)  # fmt: skip
    return decided_plan(plan, combination, chosen, evidence)

