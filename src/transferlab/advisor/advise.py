"""The advisor: measure the prepared run's training data against its backbone, then plan.

The plan says which of the four strategies to train and at which cut, with the evidence behind
it (see :mod:`transferlab.strategy` for the decision, :mod:`.measure` for the measurements).
The thresholds are calibrated by ``transferlab study``.
"""

from __future__ import annotations

import logging

import numpy as np

from ..backbones import Backbone
from ..config import TrainConfig
from ..data import ImageSet, per_class_subset
from ..prepare import PreparedRun
from ..strategy import Plan, Thresholds, decide, make_plan
from .measure import measure

log = logging.getLogger(__name__)


def measurement_resolution(backbone: Backbone, images: ImageSet, override: int | None) -> int:
    """The backbone's resolution, or 4x the images' own size when they are much smaller (min 64)."""
    if override:
        return override
    side = min(images.open(0).size)
    native = backbone.preprocessing.resolution
    return max(64, min(native, 4 * side)) if side * 2 < native else native


def advise_prepared(prepared: PreparedRun, config: TrainConfig, thresholds: Thresholds = Thresholds()) -> Plan:
    """Measure the training split of ``prepared`` (at most ``config.measure_per_class`` images per
    class) against its backbone and return the plan. The data counts as the size the training
    will use: the training split's median images per class."""
    train = prepared.splits.train
    counts = train.counts()
    sample = per_class_subset(train, config.measure_per_class, config.seed)
    resolution = measurement_resolution(prepared.backbone, sample, config.resolution)
    evidence = measure(prepared.backbone, prepared.weights_digest, sample, resolution, prepared.cache, config.seed)
    per_class = int(np.median(counts))
    decision = decide(per_class, evidence, thresholds)
    log.info("advisor: %s at cut %s (transfer gain %+.3f)", decision.strategy, decision.cut, decision.transfer_gain)
    return make_plan(decision, evidence, per_class, float(counts.min() / counts.max()), resolution, config.backbone,
                     thresholds)  # fmt: skip
