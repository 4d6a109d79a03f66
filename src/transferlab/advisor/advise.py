"""The advisor: measure the prepared run's data against its backbone, pilot fine-tuning, then plan.

The plan says which of the four strategies to train and at which cut, with each option's forecast
accuracy and interval and the evidence behind them (see :mod:`transferlab.strategy` for the
plan, :mod:`transferlab.forecast` for the forecast, :mod:`.measure` and :mod:`.pilot` for the
measurements). The forecaster is fitted by ``transferlab study``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass

import numpy as np

from ..config import TrainConfig, with_plan
from ..forecast import Forecaster
from ..plan import CutEvidence, Plan, make_plan
from ..prepare import PreparedRun
from ..strategies import STRATEGIES, applying_to, class_weighted
from .decide import check_on_own_images, pilot_needed
from .pilot import pilot_finetune
from .rank import rank_sources, score_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurements:
    """What the advisor measured on a prepared run: everything the plan is made from."""

    images_per_class: int  # the training split's median per class
    class_balance: float  # smallest class / largest class
    backbone: str
    resolution: int
    evidence: tuple[CutEvidence, ...]
    learning_curve: tuple[tuple[int, float], ...]
    pilot: dict  # :class:`.pilot.Pilot` as a dict, with its gain
    candidates: tuple[dict, ...]  # with several candidate backbones: their ranking
    probe_all: float | None = None  # the probe on every cut at once (None: measured by an older release)
    fit_check: dict = dataclasses.field(default_factory=dict)  # crop or squash, decided on the sample (:mod:`.fit`)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: dict) -> Measurements:
        return Measurements(**{**data, "evidence": tuple(CutEvidence(**e) for e in data["evidence"]),
                               "learning_curve": tuple(tuple(p) for p in data["learning_curve"]),
                               "candidates": tuple(data["candidates"])})  # fmt: skip

    def plan(self, forecaster: Forecaster | None = None) -> Plan:
        plan = make_plan(self.images_per_class, self.class_balance, self.resolution, self.backbone, self.evidence,
                         self.learning_curve, self.pilot, self.candidates, forecaster, self.probe_all)  # fmt: skip
        if not self.fit_check:
            return plan
        compared = self.fit_check.get("squash") is not None  # the images were not square: both fits measured
        return dataclasses.replace(plan, fit=self.fit_check["fit"], fit_check=self.fit_check,
                                   explanation=plan.explanation + (f" Fit: {self.fit_check['reason']}." if compared else ""))


def measure_prepared(prepared: PreparedRun, config: TrainConfig, pilot: bool = True) -> Measurements:
    """Measure the labelled images of ``prepared`` (at most ``config.measure_per_class`` per class)
    against its backbone - or, with several ``config.backbones``, rank them and take the
    best - and run the fine-tuning pilot (unless ``pilot`` is False: then ``pilot`` is empty). The
    data counts as the size the training will use: the training split's median images per class."""
    counts = prepared.splits.train.counts()
    candidates = tuple(dict.fromkeys(config.backbones)) or (config.backbone,)
    ranked = ()
    if len(candidates) > 1:
        ranking = rank_sources(prepared, config, candidates)
        candidates, ranked = (ranking.best.backbone,), tuple(ranking.to_json())
    chosen_run = prepared.for_backbone(candidates[0])
    chosen = score_source(chosen_run, config, candidates[0])  # the ranked features are cached
    fit = chosen.fit["fit"]  # measured with the twin: the fit check (or --fit) always ran
    piloted = {}
    if pilot:
        found = pilot_finetune(chosen_run.with_fit(fit), dataclasses.replace(config, backbone=chosen.backbone,
                                                                             resolution=chosen.resolution, fit=fit))
        piloted = {**dataclasses.asdict(found), "gain": found.gain}
    return Measurements(int(np.median(counts)), float(counts.min() / counts.max()), chosen.backbone, chosen.resolution,
                        chosen.evidence, chosen.learning_curve, piloted, ranked, chosen.probe_all, chosen.fit)  # fmt: skip


def unlabeled_text(strategy: str, images: int) -> str:
    """What the planned ``strategy`` will do with the run's ``images`` unlabelled images."""
    if "unlabeled" in STRATEGIES[strategy].options:
        return (f"{images} unlabelled images: '{strategy}' learns from them too, kept only if the validation images "
                "say they help (docs/unlabeled.md).")  # fmt: skip
    return (f"{images} unlabelled images: '{strategy}' does not learn from them ({', '.join(applying_to('unlabeled'))} "
            "do); they are left out.")  # fmt: skip


IMBALANCED = 1.5  # the largest class's images over the smallest's from which the plan says how classes are weighed


def imbalance_text(counts: np.ndarray, class_weight: str | None) -> str | None:
    """What the plan says of classes whose training images differ (``counts``, per class) by
    :data:`IMBALANCED` or more: how each is weighed, under the run's ``--class-weight`` (None: the table's)."""
    if counts.max() < IMBALANCED * counts.min():
        return None
    sizes = f"Classes of {counts.min()} to {counts.max()} training images:"
    if class_weight is not None:
        return f"{sizes} --class-weight {class_weight} for every stage."
    *others, last = class_weighted()
    weighted = f"{', '.join(others)} and {last}" if others else last
    return (f"{sizes} {weighted} (so the combination of candidates) weigh each class alike, the table's "
            "default as measured on imbalanced folders (out-of-fold accuracy is then balanced accuracy); --class-weight "
            "balanced weighs every stage so, none none.")


def _as_json(values: dict) -> dict:
    """``values`` as ``plan.json`` reads them back (tuples as lists)."""
    return json.loads(json.dumps(values))


def advise_prepared(prepared: PreparedRun, config: TrainConfig, forecaster: Forecaster | None = None) -> Plan:
    """The plan for ``prepared``: its measurements (:func:`measure_prepared`), forecast by
    ``forecaster`` (the shipped one unless given)."""
    measured = measure_prepared(prepared, config, pilot=pilot_needed(prepared.splits, config))
    plan = check_on_own_images(prepared, config, measured.plan(forecaster))
    if prepared.splits.unlabeled is not None:
        plan = dataclasses.replace(plan, explanation=plan.explanation + " " + unlabeled_text(plan.strategy,
                                                                                           len(prepared.splits.unlabeled)))
    weighing = imbalance_text(prepared.splits.train.counts(), config.class_weight)
    if weighing is not None:
        plan = dataclasses.replace(plan, explanation=f"{plan.explanation} {weighing}")
    plan = dataclasses.replace(plan, config=_as_json(dataclasses.asdict(config)),
                               resolved_config=_as_json(with_plan(config, plan).resolved(plan.cut, plan.resolution)))
    log.info("advisor: %s at cut %s of %s (forecast %s)", plan.strategy, plan.cut, plan.backbone,
             ", ".join(f"{f['option']} {f['accuracy']:.3f}" for f in plan.forecasts))  # fmt: skip
    return plan
