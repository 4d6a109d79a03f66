"""Weight initializers: one registry used by new heads and by the init lab.

Each initializer takes a weight tensor (``Linear``: out x in, ``Conv``: out x in x kh x kw) and
fills it in place. The fan-in ``n`` is the number of inputs of one unit (in x kh x kw).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .errors import check_choice

Initializer = Callable[[torch.Tensor], None]


def fan_in(weight: torch.Tensor) -> int:
    """Number of inputs feeding one output unit of a Linear or Conv weight."""
    return math.prod(weight.shape[1:])


def _constant(value: float) -> Initializer:
    return lambda w: nn.init.constant_(w, value)


def _general_rule(w: torch.Tensor) -> None:
    bound = 1.0 / math.sqrt(fan_in(w))
    nn.init.uniform_(w, -bound, bound)


def _normal_fan_in(w: torch.Tensor) -> None:
    nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in(w)))


def _truncated_normal_fan_in(w: torch.Tensor) -> None:
    std = 1.0 / math.sqrt(fan_in(w))
    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
    "uniform": lambda w: nn.init.uniform_(w, 0.0, 1.0),
    "uniform-centered": lambda w: nn.init.uniform_(w, -0.5, 0.5),
    "general-rule": _general_rule,
    "normal": _normal_fan_in,
    "truncated-normal": _truncated_normal_fan_in,
    "xavier-uniform": nn.init.xavier_uniform_,
    "xavier-normal": nn.init.xavier_normal_,
    "kaiming-uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming-normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}
"""Named initializers. ``default`` (PyTorch's own ``reset_parameters``) and ``constant:VALUE``
are handled by :func:`init_module`."""


def initializer_names() -> list[str]:
    return [*INITIALIZERS, "constant:VALUE", "default"]


def resolve_initializer(name: str) -> Initializer | None:
    """The initializer called ``name``; ``None`` for ``default`` (keep PyTorch's own init)."""
    if name == "default":
        return None
    if name.startswith("constant:"):
        try:
            return _constant(float(name.split(":", 1)[1]))
        except ValueError:
            pass
    return INITIALIZERS[check_choice("init", name, initializer_names(), "init_module()")]


def init_module(module: nn.Module, name: str, zero_bias: bool = True) -> nn.Module:
    """Initialize every Linear and Conv layer inside ``module`` with the initializer ``name``.

    ``default`` keeps each layer's ``reset_parameters`` (PyTorch's own scheme, biases included).
    Any other initializer sets biases to zero unless ``zero_bias`` is False.
    """
    init = resolve_initializer(name)
    for layer in module.modules():
        if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        layer.reset_parameters()
        if init is not None:
            with torch.no_grad():
                init(layer.weight)
        if init is not None and zero_bias and layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return module
