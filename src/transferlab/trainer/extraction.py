"""The frozen passes the stages share: each split's outputs of a frozen module (or its decoded
pixels), cached on disk, on the engine chosen for this machine and job (PyTorch, bfloat16, ONNX
Runtime float32 or int8, :mod:`..engines`)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data import ImageSet, per_class_subset
from ..engines import ONNX_GRAPH, Bfloat16, int8_recipe, onnx_runner
from ..errors import DataError
from ..features import Features, cached_features, digest, to_unit_float
from ..hardware import EngineChoice, choose_engine, this_cpu
from ..prepare import PreparedRun

log = logging.getLogger(__name__)


def present_splits(prepared: PreparedRun) -> dict[str, ImageSet]:
    """The splits the run has, by name (the test split may be absent)."""
    splits = prepared.splits
    return {name: images for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test))
            if images is not None}  # fmt: skip


def frozen_parts(prepared: PreparedRun, cut: str, preprocessing) -> dict:
    """The cache key's parts of the frozen body's features at ``cut`` on PyTorch (:func:`frozen_runner`
    adds another engine)."""
    return {"weights": prepared.weights_digest, "cut": cut, "mean": preprocessing.mean, "std": preprocessing.std,
            "engine": "pytorch"}  # fmt: skip


def cached_splits(model, model_parts: dict, prepared: PreparedRun, resolution: int, config: TrainConfig, what: str,
                   splits: tuple[str, ...] = ("train", "val", "test")):  # fmt: skip
    """Per split: the cached outputs of ``model`` (``None``: decoded pixels), and which were cache hits."""
    results, hits = {}, []
    for split, images in present_splits(prepared).items():
        if split not in splits:
            continue
        results[split], hit = cached_features(model, model_parts, images, resolution, prepared.cache, config.strict,
                                              desc=f"{what} {split}")  # fmt: skip
        hits.append(hit)
    return results, hits


def readable_rows(inputs: dict[str, Features], prepared: PreparedRun) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    present = present_splits(prepared)
    return {split: values.readable(present[split].labels) for split, values in inputs.items()}


def check_every_class(labels: np.ndarray, prepared: PreparedRun) -> None:
    """Refuse a training split in which some class lost every image (all unreadable), naming it."""
    counts = np.bincount(labels, minlength=len(prepared.classes))
    empty = [name for name, count in zip(prepared.classes, counts) if count == 0]
    if empty:
        had = np.bincount(prepared.splits.train.labels, minlength=len(prepared.classes))
        details = ", ".join(f"{name!r} ({had[prepared.classes.index(name)]} unreadable)" for name in empty)
        raise DataError(f"After skipping unreadable images no training image is left of class {details}: "
                        "replace those files, or leave the class out with --classes.")  # fmt: skip


CALIBRATION_IMAGES = 200  # training images (spread over the classes) that calibrate an int8 engine


def _decoded(images: ImageSet, resolution: int, prepared: PreparedRun, config: TrainConfig) -> torch.Tensor:
    """The readable ``images`` decoded (cached) as unit floats."""
    pixels, _ = cached_features(None, {}, images, resolution, prepared.cache, config.strict, desc="decode calibration")
    return to_unit_float(torch.from_numpy(pixels.readable(images.labels)[0]))


def engine_choice(config: TrainConfig, images: int, resolution: int, parts: dict | None = None) -> EngineChoice:
    """The engine of a frozen pass over ``images`` (``config.engine``; ``auto`` chooses for this
    machine and job, :func:`.hardware.choose_engine`; ``parts``: the pass's cache key, to find its
    export), logged with its reason."""
    exported = parts is not None and _onnx_path(config, {**parts, "engine": "onnxruntime"}, resolution).exists()
    choice = choose_engine(config.engine, config.resolved_device, this_cpu(), importlib.util.find_spec("onnxruntime") is not None,
                           images, resolution, exported)  # fmt: skip
    log.info("engine %s (%s)", choice.engine, choice.reason)
    return choice


def frozen_runner(module: nn.Module, parts: dict, resolution: int, prepared: PreparedRun, config: TrainConfig,
                  engine: str):  # fmt: skip
    """``module`` (a frozen forward pass over images at ``resolution``) on ``engine`` (PyTorch ones on
    the run's device). ``parts`` (the cache key of what it computes) gains the engine and, for int8,
    the calibration images and the recipe; ONNX models are kept in the cache folder under that key."""
    if engine == "pytorch":
        return module.to(config.resolved_device)
    parts["engine"] = engine
    if engine == "pytorch-bf16":
        if not this_cpu().native_bf16:
            log.warning("this CPU (%s) has no native bfloat16: pytorch-bf16 is emulated here and slower than float32",
                        this_cpu().kind)  # fmt: skip
        return Bfloat16(module.to(config.resolved_device))
    calibration = None
    if engine == "onnxruntime-int8":
        sample = per_class_subset(prepared.splits.train, max(1, CALIBRATION_IMAGES // len(prepared.classes)), config.seed)
        parts["calibration"] = sample.fingerprint()  # the int8 model depends on the images it was calibrated on
        parts["recipe"] = int8_recipe()  # and on how it was quantized (which depends on the CPU)
        calibration = _decoded(sample, resolution, prepared, config)
    return onnx_runner(module, resolution, _onnx_path(config, parts, resolution), calibration)


def _onnx_path(config: TrainConfig, parts: dict, resolution: int) -> Path:
    """Where the ONNX model of the frozen pass keyed by ``parts`` is kept in the cache (an export of
    an earlier graph version is not reused: its outputs are the same, its speed may not be)."""
    return config.cache_root / "onnx" / f"{digest({**parts, 'graph': ONNX_GRAPH})}-{resolution}.onnx"
