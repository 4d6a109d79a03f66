"""Crop or squash: how the user's non-square images become the network's square input, decided on them.

Cropping the centre (the default of every strategy) cuts the sides of a non-square image off: a
quarter of a 4:3 photograph, half of a 2:1 strip. Where what tells the classes apart can sit
anywhere in the frame - a defect on an inspection image, a cell at a slide's edge - the cropped
images lose it; where it sits in the middle, the crop gives it more pixels. Which way it goes only
the images can say, so the advisor runs the frozen body over its sample both ways and compares the
leave-one-out probe image by image (:func:`compare_fits`); square images are cropped without a
second look (nothing is cut off).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from ..backbones import Backbone
from ..data import ImageSet
from ..features import FeatureCache
from ..images import UNREADABLE, aspect_ratio
from ..transferability import probe_correct
from .measure import Engine, features_at_every_cut

log = logging.getLogger(__name__)

SQUARE = 1.05  # the widest aspect ratio counted as square: cropping cuts at most 2.5% off each side


@dataclass(frozen=True)
class FitCheck:
    """The fit chosen for a run's images, and the evidence: each fit's leave-one-out probe accuracy
    at its best cut, and the images only one of the two classifies right."""

    fit: str
    reason: str
    widest: float | None = None  # the largest aspect ratio among the sample's images (None: not looked at)
    crop: float | None = None
    squash: float | None = None
    only_crop: int = 0  # images the cropped probe gets right and the squashed one wrong
    only_squash: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def widest_aspect(images: ImageSet) -> float:
    """The largest aspect ratio (longer side over shorter) among ``images``, read from their headers
    (an unreadable one is left to whoever decodes it)."""
    widest = 1.0
    for i in range(len(images)):
        try:
            widest = max(widest, aspect_ratio(images.size(i)))
        except UNREADABLE:
            continue
    return widest


def _best_correct(blocks: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Per image, whether the leave-one-out probe at the cut that probes best classifies it right."""
    return max((probe_correct(block, labels) for block in blocks), key=lambda correct: correct.mean())


def compare_fits(cropped: list[np.ndarray], squashed: list[np.ndarray], labels: np.ndarray, widest: float) -> FitCheck:
    """Squash where its probe (features at every cut of the same images, ``squashed``) classifies
    more of the images right than the crop's (``cropped``), counting the images one gets right and
    the other wrong; else (a tie too) crop, what every strategy does by default. Two ways of
    showing the same images, neither favoured: the one the user's images favour is taken."""
    crop, squash = _best_correct(cropped, labels), _best_correct(squashed, labels)
    only_crop, only_squash = int(np.sum(crop & ~squash)), int(np.sum(squash & ~crop))
    fit = "squash" if only_squash > only_crop else "crop"
    reason = (f"images up to {widest:.2f}:1; the whole image stretched square probed {squash.mean():.1%} against "
              f"{crop.mean():.1%} for the centre cropped ({only_squash} images right only stretched, {only_crop} only "
              f"cropped): {fit}")  # fmt: skip
    return FitCheck(fit, reason, widest, float(crop.mean()), float(squash.mean()), only_crop, only_squash)


def square_check(widest: float) -> FitCheck:
    """The check of images that are square already: cropped, nothing to compare."""
    return FitCheck("crop", f"square images (up to {widest:.2f}:1): the centre cropped, nothing cut off", widest)


def choose_fit(backbone: Backbone, weights_digest: str, sample: ImageSet, cropped: list[np.ndarray], resolution: int,
               cache: FeatureCache | None, engine: Engine | None, given: str | None = None,
               ) -> tuple[FitCheck, ImageSet, list[np.ndarray]]:  # fmt: skip
    """The fit for ``sample``'s images (cropped, with ``cropped`` their features at every cut), the
    sample made square by it and its features at every cut: a second frozen pass, stretched square,
    where the images are not square already. A fit ``given`` by the user (the sample is made square
    by it already) is kept without a look."""
    if given is not None:
        return FitCheck(given, f"--fit {given}, as given"), sample, cropped
    widest = widest_aspect(sample)
    if widest <= SQUARE:
        return square_check(widest), sample, cropped
    squashed_sample = sample.with_fit("squash")
    squashed, labels = features_at_every_cut(backbone, weights_digest, squashed_sample, resolution, cache, engine)
    check = compare_fits(cropped, squashed, labels, widest)
    log.info("fit: %s", check.reason)
    return (check, squashed_sample, squashed) if check.fit == "squash" else (check, sample, cropped)
