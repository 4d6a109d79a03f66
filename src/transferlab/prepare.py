"""What a run builds once and passes forward: the data's splits, the backbone and the feature cache.

``train --strategy auto`` advises and trains on the same prepared run: the data is loaded, the
classes selected, the splits drawn and the backbone built (its weights hashed) once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .backbones import Backbone
from .config import TrainConfig
from .data import Splits, load_dataset, select_classes, split_dataset
from .features import FeatureCache
from .sources import build_backbone


@dataclass
class PreparedRun:
    """The splits, the backbone (pretrained unless the run is ``scratch``) and the cache of a run."""

    splits: Splits
    backbone: Backbone
    cache: FeatureCache | None

    @functools.cached_property
    def weights_digest(self) -> str:
        """The digest of the backbone's weights as prepared (hashing every tensor: once per run)."""
        return self.backbone.weights_fingerprint()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.splits.train.classes


def prepare(config: TrainConfig) -> PreparedRun:
    """Load and split the data, build the backbone and open the cache, as ``config`` says."""
    dataset = load_dataset(config.data, config.data_dir)
    if config.classes:
        dataset = select_classes(dataset, config.classes)
    splits = split_dataset(dataset, config.val_fraction, config.samples_per_class, config.test_per_class, config.seed)
    pretrained = config.pretrained and config.strategy != "scratch"
    backbone = build_backbone(config.backbone, pretrained, config.weights if pretrained else None)
    cache = (FeatureCache(config.cache_dir) if config.cache_dir else FeatureCache()) if config.use_cache else None
    return PreparedRun(splits, backbone, cache)
