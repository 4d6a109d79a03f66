"""Training loops. ``fit_head``: a new head on cached features of a frozen body."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import trange

from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadTraining:
    """Optimizer settings for training a head on features."""

    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be at least 1, got {self.epochs} and {self.batch_size}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}.")


@torch.no_grad()
def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of logits against labels."""
    loss = nn.functional.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()


def fit_head(
    head: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    settings: HeadTraining = HeadTraining(),
) -> list[dict[str, float]]:
    """Train ``head`` with AdamW on feature vectors; keep the weights of the best validation loss.

    Returns the history: one dict per epoch with train/val loss and accuracy.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    xs, ys = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(train_y)
    vx, vy = torch.as_tensor(val_x, dtype=torch.float32), torch.as_tensor(val_y)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    history, best_loss, best_state = [], float("inf"), None
    for epoch in (bar := trange(settings.epochs, desc="head", unit="epoch", leave=False)):
        head.train()
        total_loss, correct = 0.0, 0
        for batch in torch.randperm(len(xs), generator=generator).split(settings.batch_size):
            logits = head(xs[batch])
            loss = nn.functional.cross_entropy(logits, ys[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += (logits.argmax(1) == ys[batch]).sum().item()
        scheduler.step()
        head.eval()
        with torch.no_grad():
            val_loss, val_acc = evaluate_logits(head(vx), vy)
        row = {"epoch": epoch + 1, "train_loss": total_loss / len(xs), "train_accuracy": correct / len(xs),
               "val_loss": val_loss, "val_accuracy": val_acc}  # fmt: skip
        history.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{val_acc:.3f}")
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    best = min(history, key=lambda r: r["val_loss"])
    log.info("head: best epoch %d of %d, val accuracy %.4f", best["epoch"], settings.epochs, best["val_accuracy"])
    return history
