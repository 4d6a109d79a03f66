"""The advisor: measure data size and domain similarity per depth, then choose strategy and cut.

One pass of the frozen backbone over a per-class sample of the training data yields the pooled
features at every cut point at once (cached like any features); one more pass does the same for
its random twin (the architecture with random weights). Per cut: a linear probe's leave-one-out
accuracy on each, LogME (see ``signals``), and the BatchNorm statistic gap. The plan answers
three questions, the seed's four cases among them:

* does pretraining help? When its *transfer gain* (best pretrained probe minus best random
  probe) is below a threshold, frozen features are no better than random ones, so the body must
  be trained: ``scratch`` with enough data, else ``finetune``;
* is the data small? Then keep the body frozen: ``head`` when the data is *similar* (the final
  cut probes within a margin of the best cut), else ``truncate`` at the best cut;
* otherwise ``finetune`` (with BatchNorm statistics fixed).

The thresholds (``Thresholds``) are calibrated by ``transferlab study``.
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



@dataclass(frozen=True)
class Thresholds:
    """Where "small" ends, when pretraining counts as no help, when scratch pays, how close counts
    as "similar".

    The defaults are what ``study.calibrate`` found on the full ``transferlab study``'s 10 cells
    together with the 6 of ``benchmarks/study_holdout.py`` (30 and 300 per class; README, "The
    study"): with transfer gain, 10 images per class were best kept frozen (or within 0.3 points)
    and 30 already best fine-tuned; without it, scratch lost at 30 per class on Fashion-MNIST (won
    on digits) and won or tied from 100; the transfer gains fell in two groups, 0.24-0.27
    (ImageNet Lite0) and -0.04-0.02 (the cnn-small source), with 0.1 between them.
    """

    small_data: int = 20  # fewer training images per class than this: small
    scratch: int = 100  # without transfer gain, scratch from this many images per class, else finetune
    transfer_gain: float = 0.1  # pretraining adding less than this to the best probe accuracy: no gain
    similarity_margin: float = 0.02  # final cut's probe accuracy within this of the best cut's: similar


BATCHNORM_SAMPLE = 256


@dataclass(frozen=True)
class CutEvidence:
    cut: str
    channels: int
    probe_accuracy: float
    random_probe_accuracy: float  # the same probe on the features of randomly initialized weights
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
    freeze_bn: bool  # finetune with BatchNorm statistics fixed, as the study measured it
    small: bool
    similar: bool
    transfer_gain: float
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


def _sample_batches(images, resolution: int):
    """Unit-float batches of the first ``BATCHNORM_SAMPLE`` images."""
    sample = images.subset(np.arange(min(BATCHNORM_SAMPLE, len(images))))
    decoded = DecodedImages(sample, resolution)
    for start in range(0, len(sample), 64):
        yield to_unit_float(torch.stack([decoded[i][0] for i in range(start, min(start + 64, len(sample)))]))


def _batchnorm_gaps(backbone: Backbone, images, resolution: int) -> dict[str, float]:
    """Mean BatchNorm gap of the layers of each cut point, on up to 256 images."""
    model = AllCuts(backbone).eval()
    with BatchNormGap(backbone.model) as probe, torch.inference_mode():
        for batch in _sample_batches(images, resolution):
            model(batch)
    gaps, stage_of = probe.gaps(), _stage_of_batchnorms(backbone)
    by_cut: dict[str, list[float]] = {}
    for layer, gap in gaps.items():
        by_cut.setdefault(stage_of[layer], []).append(gap)
    return {cut: float(np.mean(values)) for cut, values in by_cut.items()}


def random_twin(name: str, images, resolution: int, seed: int = 0) -> Backbone:
    """The backbone's architecture with random weights, its BatchNorm statistics set on up to 256
    of ``images``, so that activations keep their scale through the depth as in a trained
    network: the baseline that tells what pretraining adds over the architecture alone (random
    features are a strong baseline on simple images: Jarrett, Kavukcuoglu, Ranzato, LeCun, "What
    is the best multi-stage architecture for object recognition?", ICCV 2009)."""
    torch.manual_seed(seed)
    twin = build_backbone(name, pretrained=False)
    model = AllCuts(twin).eval()
    batchnorms = [m for m in twin.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in batchnorms:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the sample
        layer.train()
    with torch.no_grad():
        for batch in _sample_batches(images, resolution):
            model(batch)
    model.eval()
    return twin


def _resolution(backbone: Backbone, images, override: int | None) -> int:
    """The backbone's resolution, or 4x the images' own size when they are much smaller (min 64)."""
    if override:
        return override
    side = min(images.open(0).size)
    native = backbone.preprocessing.resolution
    return max(64, min(native, 4 * side)) if side * 2 < native else native


def _features_at_every_cut(backbone: Backbone, images, resolution: int, cache: FeatureCache | None):
    """(pooled features of the readable images at each cut point, their labels)."""
    model = AllCuts(backbone)
    fingerprint = f"allcuts|{backbone.weights_fingerprint()}|{backbone.preprocessing.mean}|{backbone.preprocessing.std}"
    features, _ = cached_features(model, fingerprint, images, resolution, cache, desc="advise")
    values = np.asarray(features.values[features.valid])
    ends = np.cumsum([cut.channels for cut in backbone.cut_points])
    return np.split(values, ends[:-1], axis=1), images.labels[features.valid]


def measure(backbone: Backbone, images, resolution: int, cache: FeatureCache | None, seed: int = 0) -> list[CutEvidence]:
    """Probe accuracy (pretrained and random weights), LogME and BatchNorm gap at every cut point
    of ``backbone`` on ``images``."""
    pretrained, labels = _features_at_every_cut(backbone, images, resolution, cache)
    random, _ = _features_at_every_cut(random_twin(backbone.name, images, resolution, seed), images, resolution, cache)
    gaps = _batchnorm_gaps(backbone, images, resolution)
    return [
        CutEvidence(
            cut.name, cut.channels, probe_accuracy(block, labels), probe_accuracy(random_block, labels),
            logme(block, labels), gaps.get(cut.name),
        )
        for cut, block, random_block in zip(backbone.cut_points, pretrained, random)
    ]  # fmt: skip


def _best(evidence: list[CutEvidence]) -> CutEvidence:
    return max(evidence, key=lambda e: (e.probe_accuracy, e.logme))


def transfer_gain(evidence: list[CutEvidence]) -> float:
    """What pretraining adds: the best probe accuracy on the pretrained features minus the best on
    the random twin's."""
    return max(e.probe_accuracy for e in evidence) - max(e.random_probe_accuracy for e in evidence)


def decide(images_per_class: int, evidence: list[CutEvidence], thresholds: Thresholds = Thresholds()) -> tuple[str, str, bool, bool]:
    """(strategy, cut, small, similar) from the data size and the per-cut evidence (last = final cut)."""
    final, best = evidence[-1], _best(evidence)
    small = images_per_class < thresholds.small_data
    similar = final.probe_accuracy >= best.probe_accuracy - thresholds.similarity_margin
    if transfer_gain(evidence) < thresholds.transfer_gain:  # frozen, the body is as good as random: train it
        return ("scratch" if images_per_class >= thresholds.scratch else "finetune"), FINAL_CUT, small, similar
    if small:
        return ("head", FINAL_CUT, small, similar) if similar else ("truncate", best.cut, small, similar)
    return "finetune", FINAL_CUT, small, similar


def _explain(plan_fields: dict, evidence: list[CutEvidence], thresholds: Thresholds) -> str:
    final, best = evidence[-1], _best(evidence)
    size = "small" if plan_fields["small"] else "large"
    why_similar = (
        f"the final features probe best of all cuts ({final.probe_accuracy:.1%}): the deep features suit the data"
        if best.cut == final.cut
        else f"the final features probe at {final.probe_accuracy:.1%}, within {thresholds.similarity_margin:.0%} of the "
        f"best cut ({best.cut}, {best.probe_accuracy:.1%}): the deep features suit the data"
        if plan_fields["similar"]
        else f"an earlier cut ({best.cut}) probes at {best.probe_accuracy:.1%} against {final.probe_accuracy:.1%} "
        f"for the final features: the deep features are specialised to the source"
    )
    gain = transfer_gain(evidence)
    return (
        f"{plan_fields['images_per_class']} training images per class is {size} (threshold {thresholds.small_data}); "
        f"{why_similar}; pretraining adds {gain:+.1%} to the best probe accuracy over the same network with random "
        f"weights (under {thresholds.transfer_gain:.0%}, the body is trained: scratch from {thresholds.scratch} images "
        f"per class, else finetune). Hence '{plan_fields['strategy']}' at cut '{plan_fields['cut']}'. Check it: 'probe' is the "
        f"leave-one-out accuracy of a linear classifier on the sample's features at each depth, 'random' the same on "
        f"the random network; LogME ranks the depths without training; a large BatchNorm gap means the target's "
        f"activations at that depth look unlike the source's."
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
    thresholds: Thresholds = Thresholds(),
) -> Plan:
    """Measure ``data`` against ``backbone`` and return the plan (see the module's docstring).

    ``samples_per_class``: the training will use at most this many images per class, so the data
    counts as that size and the measurements see no more than that either.
    """
    dataset = load_dataset(data, data_dir)
    if classes:
        dataset = select_classes(dataset, classes)
    pool = dataset.train
    counts = pool.counts()
    net = build_backbone(backbone, True, weights)
    sample = per_class_subset(pool, min(sample_per_class, samples_per_class or sample_per_class), seed)
    size = _resolution(net, sample, resolution)
    cache = FeatureCache(cache_dir) if cache_dir else FeatureCache()
    evidence = measure(net, sample, size, cache, seed)
    per_class = int(np.median(np.minimum(counts, samples_per_class or counts.max())))
    strategy, cut, small, similar = decide(per_class, evidence, thresholds)
    epochs, lr = STRATEGY_DEFAULTS[strategy]
    fields = {"strategy": strategy, "cut": cut, "small": small, "similar": similar, "images_per_class": per_class}
    return Plan(
        strategy=strategy, cut=cut, lr=lr, epochs=epochs, resolution=size, backbone=backbone,
        images_per_class=per_class, class_balance=float(counts.min() / counts.max()),
        freeze_bn=strategy == "finetune", small=small, similar=similar, transfer_gain=transfer_gain(evidence),
        evidence=tuple(evidence), explanation=_explain(fields, evidence, thresholds), thresholds=asdict(thresholds),
    )  # fmt: skip


def evidence_table(plan: Plan) -> str:
    lines = [f"{'cut':<10} {'channels':>8} {'probe':>7} {'random':>7} {'LogME':>8} {'BN gap':>8}"]
    for e in plan.evidence:
        gap = f"{e.batchnorm_gap:8.3f}" if e.batchnorm_gap is not None else f"{'-':>8}"
        marker = "  <- plan" if e.cut == plan.cut else ""
        lines.append(f"{e.cut:<10} {e.channels:>8} {e.probe_accuracy:>7.4f} {e.random_probe_accuracy:>7.4f} "
                     f"{e.logme:>8.3f} {gap}{marker}")  # fmt: skip
    return "\n".join(lines)


def apply_plan(config, plan: Plan):
    """The TrainConfig that carries out ``plan`` (fields the user set explicitly are kept)."""
    return dataclasses.replace(
        config, strategy=plan.strategy, plan=None, cut=plan.cut if plan.strategy == "truncate" else None,
        epochs=config.epochs or plan.epochs, lr=config.lr or plan.lr,
        resolution=config.resolution or plan.resolution, backbone=plan.backbone,
        freeze_bn=config.freeze_bn or plan.freeze_bn,
    )  # fmt: skip
