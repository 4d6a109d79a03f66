"""Weight initializers: one registry used by new heads and by the init lab.

Each initializer takes a weight tensor (``Linear``: out x in, ``Conv``: out x in x kh x kw) and
fills it in place. The fan-in ``n`` is the number of inputs of one unit (in x kh x kw).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ConfigError, check_choice

if TYPE_CHECKING:  # torch loads on first use: the CLI checks names without it
    import torch
    from torch import nn

Initializer = Callable[["torch.Tensor"], None]
DEFAULT_HEAD_INIT = "xavier-uniform"  # the initializer of a new head


def fan_in(weight: torch.Tensor) -> int:
    """Number of inputs feeding one output unit of a Linear or Conv weight."""
    return math.prod(weight.shape[1:])


def _nn_init(name: str, **kwargs) -> Initializer:
    """``torch.nn.init``'s function ``name`` with ``kwargs``."""

    def initialize(weight: torch.Tensor) -> None:
        from torch.nn import init

        getattr(init, name)(weight, **kwargs)

    return initialize


def _constant(value: float) -> Initializer:
    return _nn_init("constant_", val=value)


def _general_rule(w: torch.Tensor) -> None:
    bound = 1.0 / math.sqrt(fan_in(w))
    _nn_init("uniform_", a=-bound, b=bound)(w)


def _normal_fan_in(w: torch.Tensor) -> None:
    _nn_init("normal_", mean=0.0, std=1.0 / math.sqrt(fan_in(w)))(w)


def _truncated_normal_fan_in(w: torch.Tensor) -> None:
    std = 1.0 / math.sqrt(fan_in(w))
    _nn_init("trunc_normal_", mean=0.0, std=std, a=-2 * std, b=2 * std)(w)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": _nn_init("zeros_"),
    "ones": _nn_init("ones_"),
    "uniform": _nn_init("uniform_", a=0.0, b=1.0),
    "uniform-centered": _nn_init("uniform_", a=-0.5, b=0.5),
    "general-rule": _general_rule,
    "normal": _normal_fan_in,
    "truncated-normal": _truncated_normal_fan_in,
    "xavier-uniform": _nn_init("xavier_uniform_"),
    "xavier-normal": _nn_init("xavier_normal_"),
    "kaiming-uniform": _nn_init("kaiming_uniform_", nonlinearity="relu"),
    "kaiming-normal": _nn_init("kaiming_normal_", nonlinearity="relu"),
    "orthogonal": _nn_init("orthogonal_"),
}
"""Named initializers. ``default`` (PyTorch's own ``reset_parameters``) and ``constant:VALUE``
are handled by :func:`init_module`."""


DATA_DEPENDENT = ("lsuv",)


def initializer_names() -> list[str]:
    return [*INITIALIZERS, "constant:VALUE", "default", *DATA_DEPENDENT]


def resolve_initializer(name: str, option: str = "--init") -> Initializer | None:
    """The initializer called ``name``; ``None`` for ``default`` (keep PyTorch's own init). An
    unknown name is a ConfigError that names ``option``, the flag it came from."""
    if name in ("default", *DATA_DEPENDENT):
        return None
    if name.startswith("constant:"):
        try:
            return _constant(float(name.split(":", 1)[1]))
        except ValueError:
            pass
    return INITIALIZERS[check_choice(option, name, initializer_names())]


def _weighted_layers(module: nn.Module) -> list[nn.Module]:
    from torch import nn

    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def init_module(module: nn.Module, name: str, zero_bias: bool = True, sample: torch.Tensor | None = None) -> nn.Module:
    """Initialize every Linear and Conv layer inside ``module`` with the initializer ``name``.

    ``default`` keeps each layer's ``reset_parameters`` (PyTorch's own scheme, biases included).
    Any other initializer sets biases to zero unless ``zero_bias`` is False. ``lsuv`` is
    data-dependent and needs ``sample``, a batch that ``module`` accepts.
    """
    if name == "lsuv":
        if sample is None:
            raise ConfigError("The 'lsuv' initializer needs a batch of data (sample=...); it cannot size a head blind.")
        return lsuv_(module, sample)
    import torch

    init = resolve_initializer(name)
    for layer in _weighted_layers(module):
        layer.reset_parameters()
        with torch.no_grad():
            if init is not None:
                init(layer.weight)
            if init is not None and zero_bias and layer.bias is not None:
                layer.bias.zero_()
    return module


def lsuv_(module: nn.Module, sample: torch.Tensor, tolerance: float = 0.05, max_iterations: int = 10) -> nn.Module:
    """Layer-sequential unit-variance init (Mishkin & Matas, "All you need is a good init", ICLR 2016).

    Orthonormal weights and zero biases first; then, layer by layer from the input, the weights
    are divided by the standard deviation of that layer's output on ``sample`` until its
    variance is within ``tolerance`` of 1.
    """
    import torch

    with torch.no_grad():
        return _lsuv(module, sample, tolerance, max_iterations)


def _lsuv(module: nn.Module, sample: torch.Tensor, tolerance: float, max_iterations: int) -> nn.Module:
    init_module(module, "orthogonal")
    was_training = module.training
    module.eval()
    for layer in _weighted_layers(module):
        captured = {}
        handle = layer.register_forward_hook(lambda _m, _i, output, store=captured: store.__setitem__("out", output))
        try:
            for _ in range(max_iterations):
                module(sample)
                std = captured["out"].std().item()
                if abs(std**2 - 1.0) < tolerance or std == 0.0:
                    break
                layer.weight.div_(std)
        finally:
            handle.remove()
    module.train(was_training)
    return module
