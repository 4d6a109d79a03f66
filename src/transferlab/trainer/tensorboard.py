"""TensorBoard logging of a run: per epoch, every number of the history row (losses, accuracies,
learning rate) and the validation confusion matrix as an image, under the stage's name."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..metrics import confusion_matrix
from .loops import EpochCallback

CELL_PIXELS = 8  # each confusion-matrix cell drawn as a square of this many pixels


def confusion_image(counts: np.ndarray) -> np.ndarray:
    """Row-normalized counts as a 1 x H x W image in [0, 1] (recall on the diagonal), cells enlarged."""
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return np.kron(rates, np.ones((CELL_PIXELS, CELL_PIXELS)))[None].astype(np.float32)


class TensorBoardLog:
    """One event file for a run; ``callback(stage, labels)`` gives a training loop's ``on_epoch``."""

    def __init__(self, directory: str, classes: tuple[str, ...]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install 'transferlab[tensorboard]'.") from error
        self.writer = SummaryWriter(directory)
        self.classes = classes
        self.step = 0  # epochs across the stages of the run

    def callback(self, stage: str, val_labels: np.ndarray) -> EpochCallback:
        def log_epoch(row: dict, val_logits: torch.Tensor) -> None:
            self.step += 1
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(f"{stage}/{key}", value, self.step)
            counts = confusion_matrix(val_labels, val_logits.argmax(1).numpy(), len(self.classes))
            self.writer.add_image(f"{stage}/confusion_matrix", confusion_image(counts), self.step)

        return log_epoch

    def close(self) -> None:
        self.writer.close()
