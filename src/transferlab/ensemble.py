"""An ensemble of trained transfer models: each member's logits divided by its own temperature
(fitted on held-out logits: the one of :data:`TEMPERATURES` of least cross-entropy, Guo et al.,
"On calibration of modern neural networks", ICML 2017), their probabilities averaged.

:class:`Ensemble` is one network: its output is the log of the averaged probabilities, so that a
softmax of it gives them back and everything that reads logits (predict, evaluate, exports) reads
it unchanged. :func:`combined` is the same average on logits already computed, so training scores
the ensemble from its members' outputs without running them again.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# The grid a temperature is chosen on: 1/100 to 100, evenly in log scale (1 included; a step of 17%),
# wide enough for a ridge head's scores (one-hot targets: differences of a fraction of 1).
TEMPERATURES = tuple(float(t) for t in np.exp(np.linspace(math.log(0.01), math.log(100.0), 61)))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> float:
    """The temperature of :data:`TEMPERATURES` under which ``logits`` give ``labels`` the least
    cross-entropy (each class's images weighted by ``class_weights``, default equally; ties: the
    one nearest 1)."""
    logits, labels = logits.float(), torch.as_tensor(labels)
    losses = [nn.functional.cross_entropy(logits / t, labels, weight=class_weights).item() for t in TEMPERATURES]
    return min(zip(losses, (abs(math.log(t)) for t in TEMPERATURES), TEMPERATURES))[2]


def combined(member_logits: list[torch.Tensor], temperatures: list[float] | torch.Tensor,
             weights: list[float] | torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The log of the members' averaged probabilities, each member's logits divided by its
    temperature, weighted by ``weights`` (normalized; default: equal)."""
    weights = torch.ones(len(member_logits)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    log_weights = torch.log(weights / weights.sum())
    log_probabilities = [torch.log_softmax(logits.float() / t, 1) + w for logits, t, w in
                         zip(member_logits, temperatures, log_weights)]  # fmt: skip
    return torch.logsumexp(torch.stack(log_probabilities), 0)


class Ensemble(nn.Module):
    """Several transfer models of the same classes and input as one: :func:`combined` of their
    outputs at their ``temperatures`` and ``weights``. ``preprocessing``: the members' (they share it)."""

    def __init__(self, members: list[nn.Module], temperatures: list[float], weights: list[float] | None = None):
        super().__init__()
        if len(members) != len(temperatures) or len(members) < 2:
            raise ValueError(f"an ensemble needs two members or more, each with a temperature; got {len(members)} "
                             f"members and {len(temperatures)} temperatures.")  # fmt: skip
        self.members = nn.ModuleList(members)
        self.register_buffer("temperatures", torch.tensor(temperatures, dtype=torch.float32))
        self.register_buffer("weights", torch.tensor(weights or [1.0] * len(members), dtype=torch.float32))
        self.preprocessing = members[0].preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combined([member(x) for member in self.members], self.temperatures, self.weights)
