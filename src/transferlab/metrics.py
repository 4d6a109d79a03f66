"""Classification metrics: what a user needs on balanced and imbalanced data alike.

Plain accuracy misleads on imbalanced data (always answering the largest class can score high),
so every evaluation also reports balanced accuracy (mean per-class recall), macro F1, per-class
precision and recall, and the majority-class baseline to compare against.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[float, float]:
    """(mean cross-entropy, weighted by class when ``weight`` is given; accuracy) of logits against labels."""
    loss = nn.functional.cross_entropy(logits, labels, weight=weight).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict:
    """Accuracy, balanced accuracy, macro F1, the majority-class baseline and per-class
    precision / recall / F1 / support. Classes absent from ``labels`` do not enter the means."""
    counts = confusion_matrix(labels, predictions, len(classes))
    support, predicted, hits = counts.sum(1), counts.sum(0), np.diag(counts)
    recall, precision = _ratio(hits, support), _ratio(hits, predicted)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0
    total = int(support.sum())
    return {
        "accuracy": float(hits.sum() / total) if total else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if total else float("nan"),
        "macro_f1": float(f1[present].mean()) if total else float("nan"),
        "majority_baseline": float(support.max() / total) if total else float("nan"),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": counts.tolist(),
    }
