"""What a run builds once and passes forward: the data's splits, the backbone and the feature cache.

``train --strategy auto`` advises and trains on the same prepared run: the data is loaded, the
classes selected, the splits drawn and the backbone built (its weights hashed) once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field

from .backbones import Backbone
from .config import TrainConfig
from .data import Splits, select_classes, split_dataset
from .datasets import load_dataset
from .features import FeatureCache
from .sources import build_backbone
from .strategies import applying_to
from .unlabeled import apart_from, at_most, found_folder, load_unlabeled

log = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """The splits, the backbone (pretrained unless the run is ``scratch``) and the cache of a run."""

    splits: Splits
    backbone: Backbone
    cache: FeatureCache | None
    seconds: float  # what preparing took: loading, splitting, building
    _siblings: dict[str, PreparedRun] = field(default_factory=dict, repr=False)

    def for_backbone(self, name: str) -> PreparedRun:
        """The same data and cache with the pretrained backbone ``name`` (built once per run):
        how the advisor compares sources, and how the run then trains the chosen one."""
        if name not in self._siblings:
            started = time.perf_counter()
            self._siblings[name] = PreparedRun(self.splits, build_backbone(name), self.cache,
                                               time.perf_counter() - started, self._siblings)  # fmt: skip
        return self._siblings[name]

    def over_backbone(self, name: str) -> PreparedRun:
        """These very splits over the pretrained backbone ``name`` (:meth:`for_backbone`, whose run may
        hold the splits it was first built with): where an ensemble's companion trains."""
        return self.for_backbone(name).with_splits(self.splits)

    def with_cache(self, cache: FeatureCache | None) -> PreparedRun:
        """The same data and backbone over another feature cache (the study times the advisor on a cold one)."""
        run = PreparedRun(self.splits, self.backbone, cache, 0.0)
        run._siblings.update({name: run for name, sibling in self._siblings.items() if sibling is self})
        return run

    def with_splits(self, splits: Splits) -> PreparedRun:
        """The same backbone and cache over other splits (a fold of the out-of-fold search), sharing the
        weights' digest."""
        run = PreparedRun(splits, self.backbone, self.cache, 0.0, self._siblings)
        run.__dict__["weights_digest"] = self.weights_digest  # the cached property, hashed once per run
        return run

    def with_fit(self, fit: str) -> PreparedRun:
        """The same run, its images made square by ``fit`` (:data:`.images.FITS`)."""
        return self if self.splits.train.fit == fit else self.with_splits(self.splits.with_fit(fit))

    def without_test(self) -> PreparedRun:
        """The same run without its test split (what the advisor's pilot may see)."""
        return self.with_splits(Splits(self.splits.train, self.splits.val, None))

    @functools.cached_property
    def weights_digest(self) -> str:
        """The digest of the backbone's weights as prepared (hashing every tensor: once per run)."""
        return self.backbone.weights_fingerprint()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.splits.train.classes


def with_unlabeled(splits: Splits, config: TrainConfig) -> Splits:
    """``splits`` with the unlabelled images of ``--unlabeled`` (or of ``DATA/unlabeled/``), apart
    from every labelled image."""
    folder = config.unlabeled or found_folder(config.data)
    if folder is None:
        return splits
    if not config.unlabeled:
        log.info("unlabelled images in %s: used where the strategy learns from them (%s)", folder,
                 ", ".join(applying_to("unlabeled")))
    # sampled before the duplicates check: a huge folder is not read byte by byte beyond the sample
    return dataclasses.replace(splits, unlabeled=apart_from(at_most(load_unlabeled(folder), seed=config.seed), splits))


def prepare(config: TrainConfig) -> PreparedRun:
    """Load and split the data, build the backbone and open the cache, as ``config`` says."""
    started = time.perf_counter()
    dataset = load_dataset(config.data, config.data_dir)
    if config.classes:
        dataset = select_classes(dataset, config.classes)
    splits = with_unlabeled(split_dataset(dataset, config.val_fraction, config.samples_per_class, config.test_per_class,
                                          config.seed), config).with_fit(config.fit or "crop")  # fmt: skip
    pretrained = config.pretrained and config.starts_pretrained
    backbone = build_backbone(config.backbone, pretrained, config.weights if pretrained else None)
    cache = FeatureCache(config.cache_root / "features") if config.use_cache else None
    run = PreparedRun(splits, backbone, cache, time.perf_counter() - started)
    run._siblings[config.backbone] = run
    return run
