"""The training stages a strategy is made of, by name (a strategy's ``stages`` in the table):

* ``head``: features of the frozen body (cached), then a new head on them (``head``, ``truncate``);
* ``probe``: the same with the linear probe's settings, the first stage of LP-FT (``finetune``);
* ``multicut``: a head over the features of every cut point, each tap standardized (``multicut``);
* ``network``: decoded images (cached), then the whole network (``finetune``, ``scratch``).

Each stage function takes the model, the prepared run, the cut, the config and the run's context
(its folder and TensorBoard log) and returns a :class:`Stage`. A new strategy whose training is
not one of these registers its own with :func:`register_stage`.

:func:`setup_network` is the one whole-network set-up (re-initialization, LoRA, the settings, the
optimizer's groups) that training, ``lr-find``, the advisor's pilot and the benchmarks share.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..config import INTERPOLATE_NONE, TrainConfig
from ..data import ImageSet, per_class_subset
from ..engines import Bfloat16, int8_recipe, onnx_runner
from ..errors import ConfigError, DataError
from ..features import (
    Features,
    cached_features,
    compute_outputs,
    digest,
    predict_pixels,
    to_unit_float,
)
from ..hardware import EngineChoice, autocast_dtype, choose_engine, this_cpu
from ..inits import init_module
from ..prepare import PreparedRun
from ..signals import tap_standardization
from ..strategies import PROBE_LR, applying_to
from ..surgery import TransferModel
from .interpolate import interpolate, snapshot
from .loops import HeadTraining, NetworkTraining, fit_head, fit_network, fit_ridge_head, layer_groups
from .lora import add_lora, merge_lora
from .memory import plan_for
from .pseudo_labels import fit_with_unlabeled
from .tensorboard import TensorBoardLog

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """What one training stage (the head on features, or the whole network on pixels) leaves behind."""

    inputs: dict[str, Features]  # per split: what went in (features or decoded pixels)
    labels: dict[str, np.ndarray]  # per split: labels of the readable images
    logits: dict[str, torch.Tensor]  # per split: the trained model's logits on the readable images
    history: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)
    cache_hits: list[bool] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)  # the batch plan of whole-network training
    engine: dict[str, str] = field(default_factory=dict)  # the frozen pass's engine and why it was chosen
    details: dict[str, dict] = field(default_factory=dict)  # more to report, by name (``interpolation``)


@dataclass(frozen=True)
class RunContext:
    """What a stage may write to: the run's folder (checkpoints) and its TensorBoard log."""

    out: Path
    board: TensorBoardLog | None = None

    def epoch_log(self, stage: str, val_labels: np.ndarray):
        return self.board.callback(stage, val_labels) if self.board is not None else None


StageFunction = Callable[[TransferModel, PreparedRun, str, TrainConfig, RunContext], Stage]


def head_settings(config: TrainConfig, probe: bool = False) -> HeadTraining:
    """The head's optimizer settings: the run's own, or with ``probe`` the linear probe's that starts LP-FT."""
    return HeadTraining(
        epochs=config.probe_epochs if probe else config.resolved_epochs, lr=PROBE_LR if probe else config.resolved_lr,
        batch_size=config.batch_size, weight_decay=config.weight_decay, seed=config.seed,
        class_weight=config.class_weight,
    )  # fmt: skip


def network_settings(config: TrainConfig, micro_batch: int = 0) -> NetworkTraining:
    """The whole network's settings, from ``config`` and its strategy's entry only."""
    strategy = config.strategy_entry
    return NetworkTraining(
        epochs=config.resolved_epochs, lr=config.resolved_lr, batch_size=config.batch_size,
        weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs,
        layer_decay=config.layer_decay if strategy.layer_decay else 1.0, patience=config.patience,
        augment=config.augment, freeze_bn=config.resolved_freeze_bn, gradual_unfreeze=config.gradual_unfreeze,
        seed=config.seed, class_weight=config.class_weight, micro_batch=micro_batch, schedule=config.schedule,
        regularizer=config.regularizer, regularizer_strength=config.resolved_regularizer_strength, tune=config.tune,
        device=config.resolved_device, precision=autocast_dtype(config.resolved_device),
    )  # fmt: skip


def present_splits(prepared: PreparedRun) -> dict[str, ImageSet]:
    """The splits the run has, by name (the test split may be absent)."""
    splits = prepared.splits
    return {name: images for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test))
            if images is not None}  # fmt: skip


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
    """Where the ONNX model of the frozen pass keyed by ``parts`` is kept in the cache."""
    return config.cache_root / "onnx" / f"{digest(parts)}-{resolution}.onnx"


def _graph_features(train_x: np.ndarray, unlabeled_x: np.ndarray, tap_widths: list[int] | None):
    """How the pseudo-labels' graph sees the features: as they are, or with ``tap_widths`` each tap
    standardized over the labelled and unlabelled images together (every tap weighing the same)."""
    if tap_widths is None:
        return lambda x: x
    mean, scale = tap_standardization(np.vstack([train_x, unlabeled_x]), tap_widths)
    return lambda x: (np.asarray(x) - mean) / scale


