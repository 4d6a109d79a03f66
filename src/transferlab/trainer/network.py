"""The stage that trains the whole network on decoded images (``finetune``'s second stage,
``scratch``'s only one), and :func:`setup_network`, the one whole-network set-up
(re-initialization, LoRA, the settings, the optimizer's groups) that training, ``lr-find``, the
advisor's pilot and the benchmarks share."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..config import INTERPOLATE_NONE, TrainConfig
from ..features import compute_outputs, predict_pixels
from ..hardware import autocast_dtype
from ..inits import init_module
from ..prepare import PreparedRun
from ..surgery import Mirror, TransferModel
from ..transferability import MirrorTest, mirror_test
from .context import RunContext, Stage
from .extraction import cached_splits, check_every_class, frozen_parts, readable_rows
from .interpolate import INTERPOLATION_FILE, interpolate, snapshot
from .loops import NetworkTraining, fit_network, layer_groups, resolved_patience, trains_on_validation
from .lora import add_lora, merge_lora
from .memory import plan_for
from .outputs import augmentation_summary

log = logging.getLogger(__name__)

# metrics.json's "validation" where the network trained on the validation images too
TRAINED_ON_VALIDATION = "trained on too (nothing chosen on them): the network's validation figures are in-sample"


def network_settings(config: TrainConfig, micro_batch: int = 0) -> NetworkTraining:
    """The whole network's settings, from ``config`` and its strategy's entry only."""
    strategy = config.strategy_entry
    return NetworkTraining(
        epochs=config.resolved_epochs, lr=config.resolved_lr, batch_size=config.batch_size,
        weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs,
        layer_decay=config.layer_decay if strategy.layer_decay else 1.0, patience=config.patience,
        augment=config.resolved_augment, freeze_bn=config.resolved_freeze_bn, gradual_unfreeze=config.gradual_unfreeze,
        seed=config.seed, class_weight=config.resolved_class_weight, micro_batch=micro_batch, schedule=config.schedule,
        regularizer=config.regularizer, regularizer_strength=config.resolved_regularizer_strength, tune=config.tune,
        device=config.resolved_device, precision=autocast_dtype(config.resolved_device),
    )  # fmt: skip


def _reinitialize(body: nn.Module, init: str) -> None:
    """Every weighted layer by ``init``, every BatchNorm to its fresh state (scratch)."""
    init_module(body, init)
    for module in body.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()


def setup_network(model: TransferModel, config: TrainConfig, micro_batch: int = 0) -> tuple[NetworkTraining, list[dict]]:
    """The body made trainable as ``config`` says - re-initialized for a strategy that does not start
    pretrained, LoRA adapters added for ``--tune lora``, both drawn from ``config.seed`` whatever the
    run drew before (decoding images draws where the cache misses, not where it hits) - and the
    settings and optimizer groups (layer-wise rates, only the ``--tune`` parameters) to train it with."""
    model.to(config.resolved_device).body.requires_grad_(True)
    torch.manual_seed(config.seed)
    if not config.strategy_entry.pretrained:
        _reinitialize(model.body, config.init)
    if config.tune == "lora":
        add_lora(model.body, config.lora_rank)
    settings = network_settings(config, micro_batch)
    return settings, layer_groups(model, settings)


def mirror_check(model: TransferModel, prepared: PreparedRun, cut: str, config: TrainConfig) -> MirrorTest | None:
    """Where the run augments a pretrained network: whether mirroring its training images changes
    what they show (:func:`.transferability.mirror_test` on the features its head reads at ``cut``,
    before any training, the images as they are and mirrored: both through the feature cache, so the
    frozen stage's pass is read again and the check's folds and candidates share the mirrors');
    where it does, augmentation crops without mirroring. None where it does not augment."""
    if not (config.resolved_augment and config.strategy_entry.pretrained):
        return None
    features, parts = nn.Sequential(model.normalize, model.body), frozen_parts(prepared, cut, model.preprocessing)

    def training_rows(module: nn.Module, key: dict, what: str) -> tuple[np.ndarray, np.ndarray]:
        inputs, _ = cached_splits(module, key, prepared, model.preprocessing.resolution, config, what, splits=("train",))
        return readable_rows(inputs, prepared)["train"]

    plain, labels = training_rows(features, parts, "features")
    mirrored, _ = training_rows(nn.Sequential(Mirror(), features), {**parts, "mirror": True}, "mirrored features")
    found = mirror_test(plain, mirrored, labels, len(prepared.classes), config.seed)
    log.info("augmentation: %s", augmentation_summary(found.to_json()))
    return found


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
    model.to(config.resolved_device)  # whole: the frozen stages before may have moved only the body there
    batches = plan_for(model, resolution, config.batch_size // distributed.world_size(), config.max_memory,
                       config.resolved_device)
    if batches.accumulation > 1:
        on_gpu = config.resolved_device.startswith("cuda")
        inside = "the GPU's free memory" if on_gpu else f"max_memory {config.max_memory:.1f} GB"
        log.info("steps of %d images run as %d passes of at most %d to stay inside %s", config.batch_size,
                 batches.accumulation, batches.micro_batch, inside)  # fmt: skip
    interpolating = "interpolate" in config.strategy_entry.options and config.interpolate != INTERPOLATE_NONE
    start = snapshot(model) if interpolating else None  # LP-FT: the probe's network
    mirror = mirror_check(model, prepared, cut, config)
    settings, groups = setup_network(model, config, batches.micro_batch if batches.accumulation > 1 else 0)
    patience, reason = resolved_patience(config.patience, val_y, config.strategy_entry.pretrained)
    log.info("early stopping: %s", reason)
    details = {"early_stopping": {"patience": patience, "reason": reason}}
    fitted_x, fitted_y = train_x, train_y
    if trains_on_validation(config, prepared.splits.val.labels, prepared.splits.val_given):
        fitted_x, fitted_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
        log.info("the network trains on the %d validation images too: nothing is chosen on them (--holdout keeps "
                 "them out); its validation figures are in-sample", len(val_y))  # fmt: skip
        details["validation"] = TRAINED_ON_VALIDATION
    settings = dataclasses.replace(settings, patience=patience, flips=mirror is None or not mirror.changes_labels)
    history = fit_network(model, groups, fitted_x, fitted_y, val_x, val_y, settings, checkpoint_dir=context.out,
                          resume=config.resume, on_epoch=context.network_epochs(config.strategy, val_y.numpy()))  # fmt: skip
    if config.tune == "lora":
        merge_lora(model.body)
    if mirror is not None:
        details["mirror"] = mirror.to_json()
    if start is not None:
        saved = context.out / INTERPOLATION_FILE if config.resume else None  # only a resumable run is met again
        details["interpolation"] = interpolate(model, start, config.interpolate, val_x, val_y, batches.micro_batch,
                                               saved).to_json()  # fmt: skip
    logits = {"val": predict_pixels(model, val_x, batches.micro_batch)}  # the training split's would cost a pass unread
    labels = {split: y.numpy() for split, (_, y) in pixels.items()}
    if prepared.splits.test is not None:
        inputs["test"] = compute_outputs(model, prepared.splits.test, resolution, batches.micro_batch, config.strict,
                                         desc="evaluate test")  # fmt: skip
        test_logits, labels["test"] = inputs["test"].readable(prepared.splits.test.labels)
        logits["test"] = torch.from_numpy(np.asarray(test_logits))
    seconds = {"decode_seconds": decode_seconds, "network_seconds": time.perf_counter() - tick}
    memory = {"micro_batch": batches.micro_batch, "accumulation": batches.accumulation}
    return Stage(inputs, labels, logits, history, seconds, hits, memory, details=details)
