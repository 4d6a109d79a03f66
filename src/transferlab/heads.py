"""The new fully-connected head that replaces a network's classifier."""

from __future__ import annotations

import torch
from torch import nn

from .inits import DEFAULT_HEAD_INIT, init_module


class LinearHead(nn.Module):
    """Dropout (optional) then one Linear layer from the features to the new classes."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features):
        return self.fc(self.dropout(features))

    @torch.no_grad()
    def absorb_standardization(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Fold ``(x - mean) / scale`` into the Linear layer (``scale``: one value or one per
        feature): trained on standardized features, the head then takes raw ones (exact at
        inference, where dropout is the identity)."""
        self.fc.bias -= self.fc.weight @ (mean / scale)
        self.fc.weight /= scale


def make_head(in_features: int, num_classes: int, init: str = DEFAULT_HEAD_INIT, dropout: float = 0.0) -> LinearHead:
    """A new head sized to ``num_classes``, its weights set by the named initializer."""
    return init_module(LinearHead(in_features, num_classes, dropout), init)
