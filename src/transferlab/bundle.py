"""A trained model on disk: ``model.safetensors`` (tensors only) and ``bundle.json`` (the rest).

Loading never unpickles: the JSON names the architecture, which is rebuilt without weights,
and the safetensors file fills it. The JSON records the file's SHA-256, checked on load, and the
taps the head reads (each cut point, its width and pooling), so that a head over several cuts
rebuilds like a head over one. Format 1 (no taps: one cut) still loads.

An ensemble (format 3) is a folder of bundles: each member a bundle of its own in a subfolder, and
a ``bundle.json`` naming them with their temperatures (:class:`.ensemble.Ensemble`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import safetensors.torch
import torch

from .backbones import Backbone, CutPoint, Preprocessing, build_architecture
from .ensemble import Ensemble
from .errors import BundleError
from .heads import LinearHead
from .surgery import TransferModel, body_over

FORMAT_VERSION = 2
ENSEMBLE_FORMAT_VERSION = 3  # a folder of member bundles
READABLE_VERSIONS = (1, 2, 3)  # 1: a head on one cut, described by ``cut`` and ``num_features``
WEIGHTS_FILE = "model.safetensors"
META_FILE = "bundle.json"


@dataclass(frozen=True)
class Tap:
    """One cut point a head reads: its name, its width and how its map is pooled."""

    cut: str
    channels: int
    pooling: str = "avg"


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: the subfolder of its bundle, the temperature its logits are divided by
    and its weight in the average (bundles before weights: 1, equal)."""

    folder: str
    temperature: float
    weight: float = 1.0


@dataclass(frozen=True)
class BundleInfo:
    """Everything but the tensors: enough to rebuild the network and use it."""

    classes: tuple[str, ...]
    preprocessing: Preprocessing
    backbone: str  # the name the user gave
    arch: str  # "timm:NAME" / "torchvision:NAME"
    cut: str
    cut_points: tuple[CutPoint, ...]
    num_features: int
    head_dropout: float
    head_init: str
    strategy: str
    taps: tuple[Tap, ...] = ()  # the cut points the head reads, in order (default: ``cut`` alone)
    members: tuple[Member, ...] = ()  # an ensemble's models (then the fields above describe its last member)

    def __post_init__(self):
        if not self.taps:
            object.__setattr__(self, "taps", (Tap(self.cut, self.num_features),))

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict) -> BundleInfo:
        data = dict(data)
        data["taps"] = tuple(Tap(**t) for t in data.get("taps", ()))
        data["members"] = tuple(Member(**m) for m in data.get("members", ()))
        data["classes"] = tuple(data["classes"])
        given = data["preprocessing"]
        data["preprocessing"] = Preprocessing(given["resolution"], tuple(given["mean"]), tuple(given["std"]),
                                              given.get("fit", "crop"))  # a bundle of an older release: cropped
        data["cut_points"] = tuple(CutPoint(**c) for c in data["cut_points"])
        return BundleInfo(**data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_meta(directory: Path, meta: dict) -> None:
    (directory / (META_FILE + ".tmp")).write_text(json.dumps(meta, indent=2))
    os.replace(directory / (META_FILE + ".tmp"), directory / META_FILE)


def _fresh_folder(directory: Path) -> None:
    """``directory`` created, without the exports of an earlier model in it."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("model.onnx", "model.torchscript.pt", "model.int8.onnx"):
        (directory / stale).unlink(missing_ok=True)


def save_bundle(directory: str | Path, model: TransferModel, info: BundleInfo) -> Path:
    """Write the bundle into ``directory`` (created); files are renamed into place when complete."""
    directory = Path(directory)
    _fresh_folder(directory)
    weights = directory / WEIGHTS_FILE
    safetensors.torch.save_model(model, str(weights) + ".tmp")
    os.replace(str(weights) + ".tmp", weights)
    _write_meta(directory, {"format_version": FORMAT_VERSION, "weights_sha256": _sha256(weights), **info.to_json()})
    return directory


def save_ensemble(directory: str | Path, members: dict[str, tuple[TransferModel, BundleInfo]], temperatures: list[float],
                  info: BundleInfo, weights: list[float] | None = None) -> Path:  # fmt: skip
    """Write an ensemble into ``directory``: each member's bundle into the subfolder named by its key,
    then the ``bundle.json`` that names them (``info``: the ensemble's, its members filled in here)."""
    directory = Path(directory)
    _fresh_folder(directory)
    (directory / WEIGHTS_FILE).unlink(missing_ok=True)  # a single model's weights saved here before
    for folder, (model, member_info) in members.items():
        save_bundle(directory / folder, model, member_info)
    weights = weights or [1.0] * len(members)
    listed = tuple(Member(folder, float(t), float(w)) for folder, t, w in zip(members, temperatures, weights))
    _write_meta(directory, {"format_version": ENSEMBLE_FORMAT_VERSION, **replace(info, members=listed).to_json()})
    return directory


def read_info(directory: str | Path) -> tuple[BundleInfo, dict]:
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise BundleError(f"{directory} is not a transferlab model: {META_FILE} is missing.")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") not in READABLE_VERSIONS:
            raise BundleError(f"{meta_path}: format_version {meta.get('format_version')}, this transferlab reads "
                              f"{', '.join(map(str, READABLE_VERSIONS))}.")  # fmt: skip
        fields = {k: v for k, v in meta.items() if k not in ("format_version", "weights_sha256")}
        return BundleInfo.from_json(fields), meta
    except (ValueError, KeyError, TypeError) as error:
        raise BundleError(f"{meta_path} is malformed: {error}") from error


def load_bundle(directory: str | Path) -> tuple[TransferModel | Ensemble, BundleInfo]:
    """Rebuild the model saved in ``directory`` (an ensemble: each member from its subfolder);
    refuse tampered or mismatched files."""
    directory = Path(directory)
    info, meta = read_info(directory)
    if info.members:
        members = [load_bundle(directory / member.folder)[0] for member in info.members]
        return Ensemble(members, [member.temperature for member in info.members],
                        [member.weight for member in info.members]).eval(), info  # fmt: skip
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{directory}: {WEIGHTS_FILE} is missing.")
    if _sha256(weights) != meta.get("weights_sha256"):
        raise BundleError(f"{weights} does not match the checksum in {META_FILE}: the file was changed or damaged.")
    backbone = Backbone(info.backbone, info.arch, build_architecture(info.arch), info.preprocessing,
                        list(info.cut_points), "bundle")  # fmt: skip
    pooling = {t.pooling for t in info.taps} - {"avg"}
    if pooling:
        raise BundleError(f"{directory}: taps pooled by {', '.join(sorted(pooling))}; this transferlab pools by avg only.")
    head = LinearHead(sum(t.channels for t in info.taps), len(info.classes), info.head_dropout)
    model = TransferModel(body_over(backbone, [t.cut for t in info.taps]), head, info.preprocessing)
    expected = model.state_dict()
    saved = safetensors.torch.load_file(weights)
    problems = [f"missing {k}" for k in expected if k not in saved]
    problems += [f"unexpected {k}" for k in saved if k not in expected]
    problems += [
        f"{k}: {tuple(saved[k].shape)} {saved[k].dtype} in the file, the network has {tuple(v.shape)} {v.dtype}"
        for k, v in expected.items()
        if k in saved and (saved[k].shape != v.shape or saved[k].dtype != v.dtype)
    ]
    if problems:
        raise BundleError(f"{weights} does not match {META_FILE} ({len(problems)} problems): {'; '.join(problems[:3])}")
    with torch.no_grad():
        safetensors.torch.load_model(model, weights, strict=True)
    return model.eval(), info
