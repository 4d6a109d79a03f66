"""A frozen head that learns from unlabelled images too, with a guard (``--unlabeled``).

The head is fitted twice from the same start: on the labelled images alone, and on them plus
the unlabelled images that :mod:`..semisupervised` labels with certainty. The second is kept only
when the validation images - labelled, and seen by neither fit's labels - prefer it (:func:`helps`);
otherwise the run keeps the first and says why.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch

from ..heads import LinearHead
from ..semisupervised import propagate, pseudo_labelled, self_training
from .loops import kept_epoch

log = logging.getLogger(__name__)

METHODS = ("propagation", "self-training")
METHOD = "propagation"  # what --unlabeled runs (benchmarks/unlabeled.py measured both)

FitHead = Callable[[LinearHead, np.ndarray, np.ndarray], list[dict]]  # (head, features, labels) -> its history


def _pseudo_labels(method: str, plain: LinearHead, train_x, train_y, unlabeled_x, embed, classes: int):
    if method == "propagation":
        return propagate(embed(train_x), train_y, embed(unlabeled_x), classes)
    plain.eval()
    with torch.no_grad():
        return self_training(torch.softmax(plain(torch.as_tensor(np.asarray(unlabeled_x))), 1).numpy())


def labelled_weight(labelled: int, pseudo_labelled: int) -> int:
    """How many times each labelled image enters the fit beside the pseudo-labelled ones: together
    they weigh about as much as all the pseudo-labelled images (measured on five sets, seeds 0-1:
    unguarded, +2.9 / +1.9 points at 5 / 10 labelled per class against +2.3 / +0.0 with each image
    once; docs/unlabeled.md)."""
    return max(1, round(pseudo_labelled / max(1, labelled)))


def helps(with_them: dict, without: dict) -> bool:
    """Whether validation says the pseudo-labelled images help: a higher accuracy (a tie is no
    evidence; a lower loss alone let images of a class the model does not know through)."""
    return with_them["val_accuracy"] > without["val_accuracy"]


def fit_with_unlabeled(head: LinearHead, train_x: np.ndarray, train_y: np.ndarray, unlabeled_x: np.ndarray, fit: FitHead,
                       classes: int, embed: Callable[[np.ndarray], np.ndarray] = lambda x: x,
                       method: str = METHOD, refit: FitHead | None = None) -> tuple[list[dict], dict]:  # fmt: skip
    """Fit ``head`` by ``fit`` with and without the pseudo-labelled ``unlabeled_x`` and keep the one the
    validation prefers (``embed``: the features the graph is built on); with ``refit``, the kept
    one's images fitted again by it once validation has chosen (the closed-form head, which then
    fits the validation images too, as a run without unlabelled images does). Returns the kept
    fit's history and what happened, for ``metrics.json``."""
    plain = copy.deepcopy(head)
    plain_history = fit(plain, train_x, train_y)
    pseudo = _pseudo_labels(method, plain, train_x, train_y, unlabeled_x, embed, classes)
    kept = pseudo_labelled(pseudo, classes)
    report = {"images": int(len(unlabeled_x)), "method": method, "pseudo_labelled": int(len(kept)),
              "per_class": np.bincount(pseudo.labels[kept], minlength=classes).tolist()}  # fmt: skip
    without = kept_epoch(plain_history)
    report.update(val_accuracy_without=without["val_accuracy"], val_loss_without=without["val_loss"])
    if len(kept):
        repeat = report["labelled_weight"] = labelled_weight(len(train_x), len(kept))
        semi_x = np.vstack([np.repeat(train_x, repeat, 0), unlabeled_x[kept]])
        semi_y = np.concatenate([np.repeat(train_y, repeat), pseudo.labels[kept]])
        semi_history = fit(head, semi_x, semi_y)
        with_them = kept_epoch(semi_history)
        report.update(val_accuracy_with=with_them["val_accuracy"], val_loss_with=with_them["val_loss"])
        if helps(with_them, without):
            log.info("unlabelled images: %d of %d pseudo-labelled and kept (validation accuracy %.4f with them, %.4f "
                     "without)", len(kept), len(unlabeled_x), with_them["val_accuracy"], without["val_accuracy"])  # fmt: skip
            if refit is not None:
                semi_history = refit(head, semi_x, semi_y)
            return semi_history, {**report, "used": True, "reason": "validation accuracy better with them"}
        reason = (f"validation accuracy {with_them['val_accuracy']:.4f} with them, {without['val_accuracy']:.4f} without: "
                  "no better, so they are left out")  # fmt: skip
    else:
        reason = "none was labelled with enough certainty"
    log.warning("unlabelled images not used: %s", reason)
    if refit is not None:
        return refit(head, train_x, train_y), {**report, "used": False, "reason": reason}
    head.load_state_dict(plain.state_dict())
    return plain_history, {**report, "used": False, "reason": reason}
