"""The advisor: measure data size and domain similarity per depth, then choose strategy and cut.

One pass of the frozen backbone over a per-class sample of the training data yields the pooled
features at every cut point at once (cached like any features). From them, per cut: a linear
probe's held-out accuracy and LogME (see ``signals``); from a pass over 256 images, the
BatchNorm statistic gap per stage. The plan follows the seed's four cases:

* small and similar -> ``head``; small and different -> ``truncate`` at the best cut;
* large and similar -> ``finetune``; large and different -> ``scratch`` (or ``finetune`` when
  there is not enough data for scratch).

"Similar" means the deepest features are as good as any earlier ones (the final cut's probe
accuracy within ``SIMILARITY_MARGIN`` of the best cut's). "Small" means fewer training images per
class than ``SMALL_DATA_THRESHOLD``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbones import FINAL_CUT, Backbone, build_backbone
from .data import load_dataset, per_class_subset, select_classes
from .features import DecodedImages, FeatureCache, cached_features, to_unit_float
from .signals import BatchNormGap, logme, probe_accuracy
from .surgery import Normalize
from .workflow import STRATEGY_DEFAULTS

log = logging.getLogger(__name__)

# Calibration (measured, see README "Strategies, measured"): on Fashion-MNIST from ImageNet
# EfficientNet-Lite0 at 112 px and 100 images per class, fine-tuning with BatchNorm statistics
# free did not beat the frozen head (0.8230 vs 0.8238 test accuracy) and with them fixed beat it by
# one point (0.8336): 100 per class is the break-even, so "large" starts above it.
SMALL_DATA_THRESHOLD = 200
SCRATCH_THRESHOLD = 1000  # scratch only with at least this many images per class
SIMILARITY_MARGIN = 0.02
BATCHNORM_SAMPLE = 256


@dataclass(frozen=True)
class CutEvidence:
    cut: str
    channels: int
    probe_accuracy: float
    logme: float
    batchnorm_gap: float | None


@dataclass(frozen=True)
class Plan:
    """What to train and why. Saved as ``plan.json``; ``train --strategy auto --plan FILE`` reruns it."""

    strategy: str
    cut: str
    lr: float
    epochs: int
    resolution: int
    backbone: str
    images_per_class: int
    class_balance: float  # smallest class / largest class
    freeze_bn: bool  # finetune with BatchNorm statistics fixed (measured better below SCRATCH_THRESHOLD per class)
    small: bool
    similar: bool
    evidence: tuple[CutEvidence, ...]
    explanation: str
    thresholds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict) -> Plan:
        data = dict(data)
        data["evidence"] = tuple(CutEvidence(**e) for e in data["evidence"])
        return Plan(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path


class AllCuts(nn.Module):
    """Normalize, then the pooled features of every cut point at once, concatenated."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.normalize = Normalize(backbone.preprocessing.mean, backbone.preprocessing.std)
        self.model = backbone.model
        self.stages = len(backbone.cut_points) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if self.stages == 0:
            return self.model(x)
        final, stages = self.model.forward_intermediates(x, indices=list(range(self.stages)), intermediates_only=False)
        if hasattr(self.model, "forward_head"):
            final = self.model.forward_head(final, pre_logits=True)
        elif final.ndim == 4:
            final = final.mean((2, 3))
        return torch.cat([s.mean((2, 3)) for s in stages] + [final], 1)


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


def _batchnorm_gaps(backbone: Backbone, images, resolution: int) -> dict[str, float]:
    """Mean BatchNorm gap of the layers of each cut point, on up to 256 images."""
    sample = images.subset(np.arange(min(BATCHNORM_SAMPLE, len(images))))
    decoded = DecodedImages(sample, resolution)
    model = AllCuts(backbone).eval()
    with BatchNormGap(backbone.model) as probe, torch.inference_mode():
        for start in range(0, len(sample), 64):
            batch = torch.stack([decoded[i][0] for i in range(start, min(start + 64, len(sample)))])
            model(to_unit_float(batch))
    gaps, stage_of = probe.gaps(), _stage_of_batchnorms(backbone)
    by_cut: dict[str, list[float]] = {}
    for layer, gap in gaps.items():
        by_cut.setdefault(stage_of[layer], []).append(gap)
    return {cut: float(np.mean(values)) for cut, values in by_cut.items()}


def _resolution(backbone: Backbone, images, override: int | None) -> int:
    """The backbone's resolution, or 4x the images' own size when they are much smaller (min 64)."""
    if override:
        return override
    side = min(images.open(0).size)
    native = backbone.preprocessing.resolution
    return max(64, min(native, 4 * side)) if side * 2 < native else native


def measure(backbone: Backbone, images, resolution: int, cache: FeatureCache | None) -> list[CutEvidence]:
    """Probe accuracy, LogME and BatchNorm gap at every cut point of ``backbone`` on ``images``."""
    model = AllCuts(backbone)
    fingerprint = f"allcuts|{backbone.weights_fingerprint()}|{backbone.preprocessing.mean}|{backbone.preprocessing.std}"
    features, _ = cached_features(model, fingerprint, images, resolution, cache, desc="advise")
    values, labels = np.asarray(features.values[features.valid]), images.labels[features.valid]
    gaps = _batchnorm_gaps(backbone, images, resolution)
    evidence, offset = [], 0
    for cut in backbone.cut_points:
        block = values[:, offset : offset + cut.channels]
        offset += cut.channels
        evidence.append(CutEvidence(cut.name, cut.channels, probe_accuracy(block, labels), logme(block, labels),
                                    gaps.get(cut.name)))  # fmt: skip
    return evidence


