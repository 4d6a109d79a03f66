"""Small architectures of transferlab's own, with timm's backbone contract.

``CnnSmall`` suits 28x28 images (Fashion-MNIST): three stages of 3x3 convolutions with
BatchNorm and ReLU, then global average pooling. It implements what transferlab uses of timm's
interface: ``feature_info``, ``num_features``, ``forward_features``, ``forward_intermediates``,
``prune_intermediate_layers`` and ``reset_classifier``, so it can be cut like any timm model.
"""

from __future__ import annotations

import torch
from torch import nn


def run_collecting(modules, x: torch.Tensor, wanted: set[int], stop_early: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``modules`` in order, keeping the outputs of the positions in ``wanted``; with
    ``stop_early``, stop after the last of them. Returns (the last output, the kept ones)."""
    outputs = []
    for position, module in enumerate(modules):
        x = module(x)
        if position in wanted:
            outputs.append(x)
        if stop_early and position >= max(wanted):
            break
    return x, outputs


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class CnnSmall(nn.Module):
    """conv32-pool | conv64-conv64-pool | conv128 | global average pool -> 128 features.

    One convolution at full resolution keeps a training step cheap on a CPU (about 15 M
    multiply-adds per 28x28 image); the depth sits at 14x14 and 7x7.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.3):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(*_conv_block(in_chans, 32), nn.MaxPool2d(2)),
            nn.Sequential(*_conv_block(32, 64), *_conv_block(64, 64), nn.MaxPool2d(2)),
            nn.Sequential(*_conv_block(64, 128)),
        ])  # fmt: skip
        self.feature_info = [
            {"module": "stages.0", "num_chs": 32, "reduction": 2},
            {"module": "stages.1", "num_chs": 64, "reduction": 4},
            {"module": "stages.2", "num_chs": 128, "reduction": 4},
        ]
        self.num_features = 128
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(drop_rate)
        self.classifier: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's grouping for layer-wise rates and gradual unfreezing: one group per stage."""
        return {"stem": r"^stages\.0\.", "blocks": r"^stages\.(\d+)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.forward_features(x))
        return self.classifier(self.drop(features)) if not isinstance(self.classifier, nn.Identity) else features

    def forward_intermediates(self, x, indices, intermediates_only: bool = True, stop_early: bool = True, **_):
        x, outputs = run_collecting(self.stages, x, set(indices), stop_early)
        return outputs if intermediates_only else (x, outputs)

    def prune_intermediate_layers(self, indices, prune_norm: bool = False, prune_head: bool = True, **_):
        last = max(indices)
        self.stages = self.stages[: last + 1]
        if prune_head:
            self.reset_classifier(0)
        return list(indices)


class StagedFeatures(nn.Module):
    """A sequential feature extractor (such as torchvision's ``model.features``) cut into stages,
    with the same backbone contract as ``CnnSmall``, so that it can be cut, probed at every stage
    and fine-tuned with layer-wise rates like any timm model.

    ``stages``: per stage, (index of its last module in ``features``, channels, reduction).
    The module keeps the name ``features``, so the original state dict loads strictly.
    """

    def __init__(self, features: nn.Sequential, stages: list[tuple[int, int, int]], num_features: int):
        super().__init__()
        self.features = features
        self.stage_ends = [end for end, _, _ in stages]
        self.feature_info = [{"module": f"features.{end}", "num_chs": c, "reduction": r} for end, c, r in stages]
        self.num_features = num_features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def reset_classifier(self, num_classes: int) -> None:
        if num_classes:
            raise ValueError("StagedFeatures holds no classifier; transferlab adds its own head.")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))

    def forward_intermediates(self, x, indices, intermediates_only: bool = True, stop_early: bool = False, **_):
        x, outputs = run_collecting(self.features, x, {self.stage_ends[i] for i in indices}, stop_early)
        return outputs if intermediates_only else (x, outputs)

    def prune_intermediate_layers(self, indices, prune_norm: bool = False, prune_head: bool = True, **_):
        self.features = self.features[: self.stage_ends[max(indices)] + 1]
        return list(indices)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's grouping for layer-wise learning rates: the stem, then one group per module."""
        return {"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)"}
