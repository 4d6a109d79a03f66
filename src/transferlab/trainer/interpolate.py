"""Interpolation between the linear probe and the fine-tuned network (WiSE-FT: Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022; the same straight line as model soups).

LP-FT starts fine-tuning from the pretrained body with the probe's head, ``theta_probe``; it ends
at ``theta_tuned``. The weights ``(1 - alpha) theta_probe + alpha theta_tuned`` are one network
of the same shape for every ``alpha`` in [0, 1]: 0 is the probe, 1 the fine-tuned network. Every
floating-point tensor of the state moves along the line, BatchNorm's running statistics too
(with frozen statistics both ends share them, so they stay put); counters keep the tuned end's.
The chosen network is saved as plain weights, like a LoRA merge. A resumable run keeps the choice
beside its checkpoints, keyed by both ends and the validation images, so the finished run resumed
(the default's check kept for its final training) does not score the line again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import INTERPOLATE_AUTO
from ..features import predict_pixels
from ..metrics import evaluate_logits
from .loops import CHOOSING_IMAGES, smallest_class

log = logging.getLogger(__name__)

ALPHAS = tuple(step / 10 for step in range(11))  # the grid ``auto`` chooses on: 0, 0.1, ..., 1
# Below CHOOSING_IMAGES validation images in the smallest class ``auto`` does not choose but takes
# FIXED_ALPHA: at 5 images per class the fixed 0.5 gained +2.4 points over plain LP-FT (worst cell
# +0.5) against +1.7 (worst -2.8) for the choice; from 10 the choice gained more (+1.8 and +1.5
# against +1.4 and +1.1 at 10 and 30 per class; benchmarks/interpolation.py, docs/strategies.md).
FIXED_ALPHA = 0.5
INTERPOLATION_FILE = "interpolation.json"  # in the run's checkpoint folder: the choice and what decided it

State = dict[str, torch.Tensor]


def snapshot(model: nn.Module) -> State:
    """A copy of ``model``'s state, on the CPU."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def blended(start: State, end: State, alpha: float) -> State:
    """The state at ``alpha`` on the line from ``start`` (0) to ``end`` (1)."""
    return {name: torch.lerp(start[name], tensor, alpha) if tensor.is_floating_point() else tensor
            for name, tensor in end.items()}  # fmt: skip


def load_blend(model: nn.Module, start: State, end: State, alpha: float) -> None:
    """Set ``model``'s weights to the state at ``alpha`` between ``start`` and ``end``."""
    model.load_state_dict(blended(start, end, alpha))


@dataclass(frozen=True)
class Interpolation:
    """The alpha kept, how it was chosen, and per alpha tried the validation loss and accuracy."""

    alpha: float
    rule: str  # "chosen on validation", "fixed: ..." (too few validation images) or "set by --interpolate"
    alphas: tuple[float, ...] = ()
    val_loss: tuple[float, ...] = ()
    val_accuracy: tuple[float, ...] = ()

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "rule": self.rule, "alphas": list(self.alphas), "val_loss": list(self.val_loss),
                "val_accuracy": list(self.val_accuracy)}  # fmt: skip


def along_the_line(model: nn.Module, start: State, end: State, pixels: torch.Tensor, labels: torch.Tensor,
                   alphas=ALPHAS, batch_size: int = 64) -> tuple[list[float], list[float]]:  # fmt: skip
    """(loss, accuracy) of ``model`` on ``pixels`` at each of ``alphas`` between ``start`` and ``end``;
    the model is left at the last alpha."""
    losses, accuracies = [], []
    for alpha in alphas:
        load_blend(model, start, end, alpha)
        loss, accuracy = evaluate_logits(predict_pixels(model, pixels, batch_size).float().cpu(), labels)
        losses.append(loss)
        accuracies.append(accuracy)
    return losses, accuracies


def best_alpha(alphas, losses: list[float], accuracies: list[float]) -> float:
    """The alpha of the highest validation accuracy; among ties the lowest loss, then the larger alpha."""
    return max(zip(alphas, losses, accuracies), key=lambda row: (row[2], -row[1], row[0]))[0]


def auto_alpha(alphas, losses: list[float], accuracies: list[float], smallest_class: int) -> tuple[float, str]:
    """``auto``'s alpha and its reason: :func:`best_alpha`, or :data:`FIXED_ALPHA` when the smallest
    validation class has fewer than :data:`CHOOSING_IMAGES` images (too few to choose by)."""
    if smallest_class < CHOOSING_IMAGES:
        return FIXED_ALPHA, (f"fixed: {smallest_class} validation image(s) in the smallest class, fewer than the "
                             f"{CHOOSING_IMAGES} to choose by")  # fmt: skip
    return best_alpha(alphas, losses, accuracies), "chosen on validation"


def _digest(start: State, end: State, val_pixels: torch.Tensor, val_labels: torch.Tensor) -> str:
    """What decides the choice on the line: both ends' weights and the validation images and labels."""
    digest = hashlib.sha256()
    for state in (start, end):
        for name, tensor in state.items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for tensor in (val_pixels, torch.as_tensor(val_labels)):
        digest.update(tensor.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _saved_choice(saved: Path | None, key: str) -> Interpolation | None:
    if saved is None or not saved.exists():
        return None
    record = json.loads(saved.read_text())
    if record.get("key") != key:
        return None
    found = record["interpolation"]
    return Interpolation(found["alpha"], found["rule"], *(tuple(found[k]) for k in ("alphas", "val_loss", "val_accuracy")))


def _save_choice(saved: Path | None, key: str, choice: Interpolation) -> None:
    if saved is None:
        return
    saved.parent.mkdir(parents=True, exist_ok=True)
    partial = saved.with_name(f".{saved.name}.{os.getpid()}")  # whole or absent, whichever process writes it
    partial.write_text(json.dumps({"key": key, "interpolation": asdict(choice)}))
    os.replace(partial, saved)


def interpolate(model: nn.Module, start: State, setting: str | float, val_pixels: torch.Tensor, val_labels: torch.Tensor,
                batch_size: int = 64, saved: Path | None = None) -> Interpolation:  # fmt: skip
    """Move ``model`` (fine-tuned from ``start``) to the alpha ``setting`` names: a number, or ``auto``
    (:func:`auto_alpha` on the validation images, every alpha of :data:`ALPHAS` scored for the
    report; the choice kept in ``saved`` and read from it for the same ends and images)."""
    end = snapshot(model)
    if setting != INTERPOLATE_AUTO:
        load_blend(model, start, end, float(setting))
        return Interpolation(float(setting), "set by --interpolate")
    key = _digest(start, end, val_pixels, val_labels)
    choice = _saved_choice(saved, key)
    if choice is None:
        losses, accuracies = along_the_line(model, start, end, val_pixels, val_labels, ALPHAS, batch_size)
        choice = Interpolation(*auto_alpha(ALPHAS, losses, accuracies, smallest_class(val_labels)), ALPHAS, tuple(losses),
                               tuple(accuracies))  # fmt: skip
        _save_choice(saved, key, choice)
    load_blend(model, start, end, choice.alpha)
    log.info("interpolation: alpha %.1f (%s; validation accuracy %.4f at it, %.4f fine-tuned)", choice.alpha, choice.rule,
             choice.val_accuracy[ALPHAS.index(choice.alpha)], choice.val_accuracy[-1])  # fmt: skip
    return choice