def _best(evidence: list[CutEvidence]) -> CutEvidence:
    return max(evidence, key=lambda e: (e.probe_accuracy, e.logme))


def decide(images_per_class: int, evidence: list[CutEvidence]) -> tuple[str, str, bool, bool]:
    """(strategy, cut, small, similar) from the data size and the per-cut evidence (last = final cut)."""
    final, best = evidence[-1], _best(evidence)
    small = images_per_class < SMALL_DATA_THRESHOLD
    similar = final.probe_accuracy >= best.probe_accuracy - SIMILARITY_MARGIN
    if small:
        return ("head", FINAL_CUT, small, similar) if similar else ("truncate", best.cut, small, similar)
    if similar or images_per_class < SCRATCH_THRESHOLD:
        return "finetune", FINAL_CUT, small, similar
    return "scratch", FINAL_CUT, small, similar


def _explain(plan_fields: dict, best: CutEvidence, final: CutEvidence) -> str:
    size = "small" if plan_fields["small"] else "large"
    similar = "similar to" if plan_fields["similar"] else "different from"
    why_similar = (
        f"the final features probe at {final.probe_accuracy:.1%}, within {SIMILARITY_MARGIN:.0%} of the best cut "
        f"({best.cut}, {best.probe_accuracy:.1%})"
        if plan_fields["similar"]
        else f"an earlier cut ({best.cut}) probes at {best.probe_accuracy:.1%} against {final.probe_accuracy:.1%} "
        f"for the final features, so the deep features are specialised to the source"
    )
    return (
        f"{plan_fields['images_per_class']} training images per class is {size} "
        f"(threshold {SMALL_DATA_THRESHOLD}), and the data looks {similar} the backbone's source data: "
        f"{why_similar}. Hence '{plan_fields['strategy']}' at cut '{plan_fields['cut']}'. Check it: the probe "
        f"column is what a frozen head reaches at each depth on a held-out part of the sample; LogME ranks the "
        f"same depths without training; a large BatchNorm gap means the target's activations at that depth look "
        f"unlike the source's."
    )


def advise(
    data: str,
    backbone: str = "efficientnet_lite0",
    weights: str | None = None,
    classes: str | None = None,
    sample_per_class: int = 50,
    resolution: int | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    samples_per_class: int | None = None,
) -> Plan:
    """Measure ``data`` against ``backbone`` and return the plan (see the module's docstring).

    ``samples_per_class``: the training will use at most this many images per class, so the data
    counts as that size.
    """
    dataset = load_dataset(data, data_dir)
    if classes:
        dataset = select_classes(dataset, classes)
    pool = dataset.train
    counts = pool.counts()
    net = build_backbone(backbone, True, weights)
    sample = per_class_subset(pool, sample_per_class, seed)
    size = _resolution(net, sample, resolution)
    cache = FeatureCache(cache_dir) if cache_dir else FeatureCache()
    evidence = measure(net, sample, size, cache)
    per_class = int(np.median(np.minimum(counts, samples_per_class or counts.max())))
    strategy, cut, small, similar = decide(per_class, evidence)
    final, best = evidence[-1], _best(evidence)
    epochs, lr = STRATEGY_DEFAULTS[strategy]
    fields = {"strategy": strategy, "cut": cut, "small": small, "similar": similar, "images_per_class": per_class}
    return Plan(
        strategy=strategy, cut=cut, lr=lr, epochs=epochs, resolution=size, backbone=backbone,
        images_per_class=per_class, class_balance=float(counts.min() / counts.max()),
        freeze_bn=strategy == "finetune" and per_class < SCRATCH_THRESHOLD, small=small, similar=similar,
        evidence=tuple(evidence), explanation=_explain(fields, best, final),
        thresholds={"small_data": SMALL_DATA_THRESHOLD, "scratch": SCRATCH_THRESHOLD, "similarity_margin": SIMILARITY_MARGIN},
    )  # fmt: skip


def evidence_table(plan: Plan) -> str:
    lines = [f"{'cut':<10} {'channels':>8} {'probe acc':>10} {'LogME':>8} {'BN gap':>8}"]
    for e in plan.evidence:
        gap = f"{e.batchnorm_gap:8.3f}" if e.batchnorm_gap is not None else f"{'-':>8}"
        marker = "  <- plan" if e.cut == plan.cut else ""
        lines.append(f"{e.cut:<10} {e.channels:>8} {e.probe_accuracy:>10.4f} {e.logme:>8.3f} {gap}{marker}")
    return "\n".join(lines)


def apply_plan(config, plan: Plan):
    """The TrainConfig that carries out ``plan`` (fields the user set explicitly are kept)."""
    return dataclasses.replace(
        config, strategy=plan.strategy, plan=None, cut=plan.cut if plan.strategy == "truncate" else None,
        epochs=config.epochs or plan.epochs, lr=config.lr or plan.lr,
        resolution=config.resolution or plan.resolution, backbone=plan.backbone,
        freeze_bn=config.freeze_bn or plan.freeze_bn,
    )  # fmt: skip
