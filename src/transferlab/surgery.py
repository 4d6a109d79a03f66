"""Network surgery: normalize, body up to a cut (or reading several cuts), new head; freezing that
really freezes."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbones import Backbone, Preprocessing
from .strategies import FINAL_CUT


class Normalize(nn.Module):
    """(x - mean) / std per channel, for inputs in [0, 1]; part of the model so exports carry it."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Mirror(nn.Module):
    """Images mirrored left to right (N x C x H x W): put before a network, its outputs on the mirror images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)


class TransferModel(nn.Module):
    """``head(body(normalize(x)))`` for images ``x`` in [0, 1], N x 3 x H x W.

    In ``train()`` mode every BatchNorm layer whose parameters are all frozen stays in eval
    mode, so frozen layers neither use batch statistics nor move their running statistics.
    With ``freeze_bn`` set, every BatchNorm layer does (its scale and shift still train): the
    policy for fine-tuning with small batches.
    """

    freeze_bn: bool = False

    def __init__(self, body: nn.Module, head: nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.preprocessing = preprocessing
        self.normalize = Normalize(preprocessing.mean, preprocessing.std)
        self.body = body
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and (self.freeze_bn or is_frozen(module)):
                    module.eval()
        return self


def is_frozen(module: nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients into every parameter of ``module`` (BatchNorm handled by TransferModel)."""
    module.requires_grad_(False)
    return module


class TimmPrefix(nn.Module):
    """A timm network kept only up to one of its ``feature_info`` stages, then average-pooled."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        model.prune_intermediate_layers(indices=[index], prune_norm=True, prune_head=True)
        self.model = model
        self.index = index
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stage = self.model.forward_intermediates(x, indices=[self.index], intermediates_only=True, stop_early=True)
        return self.pool(stage[0])


def body_at(backbone: Backbone, cut: str = FINAL_CUT) -> nn.Module:
    """A copy of the backbone up to ``cut``, ending in pooled features (N x channels).

    Always a copy (an earlier cut also pruned), so training it leaves the backbone whole for
    other runs and other cuts.
    """
    backbone.cut(cut)  # validates the name
    if cut == FINAL_CUT:
        return copy.deepcopy(backbone.model)
    index = [c.name for c in backbone.cut_points].index(cut)
    return TimmPrefix(copy.deepcopy(backbone.model), index)


class MultiCut(nn.Module):
    """The pooled features of several cut points of one network at once, concatenated in cut
    order; the network runs once (how the advisor reads every depth, and how a head over several
    taps reads them). ``cut_names``: every cut point of the network, the final one last."""

    def __init__(self, model: nn.Module, cut_names: list[str], taps: list[str]):
        super().__init__()
        unknown = [t for t in taps if t not in cut_names]
        if unknown:
            raise ValueError(f"unknown cut(s) {', '.join(unknown)}; the network has {', '.join(cut_names)}.")
        self.model = model
        self.indices = [i for i, name in enumerate(cut_names[:-1]) if name in taps]
        self.final = FINAL_CUT in taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.indices:
            return self.model(x)
        final, stages = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=False)
        pooled = [s.mean((2, 3)) for s in stages]
        if self.final:
            if hasattr(self.model, "forward_head"):
                final = self.model.forward_head(final, pre_logits=True)
            elif final.ndim == 4:
                final = final.mean((2, 3))
            pooled.append(final)
        return torch.cat(pooled, 1)


def body_over(backbone: Backbone, taps: list[str] | tuple[str, ...]) -> nn.Module:
    """A copy of the backbone reading the cut points ``taps``: one cut is :func:`body_at`, several a
    :class:`MultiCut` whose features are theirs concatenated."""
    for tap in taps:
        backbone.cut(tap)  # validates the name
    if len(taps) == 1:
        return body_at(backbone, taps[0])
    return MultiCut(copy.deepcopy(backbone.model), [c.name for c in backbone.cut_points], list(taps))
