"""The head trained by AdamW on frozen features: what ``head`` and ``truncate`` ran until 2026-12-06
and LP-FT's linear probe until 2026-12-06 (40 epochs at 1e-3, raised to 500 steps on small data,
the best validation-loss epoch kept, or the last under 10 validation images a class). The product
computes its heads in closed form since (``trainer.loops.fit_ridge_head``); the benchmarks that
measured the one against the other (``head_recipe.py``, ``multicut_head.py``, ``speed.py``) train
this one beside it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import trange

from transferlab.config import TrainConfig
from transferlab.heads import LinearHead
from transferlab.metrics import evaluate_logits
from transferlab.strategies import PROBE_LR
from transferlab.trainer.loops import CHOOSING_IMAGES, EpochCallback, epoch_order, loss_weights, smallest_class

log = logging.getLogger(__name__)


@contextlib.contextmanager
def one_thread():
    """PyTorch on one thread while the block runs (its thread count restored after): a head's
    hundreds of tiny steps split across threads buy nothing and, with another process on the other
    core, cost a wait at every step (a head's fit 0.3 s on one thread, 6-7 s on two: docs/speed.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def config_default(name: str):
    """``TrainConfig``'s default of ``name``."""
    return TrainConfig.__dataclass_fields__[name].default


@dataclass(frozen=True)
class HeadTraining:
    """Optimizer settings for training a head on features (built from a ``TrainConfig`` by
    :func:`trained_head_settings`; the defaults here are TrainConfig's).

    ``min_steps``: on small data ``epochs`` passes are few optimizer steps (10 images per class,
    batches of 32: 4 a pass), too few for the head to converge; the epochs are then raised to
    take at least this many steps.
    """

    epochs: int
    lr: float
    batch_size: int = config_default("batch_size")
    weight_decay: float = config_default("weight_decay")
    seed: int = config_default("seed")
    min_steps: int = 500
    label: str = "training"  # what its log lines and progress bar are called (the stage's name)
    class_weight: str = config_default("class_weight")  # "balanced": each class's loss weighted by n / (classes x
    # its count); "balanced-sampling": each epoch draws its images with replacement, every class equally likely

    def epochs_for(self, samples: int) -> int:
        return max(self.epochs, math.ceil(self.min_steps / math.ceil(samples / self.batch_size)))


def _standardized(train_x: np.ndarray, val_x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training and validation features less the training mean, over one scale for all features
    (copies: the inputs may be read-only maps); and that mean and scale."""
    xs = torch.tensor(train_x, dtype=torch.float32)
    mean = xs.mean(0)
    xs -= mean  # in place: the features of a whole training set can be hundreds of MB
    scale = xs.square().mean().sqrt().clamp_min(1e-12)
    xs /= scale
    return xs, torch.tensor(val_x, dtype=torch.float32).sub_(mean).div_(scale), mean, scale


def _head_pass(head: LinearHead, xs: torch.Tensor, ys: torch.Tensor, batches, optimizer, weight) -> tuple[float, int]:
    """One epoch of the head over ``batches`` of positions: the summed loss and how many were right."""
    head.train()
    total_loss, correct = 0.0, 0
    for batch in batches:
        logits = head(xs[batch])
        loss = nn.functional.cross_entropy(logits, ys[batch], weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(batch)
        correct += (logits.argmax(1) == ys[batch]).sum().item()
    return total_loss, correct


@one_thread()  # hundreds of tiny steps: a second thread only waits on each
def fit_head(
    head: LinearHead,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    settings: HeadTraining,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Train ``head`` with AdamW on standardized feature vectors; keep the weights of the best
    validation loss - or, where the smallest validation class has fewer than
    :data:`CHOOSING_IMAGES` images, of the last epoch (the whole schedule: one or two validation
    images a class choose an epoch by chance) - with the standardization folded in so that the
    head takes raw features.

    Without the standardization a head underfits features of small scale: measured on a
    ``cnn-small`` body over scikit-learn's digits, train accuracy 0.72 after 40 epochs.
    Returns the history: one dict per epoch with train/val loss and accuracy, the learning rate
    and ``kept`` (1 on the epoch whose weights the head kept, :func:`kept_epoch`); ``on_epoch``
    sees each row with the epoch's validation logits.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    xs, vx, mean, scale = _standardized(train_x, val_x)
    ys, vy = torch.as_tensor(train_y), torch.as_tensor(val_y)
    epochs = settings.epochs_for(len(xs))
    if epochs > settings.epochs:
        log.info("%s: %d epochs on %d samples are too few steps; training %d epochs (%d steps at least)",
                 settings.label, settings.epochs, len(xs), epochs, settings.min_steps)  # fmt: skip
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    weight = loss_weights(ys, head.fc.out_features, settings.class_weight)
    chooses = smallest_class(vy) >= CHOOSING_IMAGES
    history, best_loss, best_state, kept = [], float("inf"), None, epochs - 1
    for epoch in (bar := trange(epochs, desc=settings.label, unit="epoch", leave=False)):
        lr = scheduler.get_last_lr()[0]
        batches = epoch_order(ys, settings.class_weight, generator).split(settings.batch_size)
        total_loss, correct = _head_pass(head, xs, ys, batches, optimizer, weight)
        scheduler.step()
        head.eval()
        with torch.no_grad():
            val_logits = head(vx)
        val_loss, val_acc = evaluate_logits(val_logits, vy, weight)
        row = {"epoch": epoch + 1, "train_loss": total_loss / len(xs), "train_accuracy": correct / len(xs),
               "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr}  # fmt: skip
        history.append(row)
        if on_epoch is not None:
            on_epoch(row, val_logits)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{val_acc:.3f}")
        if val_loss < best_loss and chooses:
            best_loss, best_state, kept = val_loss, copy.deepcopy(head.state_dict()), epoch
    if chooses:
        head.load_state_dict(best_state)
    head.absorb_standardization(mean, scale)
    return [{**row, "kept": int(epoch == kept)} for epoch, row in enumerate(history)]


def trained_head_settings(config: TrainConfig, epochs: int = 40) -> HeadTraining:
    """The AdamW head's settings as the product built them: ``epochs`` at :data:`PROBE_LR`."""
    return HeadTraining(epochs=epochs, lr=PROBE_LR, batch_size=config.batch_size, weight_decay=config.weight_decay,
                        seed=config.seed, class_weight=config.resolved_class_weight)  # fmt: skip
