"""What a training stage gets and leaves behind: the run's context (its folder, its TensorBoard
log, the name it runs under) and the :class:`Stage` it returns; :data:`StageFunction` is the
signature every registered stage has (:mod:`.stages`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..features import Features
from ..prepare import PreparedRun
from ..surgery import TransferModel
from .loops import EpochCallback
from .tensorboard import TensorBoardLog


@dataclass
class Stage:
    """What one training stage (the head on features, or the whole network on pixels) leaves behind."""

    inputs: dict[str, Features]  # per split: what went in (features or decoded pixels)
    labels: dict[str, np.ndarray]  # per split: labels of the readable images
    logits: dict[str, torch.Tensor]  # per split: the trained model's logits on the readable images
    history: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)
    cache_hits: list[bool] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)  # the batch plan of whole-network training
    engine: dict[str, str] = field(default_factory=dict)  # the frozen pass's engine and why it was chosen
    details: dict[str, dict] = field(default_factory=dict)  # more to report, by name (``interpolation``)


@dataclass(frozen=True)
class RunContext:
    """What a stage may write to: the run's folder (checkpoints) and its TensorBoard log; the name
    the stage runs under (its logs and progress bars say it); and who else watches the whole
    network's epochs (the out-of-fold search's race, which may stop a run by raising)."""

    out: Path
    board: TensorBoardLog | None = None
    stage: str = "training"
    watch: Callable[[np.ndarray], EpochCallback] | None = None  # given the validation labels, a callback

    def epoch_log(self, tag: str, val_labels: np.ndarray) -> EpochCallback | None:
        return self.board.callback(tag, val_labels) if self.board is not None else None

    def network_epochs(self, tag: str, val_labels: np.ndarray) -> EpochCallback | None:
        """What sees each epoch of whole-network training: the TensorBoard log, then the watcher."""
        watcher = self.watch(val_labels) if self.watch is not None else None
        seen = [c for c in (self.epoch_log(tag, val_labels), watcher) if c is not None]
        if not seen:
            return None

        def each(row: dict, val_logits: torch.Tensor) -> None:
            for callback in seen:
                callback(row, val_logits)

        return each


StageFunction = Callable[[TransferModel, PreparedRun, str, TrainConfig, RunContext], Stage]
