import math

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.inits import INITIALIZERS, init_module, initializer_names


def _weight(name: str, fan_in: int = 400, fan_out: int = 300) -> torch.Tensor:
    torch.manual_seed(0)
    layer = init_module(nn.Linear(fan_in, fan_out), name)
    return layer.weight.detach()


@pytest.mark.parametrize(
    "name, expected_std",
    [
        ("kaiming-normal", math.sqrt(2 / 400)),
        ("kaiming-uniform", math.sqrt(2 / 400)),
        ("xavier-normal", math.sqrt(2 / 700)),
        ("xavier-uniform", math.sqrt(2 / 700)),
        ("normal", 1 / math.sqrt(400)),
        ("general-rule", 1 / math.sqrt(400) / math.sqrt(3)),
        ("uniform-centered", 1 / math.sqrt(12)),
        ("uniform", 1 / math.sqrt(12)),
    ],
)
def test_empirical_std_matches_theory_within_5_percent(name, expected_std):
    assert _weight(name).std().item() == pytest.approx(expected_std, rel=0.05)


def test_ranges_and_constants():
    assert _weight("uniform").min() >= 0 and _weight("uniform").max() < 1
    bound = 1 / math.sqrt(400)
    assert _weight("general-rule").abs().max() <= bound
    assert torch.all(_weight("zeros") == 0) and torch.all(_weight("ones") == 1)
    assert torch.all(_weight("constant:0.25") == 0.25)
    std = 1 / math.sqrt(400)
    assert _weight("truncated-normal").abs().max() <= 2 * std + 1e-7


def test_orthogonal_rows_are_orthonormal():
    w = _weight("orthogonal", fan_in=400, fan_out=300)
    assert torch.allclose(w @ w.T, torch.eye(300), atol=1e-4)


def test_biases_zero_except_for_default():
    torch.manual_seed(0)
    assert torch.all(init_module(nn.Linear(10, 5), "kaiming-normal").bias == 0)
    assert init_module(nn.Linear(10, 5), "default").bias.abs().sum() > 0
    assert init_module(nn.Linear(10, 5), "xavier-uniform", zero_bias=False).bias.abs().sum() > 0


def test_conv_layers_use_fan_in_of_kernel():
    torch.manual_seed(0)
    conv = init_module(nn.Conv2d(16, 64, 3), "kaiming-normal")
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.05)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="--init must be one of .*kaiming-normal.*got 'kaiming'"):
        init_module(nn.Linear(2, 2), "kaiming")
    assert set(INITIALIZERS) < set(initializer_names())
