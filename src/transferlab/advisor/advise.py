"""The advisor: measure the prepared run's training data against its backbone, then plan.

The plan says which of the four strategies to train and at which cut, with the evidence behind
it (see :mod:`transferlab.strategy` for the decision, :mod:`.measure` for the measurements).
The thresholds are calibrated by ``transferlab study``.
"""

from __future__ import annotations

import logging

import numpy as np

from ..config import TrainConfig
from ..prepare import PreparedRun
from ..strategy import Plan, Thresholds, decide, make_plan
from .rank import rank_sources, score_source

log = logging.getLogger(__name__)


def advise_prepared(prepared: PreparedRun, config: TrainConfig, thresholds: Thresholds = Thresholds()) -> Plan:
    """Measure the labelled images of ``prepared`` (at most ``config.measure_per_class`` per class)
    against its backbone - or, with several ``config.backbones``, rank them and take the
    best - and return the plan. The data counts as the size the training will use: the training
    split's median images per class."""
    counts = prepared.splits.train.counts()
    candidates = tuple(dict.fromkeys(config.backbones)) or (config.backbone,)
    ranked = ()
    if len(candidates) > 1:
        ranking = rank_sources(prepared, config, candidates)
        candidates, ranked = (ranking.best.backbone,), tuple(ranking.to_json())
    chosen = score_source(prepared.for_backbone(candidates[0]), config, candidates[0])  # the ranked features are cached
    per_class = int(np.median(counts))
    decision = decide(per_class, chosen.evidence, thresholds)
    log.info("advisor: %s at cut %s of %s (transfer gain %+.3f)", decision.strategy, decision.cut, chosen.backbone,
             decision.transfer_gain)  # fmt: skip
    return make_plan(decision, chosen.evidence, per_class, float(counts.min() / counts.max()), chosen.resolution,
                     chosen.backbone, thresholds, ranked, chosen.learning_curve)  # fmt: skip
