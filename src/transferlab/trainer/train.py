"""Training a transfer model on a prepared run: the data path walks forward.

``head``/``truncate`` train a new head on cached features of the frozen body. ``finetune``
trains that head first (linear probe), then the whole network with layer-wise learning rates.
``scratch`` re-initializes the body and trains everything. Outputs are written into the run's
folder as they come; ``metrics.json`` last, so a folder with a ``metrics.json`` holds a finished run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..bundle import BundleInfo, save_bundle
from ..config import TrainConfig
from ..data import ImageSet, per_class_subset
from ..engines import INT8_RECIPE, Bfloat16, onnx_runner
from ..errors import DataError
from ..features import (
    DEFAULT_CACHE_DIR,
    Features,
    cached_features,
    compute_outputs,
    digest,
    predict_pixels,
    to_unit_float,
)
from ..heads import make_head
from ..inits import init_module
from ..prepare import PreparedRun
from ..runlock import OutputLock
from ..strategy import STRATEGY_DEFAULTS, Plan
from ..surgery import TransferModel, body_at, freeze
from .loops import HeadTraining, NetworkTraining, fit_head, fit_network, layer_groups
from .lora import add_lora, merge_lora
from .memory import plan_for
from .outputs import write_outputs
from .tensorboard import TensorBoardLog

log = logging.getLogger(__name__)


def head_settings(config: TrainConfig) -> HeadTraining:
    """The head's optimizer settings: the run's own for head/truncate, the linear probe's for finetune."""
    head = config.strategy in ("head", "truncate")
    return HeadTraining(
        epochs=config.resolved_epochs if head else config.probe_epochs,
        lr=config.resolved_lr if head else STRATEGY_DEFAULTS["head"].lr,
        batch_size=config.batch_size, weight_decay=config.weight_decay, seed=config.seed,
        class_weight=config.class_weight,
    )  # fmt: skip


def network_settings(config: TrainConfig, micro_batch: int = 0) -> NetworkTraining:
    return NetworkTraining(
        epochs=config.resolved_epochs, lr=config.resolved_lr, batch_size=config.batch_size,
        weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs,
        layer_decay=config.layer_decay if config.strategy == "finetune" else 1.0, patience=config.patience,
        augment=config.augment, freeze_bn=bool(config.freeze_bn), gradual_unfreeze=config.gradual_unfreeze,
        seed=config.seed, class_weight=config.class_weight, micro_batch=micro_batch, schedule=config.schedule,
        regularizer=config.regularizer, regularizer_strength=config.resolved_regularizer_strength, tune=config.tune,
    )  # fmt: skip


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


def _present(prepared: PreparedRun) -> dict:
    splits = prepared.splits
    return {name: images for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test))
            if images is not None}  # fmt: skip


def cached_splits(model, model_parts: dict, prepared: PreparedRun, resolution: int, config: TrainConfig, what: str,
                   splits: tuple[str, ...] = ("train", "val", "test")):  # fmt: skip
    """Per split: the cached outputs of ``model`` (``None``: decoded pixels), and which were cache hits."""
    results, hits = {}, []
    for split, images in _present(prepared).items():
        if split not in splits:
            continue
        results[split], hit = cached_features(model, model_parts, images, resolution, prepared.cache, config.strict,
                                              desc=f"{what} {split}")  # fmt: skip
        hits.append(hit)
    return results, hits


def readable_rows(inputs: dict[str, Features], prepared: PreparedRun) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    present = _present(prepared)
    return {split: values.readable(present[split].labels) for split, values in inputs.items()}


CALIBRATION_IMAGES = 200  # training images (spread over the classes) that calibrate an int8 engine


def _decoded(images: ImageSet, resolution: int, prepared: PreparedRun, config: TrainConfig) -> torch.Tensor:
    """The readable ``images`` decoded (cached) as unit floats."""
    pixels, _ = cached_features(None, {}, images, resolution, prepared.cache, config.strict, desc="decode calibration")
    return to_unit_float(torch.from_numpy(pixels.readable(images.labels)[0]))


