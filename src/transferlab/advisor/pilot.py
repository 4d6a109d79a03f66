"""The fine-tuning pilot: the production recipe (LP-FT) for one short epoch, scored on validation.

The frozen options are measured on the features; what fine-tuning adds is not visible there. The
pilot trains the linear probe, then the whole network for one epoch (warm-up and cosine squeezed
into it), and reports the validation accuracy before and after: the first step of fine-tuning's
trajectory, at about an eighth of a fine-tuning run's cost. It never sees the test split.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import INTERPOLATE_NONE, TrainConfig, for_strategy
from ..prepare import PreparedRun
from ..strategies import FINETUNING, STRATEGIES
from ..trainer.loops import kept_epoch
from ..trainer.train import fit_stages

log = logging.getLogger(__name__)

PILOT_EPOCHS = 1
PILOT_WARMUP_EPOCHS = 0.25


@dataclass(frozen=True)
class Pilot:
    probe_val_accuracy: float  # the linear probe (LP-FT's first stage) on the validation split
    tuned_val_accuracy: float  # after the pilot epoch of whole-network fine-tuning
    val_images: int
    seconds: float  # the whole pilot: building the model, features, the probe, the epoch
    probe_seconds: float = 0.0  # the probe's stage: its features and its head
    features_seconds: float = 0.0  # of that, the frozen pass over the labelled images (the folds gather its rows)
    epoch_seconds: float = 0.0  # the one epoch of whole-network training and its validation pass

    @property
    def gain(self) -> float:
        """What the pilot epoch of fine-tuning added to the probe's validation accuracy."""
        return self.tuned_val_accuracy - self.probe_val_accuracy


def pilot_finetune(prepared: PreparedRun, config: TrainConfig) -> Pilot:
    """One pilot epoch of ``finetune`` (frozen BatchNorm statistics, as the plan would train it) on
    ``prepared``'s training split, scored on its validation split (held out: never trained on)."""
    started = time.perf_counter()
    pilot = for_strategy(config, FINETUNING, cut=None, epochs=PILOT_EPOCHS, warmup_epochs=PILOT_WARMUP_EPOCHS,
                         freeze_bn=True, resume=False, tensorboard=None, interpolate=INTERPOLATE_NONE,
                         holdout=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="transferlab-pilot-") as scratch_dir:
        _, _, stages = fit_stages(prepared.without_test(), pilot, Path(scratch_dir))
    probe, network = (stages[name] for name in STRATEGIES[FINETUNING].stages)  # the linear probe, then the network
    result = Pilot(kept_epoch(probe.history)["val_accuracy"], network.history[-1]["val_accuracy"],
                   len(network.labels["val"]), time.perf_counter() - started,
                   probe_seconds=sum(probe.seconds.values()), epoch_seconds=network.seconds["network_seconds"],
                   features_seconds=probe.seconds["features_seconds"])  # fmt: skip
    log.info("pilot: validation accuracy %.4f after the probe, %.4f after one epoch of fine-tuning (%.1f s)",
             result.probe_val_accuracy, result.tuned_val_accuracy, result.seconds)  # fmt: skip
    return result