def head_fitter(val_x: np.ndarray, val_y: np.ndarray, settings: HeadTraining, on_epoch, tap_widths: list[int] | None):
    """``fit(head, features, labels) -> history``: :func:`.loops.fit_head` against the validation
    features; with ``tap_widths`` (a head over several taps), each tap standardized first and the
    head computed in closed form, :func:`.loops.fit_ridge_head` (the head then takes raw features)."""

    def fit(head, x: np.ndarray, y: np.ndarray) -> list[dict]:
        if tap_widths is None:
            return fit_head(head, x, y, val_x, val_y, settings, on_epoch)
        mean, scale = tap_standardization(x, tap_widths)
        standardized = [(np.asarray(v) - mean) / scale for v in (x, val_x)]
        history = fit_ridge_head(head, standardized[0], y, standardized[1], val_y, on_epoch)
        head.absorb_standardization(torch.from_numpy(mean), torch.from_numpy(scale))
        return history

    return fit


def _unlabeled_features(extractor, parts: dict, prepared: PreparedRun, resolution: int, config: TrainConfig,
                        hits: list[bool]) -> Features | None:  # fmt: skip
    """The frozen features of the run's unlabelled images (cached), when its strategy learns from them."""
    images = prepared.splits.unlabeled
    if images is None:
        return None
    if "unlabeled" not in config.strategy_entry.options:
        log.warning("%d unlabelled images left out: %s does not learn from them (%s do)", len(images), config.strategy,
                    ", ".join(applying_to("unlabeled")))  # fmt: skip
        return None
    features, hit = cached_features(extractor, parts, images, resolution, prepared.cache, config.strict,
                                    desc="features unlabeled")  # fmt: skip
    hits.append(hit)
    return features


def _head_on_features(model: TransferModel, prepared: PreparedRun, cut: str, config: TrainConfig, context: RunContext,
                      probe: bool, tap_widths: list[int] | None = None) -> Stage:  # fmt: skip
    """Features of the frozen body (cached), then the head on them (with ``tap_widths``: the
    features of several taps, each standardized per tap first); with unlabelled images, the head
    that learns from them too where the validation says it should (:mod:`.pseudo_labels`)."""
    tick = time.perf_counter()
    resolution, preprocessing = model.preprocessing.resolution, model.preprocessing
    parts = {"weights": prepared.weights_digest, "cut": cut, "mean": preprocessing.mean, "std": preprocessing.std,
             "engine": "pytorch"}  # fmt: skip
    images = sum(len(split) for split in present_splits(prepared).values())
    choice = engine_choice(config, images, resolution, parts)
    extractor = frozen_runner(nn.Sequential(model.normalize, model.body), parts, resolution, prepared, config, choice.engine)
    inputs, hits = cached_splits(extractor, parts, prepared, resolution, config, "features")
    unlabeled = _unlabeled_features(extractor, parts, prepared, resolution, config, hits)
    features_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    rows = readable_rows(inputs, prepared)
    (train_x, train_y), (val_x, val_y) = rows["train"], rows["val"]
    check_every_class(train_y, prepared)
    name = "probe" if probe else "head"
    fit = head_fitter(val_x, val_y, head_settings(config, probe), context.epoch_log(name, val_y), tap_widths)
    details = {}
    if unlabeled is None:
        history = fit(model.head, train_x, train_y)
    else:
        unlabeled_x = unlabeled.readable(prepared.splits.unlabeled.labels)[0]
        history, report = fit_with_unlabeled(model.head, train_x, train_y, unlabeled_x, fit, len(prepared.classes),
                                             _graph_features(train_x, unlabeled_x, tap_widths))  # fmt: skip
        details["unlabeled"] = {**report, "unreadable": len(unlabeled.skipped)}
    best = min(history, key=lambda r: r["val_loss"])
    log.info("%s: best epoch %d of %d, val accuracy %.4f", name, best["epoch"], len(history), best["val_accuracy"])
    model.head.eval()
    with torch.no_grad():
        logits = {split: model.head(torch.from_numpy(x)) for split, (x, _) in rows.items()}
    seconds = {"features_seconds": features_seconds, "head_seconds": time.perf_counter() - tick}
    return Stage(inputs, {s: y for s, (_, y) in rows.items()}, logits, history, seconds, hits,
                 engine={"engine": choice.engine, "reason": choice.reason}, details=details)


def head_stage(model, prepared, cut, config, context) -> Stage:
    """``head``: the run's own head on the frozen body's cached features."""
    return _head_on_features(model, prepared, cut, config, context, probe=False)


def probe_stage(model, prepared, cut, config, context) -> Stage:
    """``probe``: the linear probe that starts LP-FT (its own epochs and rate)."""
    return _head_on_features(model, prepared, cut, config, context, probe=True)