def frozen_runner(module: nn.Module, parts: dict, resolution: int, prepared: PreparedRun, config: TrainConfig):
    """``module`` (a frozen forward pass over images at ``resolution``) on ``config.engine``. ``parts``
    (the cache key of what it computes) gains the engine and, for int8, the calibration images and
    the recipe; ONNX models are kept in the cache folder under that key."""
    if config.engine == "pytorch":
        return module
    parts["engine"] = config.engine
    if config.engine == "pytorch-bf16":
        return Bfloat16(module)
    calibration = None
    if config.engine == "onnxruntime-int8":
        sample = per_class_subset(prepared.splits.train, max(1, CALIBRATION_IMAGES // len(prepared.classes)), config.seed)
        parts["calibration"] = sample.fingerprint()  # the int8 model depends on the images it was calibrated on
        parts["recipe"] = INT8_RECIPE  # and on how it was quantized
        calibration = _decoded(sample, resolution, prepared, config)
    cache_root = Path(config.cache_dir) if config.cache_dir else DEFAULT_CACHE_DIR
    return onnx_runner(module, resolution, cache_root / "onnx" / f"{digest(parts)}-{resolution}.onnx", calibration)


def _epoch_log(board: TensorBoardLog | None, stage: str, val_labels: np.ndarray):
    return board.callback(stage, val_labels) if board is not None else None


def head_on_features(model: TransferModel, prepared: PreparedRun, cut: str, config: TrainConfig,
                      board: TensorBoardLog | None) -> Stage:  # fmt: skip
    """Features of the frozen body (cached), then the head on them (``head``, ``truncate``, and
    the linear probe that starts ``finetune``)."""
    tick = time.perf_counter()
    resolution, preprocessing = model.preprocessing.resolution, model.preprocessing
    parts = {"weights": prepared.weights_digest, "cut": cut, "mean": preprocessing.mean, "std": preprocessing.std,
             "engine": config.engine}  # fmt: skip
    extractor = frozen_runner(nn.Sequential(model.normalize, model.body), parts, resolution, prepared, config)
    inputs, hits = cached_splits(extractor, parts, prepared, resolution, config, "features")
    features_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    rows = readable_rows(inputs, prepared)
    (train_x, train_y), (val_x, val_y) = rows["train"], rows["val"]
    if len(np.unique(train_y)) < len(prepared.classes):
        raise DataError("After skipping unreadable images some class has no training image left.")
    stage = "head" if config.strategy in ("head", "truncate") else "probe"
    history = fit_head(model.head, train_x, train_y, val_x, val_y, head_settings(config),
                       _epoch_log(board, stage, val_y))  # fmt: skip
    best = min(history, key=lambda r: r["val_loss"])
    log.info("head: best epoch %d of %d, val accuracy %.4f", best["epoch"], len(history), best["val_accuracy"])
    model.head.eval()
    with torch.no_grad():
        logits = {split: model.head(torch.from_numpy(x)) for split, (x, _) in rows.items()}
    seconds = {"features_seconds": features_seconds, "head_seconds": time.perf_counter() - tick}
    return Stage(inputs, {s: y for s, (_, y) in rows.items()}, logits, history, seconds, hits)


def _reinitialize(body: nn.Module, init: str) -> None:
    """Every weighted layer by ``init``, every BatchNorm to its fresh state (scratch)."""
    init_module(body, init)
    for module in body.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()


def _whole_network(model: TransferModel, prepared: PreparedRun, config: TrainConfig, out: Path,
                   board: TensorBoardLog | None) -> Stage:  # fmt: skip
    """Decoded training and validation images (cached), then the whole network; the test split is
    decoded and scored in passes, never held in memory whole."""
    tick = time.perf_counter()
    resolution = model.preprocessing.resolution
    inputs, hits = cached_splits(None, {}, prepared, resolution, config, "decode", splits=("train", "val"))
    decode_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    model.body.requires_grad_(True)
    if config.strategy == "scratch":
        _reinitialize(model.body, config.init)
    if config.tune == "lora":
        add_lora(model.body, config.lora_rank)
    pixels = {split: (torch.from_numpy(x), torch.from_numpy(y)) for split, (x, y) in readable_rows(inputs, prepared).items()}
    (train_x, train_y), (val_x, val_y) = pixels["train"], pixels["val"]
    plan = plan_for(model, resolution, config.batch_size // distributed.world_size(), config.max_memory)
    if plan.accumulation > 1:
        log.info("max_memory %.1f GB: steps of %d images run as %d passes of at most %d", config.max_memory,
                 config.batch_size, plan.accumulation, plan.micro_batch)  # fmt: skip
    settings = network_settings(config, plan.micro_batch if plan.accumulation > 1 else 0)
    history = fit_network(model, layer_groups(model, settings), train_x, train_y, val_x, val_y, settings,
                          checkpoint_dir=out, resume=config.resume,
                          on_epoch=_epoch_log(board, config.strategy, val_y.numpy()))  # fmt: skip
    if config.tune == "lora":
        merge_lora(model.body)
    logits = {split: predict_pixels(model, x, plan.micro_batch) for split, (x, _) in pixels.items()}
    labels = {split: y.numpy() for split, (_, y) in pixels.items()}
    if prepared.splits.test is not None:
        inputs["test"] = compute_outputs(model, prepared.splits.test, resolution, plan.micro_batch, config.strict,
                                         desc="evaluate test")  # fmt: skip
        test_logits, labels["test"] = inputs["test"].readable(prepared.splits.test.labels)
        logits["test"] = torch.from_numpy(np.asarray(test_logits))
    seconds = {"decode_seconds": decode_seconds, "network_seconds": time.perf_counter() - tick}
    memory = {"micro_batch": plan.micro_batch, "accumulation": plan.accumulation}
    return Stage(inputs, labels, logits, history, seconds, hits, memory)


def train_prepared(prepared: PreparedRun, config: TrainConfig, plan: Plan | None = None) -> dict:
    """Train as ``config`` says on ``prepared``; write model, metrics and report into ``config.out``.

    Returns the metrics (also saved as ``metrics.json``). A second run on the same folder at the
    same time is refused (``OutputInUse``); under torchrun only the main process writes.
    """
    if not distributed.is_main():
        return _train(prepared, config, plan)
    with OutputLock(config.out):
        return _train(prepared, config, plan)


def build_model(prepared: PreparedRun, config: TrainConfig) -> tuple[TransferModel, str]:
    """The transfer model ``config`` asks for - the frozen body up to its cut and a new head - and the cut."""
    backbone = prepared.backbone
    cut = config.resolved_cut([c.name for c in backbone.cut_points])
    preprocessing = dataclasses.replace(backbone.preprocessing,
                                        resolution=config.resolution or backbone.preprocessing.resolution)  # fmt: skip
    head = make_head(backbone.cut(cut).channels, len(prepared.classes), config.head_init, config.dropout)
    return TransferModel(freeze(body_at(backbone, cut)), head, preprocessing), cut


def fit_stages(prepared: PreparedRun, config: TrainConfig, out: Path) -> tuple[TransferModel, str, list[Stage]]:
    """The model ``config`` asks for, trained: the head on features (unless ``scratch``), then the
    whole network (``finetune``, ``scratch``; its checkpoint in ``out``). Writes no report."""
    torch.manual_seed(config.seed)
    model, cut = build_model(prepared, config)
    board = TensorBoardLog(config.tensorboard, prepared.classes) if config.tensorboard and distributed.is_main() else None
    stages = []
    try:
        if config.strategy != "scratch":
            stages.append(head_on_features(model, prepared, cut, config, board))
        if config.trains_network:
            stages.append(_whole_network(model, prepared, config, out, board))
    finally:
        if board is not None:
            board.close()
    return model, cut, stages


def _train(prepared: PreparedRun, config: TrainConfig, plan: Plan | None) -> dict:
    started = time.perf_counter() - prepared.seconds  # train_seconds covers the whole run
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = prepared.backbone
    model, cut, stages = fit_stages(prepared, config, out)
    preprocessing = model.preprocessing
    info = BundleInfo(
        classes=prepared.classes, preprocessing=preprocessing, backbone=config.backbone, arch=backbone.arch, cut=cut,
        cut_points=tuple(backbone.cut_points), num_features=backbone.cut(cut).channels,
        head_dropout=config.dropout, head_init=config.head_init, strategy=config.strategy,
    )  # fmt: skip
    if distributed.is_main():
        save_bundle(out / "model", model.eval(), info)
    weights_source = backbone.weights_source if config.strategy != "scratch" else f"{config.init} init"
    return write_outputs(out, config, stages, _present(prepared), info, weights_source, plan, started)
