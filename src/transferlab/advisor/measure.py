"""The advisor's measurements: per cut point, on a per-class sample of the training split.

One pass of the frozen backbone over the sample yields the pooled features at every cut point at
once (cached like any features); one more pass does the same for its random twin (the
architecture with random weights). Per cut: a linear probe's leave-one-out accuracy on each,
LogME (see ``signals``), and the BatchNorm statistic gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..backbones import Backbone, build_architecture
from ..data import ImageSet
from ..features import FeatureCache, cached_features, run_batch
from ..plan import CutEvidence
from ..transferability import BatchNormGap, leep, logme, probe_accuracy
from ..strategies import FINAL_CUT
from ..surgery import MultiCut, Normalize

log = logging.getLogger(__name__)

Engine = Callable[[nn.Module, dict], nn.Module]  # (a frozen pass, its cache key's parts) -> the pass on an engine
BATCHNORM_SAMPLE = 64  # images, spread over the sample: per-channel statistics over 64 x H x W values each


def all_cuts(backbone: Backbone) -> nn.Module:
    """Normalize, then the pooled features of every cut point at once, concatenated (the backbone's
    own network, not a copy: BatchNorm probes hook into it), on the device the backbone is on (an
    earlier frozen pass may have moved it to a GPU)."""
    device = next(backbone.model.parameters()).device
    normalize = Normalize(backbone.preprocessing.mean, backbone.preprocessing.std).to(device)
    names = [c.name for c in backbone.cut_points]
    return nn.Sequential(normalize, MultiCut(backbone.model, names, names))


def _stage_of_batchnorms(backbone: Backbone) -> dict[str, str]:
    """Each BatchNorm layer's cut point: the first cut whose module ends at or after it."""
    names = [n for n, _ in backbone.model.named_modules()]
    ends = []
    for cut in backbone.cut_points[:-1]:
        inside = [i for i, n in enumerate(names) if n == cut.name or n.startswith(cut.name + ".")]
        ends.append((max(inside) if inside else -1, cut.name))
    stage = {}
    for position, (name, module) in enumerate(backbone.model.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            stage[name] = next((cut for end, cut in ends if position <= end), FINAL_CUT)
    return stage


def _run_over(model: nn.Module, pixels: torch.Tensor) -> None:
    """``model``, in its current mode, over ``BATCHNORM_SAMPLE`` of the decoded images, evenly spaced
    (the sample is ordered by class)."""
    spread = np.linspace(0, len(pixels) - 1, min(len(pixels), BATCHNORM_SAMPLE)).round().astype(int)
    run_batch(model, pixels[torch.from_numpy(spread)])


def _batchnorm_gaps(backbone: Backbone, pixels: torch.Tensor) -> dict[str, float]:
    """Mean BatchNorm gap of the layers of each cut point, on ``BATCHNORM_SAMPLE`` images."""
    model = all_cuts(backbone).eval()
    with BatchNormGap(backbone.model) as probe:
        _run_over(model, pixels)
    gaps, stage_of = probe.gaps(), _stage_of_batchnorms(backbone)
    by_cut: dict[str, list[float]] = {}
    for layer, gap in gaps.items():
        by_cut.setdefault(stage_of[layer], []).append(gap)
    return {cut: float(np.mean(values)) for cut, values in by_cut.items()}


def random_twin(backbone: Backbone, pixels: torch.Tensor, seed: int = 0) -> Backbone:
    """The backbone's architecture with random weights, its BatchNorm statistics set on
    ``BATCHNORM_SAMPLE`` of the decoded images ``pixels``, so that activations keep their scale
    through the depth as in a trained network: the baseline that tells what pretraining adds over the architecture
    alone (random features are a strong baseline on simple images: Jarrett, Kavukcuoglu, Ranzato,
    LeCun, "What is the best multi-stage architecture for object recognition?", ICCV 2009)."""
    torch.manual_seed(seed)
    twin = Backbone(backbone.name, backbone.arch, build_architecture(backbone.arch), backbone.preprocessing,
                    list(backbone.cut_points), "random init")  # fmt: skip
    model = all_cuts(twin)
    for layer in (m for m in twin.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the sample
    model.train()
    _run_over(model, pixels)
    model.eval()
    return twin


def measurement_resolution(backbone: Backbone, images: ImageSet, override: int | None) -> int:
    """The backbone's resolution, or 4x the images' own size when they are much smaller (min 64)."""
    if override:
        return override
    side = min(images.open(0).size)
    native = backbone.preprocessing.resolution
    return max(64, min(native, 4 * side)) if side * 2 < native else native


def features_at_every_cut(backbone: Backbone, weights_digest: str, images: ImageSet, resolution: int,
                           cache: FeatureCache | None, engine: Engine | None = None) -> tuple[list[np.ndarray], np.ndarray]:  # fmt: skip
    """(pooled features of the readable images at each cut point, their labels); ``engine(module,
    parts)`` runs the frozen pass on another engine (PyTorch without one)."""
    preprocessing = backbone.preprocessing
    parts = {"weights": weights_digest, "cut": "all", "mean": preprocessing.mean, "std": preprocessing.std}
    extractor = all_cuts(backbone) if engine is None else engine(all_cuts(backbone), parts)
    features, _ = cached_features(extractor, parts, images, resolution, cache, desc="advise")
    values, labels = features.readable(images.labels)
    ends = np.cumsum([cut.channels for cut in backbone.cut_points])
    return np.split(values, ends[:-1], axis=1), labels


def measure(backbone: Backbone, pretrained: list[np.ndarray], labels: np.ndarray, images: ImageSet, resolution: int,
            cache: FeatureCache | None, seed: int = 0, twin: bool = True, engine: Engine | None = None) -> list[CutEvidence]:  # fmt: skip
    """Probe accuracy, LogME and - with ``twin`` - the random twin's probe accuracy and the BatchNorm
    gap at every cut point of ``backbone``, from its features at every cut (``pretrained``, of the
    readable ``images``, labelled ``labels``). Without ``twin`` (no second pass, for ranking) those
    two are NaN and ``None``."""
    random, gaps = [np.full((len(labels), 1), np.nan)] * len(pretrained), {}
    if twin:
        decoded, _ = cached_features(None, {}, images, resolution, cache, desc="decode sample")
        pixels = torch.from_numpy(decoded.readable(images.labels)[0])
        random_twin_ = random_twin(backbone, pixels, seed)
        random, _ = features_at_every_cut(random_twin_, random_twin_.weights_fingerprint(), images, resolution, cache,
                                          engine)  # fmt: skip
        gaps = _batchnorm_gaps(backbone, pixels)
    return [
        CutEvidence(
            cut.name, cut.channels, probe_accuracy(block, labels),
            probe_accuracy(random_block, labels) if twin else float("nan"), logme(block, labels), gaps.get(cut.name),
            images=len(labels),
        )
        for cut, block, random_block in zip(backbone.cut_points, pretrained, random)
    ]  # fmt: skip


LEARNING_CURVE_SHARES = (0.25, 0.5, 1.0)


def probe_learning_curve(block: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[tuple[int, float], ...]:
    """The probe's leave-one-out accuracy on a quarter, a half and all of the rows (per class,
    nested, seeded): what more labelled data bought, a hint of what it would buy next."""
    order = np.random.default_rng(seed).permutation(len(labels))
    per_class = int(np.bincount(labels).min())
    curve = {}
    for share in LEARNING_CURVE_SHARES:
        keep = max(2, round(per_class * share))
        rows = np.sort(np.concatenate([order[labels[order] == c][:keep] for c in np.unique(labels)]))
        curve[keep] = probe_accuracy(block[rows], labels[rows])  # a small class can make two shares the same size
    return tuple(curve.items())


def source_leep(backbone: Backbone, final_features: np.ndarray, labels: np.ndarray) -> float | None:
    """LEEP of the backbone's own source classifier on its ``final_features`` (``None`` without one)."""
    if backbone.source_classifier is None:
        return None
    with torch.no_grad():
        probabilities = torch.softmax(backbone.source_classifier(torch.from_numpy(np.asarray(final_features))), 1)
    return leep(probabilities.numpy(), labels)