def multicut_stage(model, prepared, cut, config, context) -> Stage:
    """``multicut``: one head over the pooled features of every cut point (one frozen pass fills
    the cache for all), each tap standardized and weighed by 1/sqrt(its width), the head the ridge
    classifier of leave-one-out strength (Head2Toe's recipe)."""
    widths = [point.channels for point in prepared.backbone.cut_points]
    return _head_on_features(model, prepared, cut, config, context, probe=False, tap_widths=widths)


def _reinitialize(body: nn.Module, init: str) -> None:
    """Every weighted layer by ``init``, every BatchNorm to its fresh state (scratch)."""
    init_module(body, init)
    for module in body.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()


def setup_network(model: TransferModel, config: TrainConfig, micro_batch: int = 0) -> tuple[NetworkTraining, list[dict]]:
    """The body made trainable as ``config`` says - re-initialized for a strategy that does not start
    pretrained, LoRA adapters added for ``--tune lora`` - and the settings and optimizer groups
    (layer-wise rates, only the ``--tune`` parameters) to train it with."""
    model.to(config.resolved_device).body.requires_grad_(True)
    if not config.strategy_entry.pretrained:
        _reinitialize(model.body, config.init)
    if config.tune == "lora":
        add_lora(model.body, config.lora_rank)
    settings = network_settings(config, micro_batch)
    return settings, layer_groups(model, settings)


def network_stage(model: TransferModel, prepared: PreparedRun, cut: str, config: TrainConfig,
                  context: RunContext) -> Stage:  # fmt: skip
    """``network``: decoded training and validation images (cached), then the whole network; the
    test split is decoded and scored in passes, never held in memory whole."""
    tick = time.perf_counter()
    resolution = model.preprocessing.resolution
    inputs, hits = cached_splits(None, {}, prepared, resolution, config, "decode", splits=("train", "val"))
    decode_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    pixels = {split: (torch.from_numpy(x), torch.from_numpy(y)) for split, (x, y) in readable_rows(inputs, prepared).items()}
    (train_x, train_y), (val_x, val_y) = pixels["train"], pixels["val"]
    check_every_class(train_y.numpy(), prepared)
    plan = plan_for(model, resolution, config.batch_size // distributed.world_size(), config.max_memory)
    if plan.accumulation > 1:
        log.info("max_memory %.1f GB: steps of %d images run as %d passes of at most %d", config.max_memory,
                 config.batch_size, plan.accumulation, plan.micro_batch)  # fmt: skip
    interpolating = "interpolate" in config.strategy_entry.options and config.interpolate != INTERPOLATE_NONE
    start = snapshot(model) if interpolating else None  # LP-FT: the probe's network
    settings, groups = setup_network(model, config, plan.micro_batch if plan.accumulation > 1 else 0)
    history = fit_network(model, groups, train_x, train_y, val_x, val_y, settings, checkpoint_dir=context.out,
                          resume=config.resume, on_epoch=context.epoch_log(config.strategy, val_y.numpy()))  # fmt: skip
    if config.tune == "lora":
        merge_lora(model.body)
    details = {}
    if start is not None:
        details["interpolation"] = interpolate(model, start, config.interpolate, val_x, val_y, plan.micro_batch).to_json()
    logits = {split: predict_pixels(model, x, plan.micro_batch) for split, (x, _) in pixels.items()}
    labels = {split: y.numpy() for split, (_, y) in pixels.items()}
    if prepared.splits.test is not None:
        inputs["test"] = compute_outputs(model, prepared.splits.test, resolution, plan.micro_batch, config.strict,
                                         desc="evaluate test")  # fmt: skip
        test_logits, labels["test"] = inputs["test"].readable(prepared.splits.test.labels)
        logits["test"] = torch.from_numpy(np.asarray(test_logits))
    seconds = {"decode_seconds": decode_seconds, "network_seconds": time.perf_counter() - tick}
    memory = {"micro_batch": plan.micro_batch, "accumulation": plan.accumulation}
    return Stage(inputs, labels, logits, history, seconds, hits, memory, details=details)


STAGES: dict[str, StageFunction] = {"head": head_stage, "probe": probe_stage, "multicut": multicut_stage,
                                     "network": network_stage}  # fmt: skip


def stage_function(name: str) -> StageFunction:
    """The training stage registered as ``name``; a one-line ConfigError listing the known ones otherwise."""
    if name not in STAGES:
        raise ConfigError(f"no training stage is named {name!r}; the known ones: {', '.join(STAGES)}.")
    return STAGES[name]


def register_stage(name: str, function: StageFunction) -> StageFunction:
    """Add a training stage a strategy can name (a name already taken is refused)."""
    if name in STAGES:
        raise ValueError(f"a training stage named {name!r} is registered already.")
    STAGES[name] = function
    return function
