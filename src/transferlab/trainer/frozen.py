"""The stages that compute a head in closed form on the frozen body's cached features: ``head``
(the run's own head at one cut), ``multicut`` (one head over every cut point) and ``probe`` (the
linear probe that starts LP-FT), with unlabelled images where the strategy learns from them."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..features import Features, cached_features
from ..prepare import PreparedRun
from ..strategies import applying_to
from ..surgery import TransferModel
from ..transferability import tap_standardization
from .context import RunContext, Stage
from .extraction import (
    cached_splits,
    check_every_class,
    engine_choice,
    frozen_parts,
    frozen_runner,
    present_splits,
    readable_rows,
)
from .loops import fit_ridge_head, kept_epoch, trains_on_validation
from .pseudo_labels import FitHead, fit_with_unlabeled

log = logging.getLogger(__name__)


def _graph_features(train_x: np.ndarray, unlabeled_x: np.ndarray, tap_widths: list[int]):
    """How the pseudo-labels' graph sees the features: each tap (``tap_widths``) standardized over
    the labelled and unlabelled images together (every tap weighing the same)."""
    mean, scale = tap_standardization(np.vstack([train_x, unlabeled_x]), tap_widths)
    return lambda x: (np.asarray(x) - mean) / scale


def head_fitter(val_x: np.ndarray, val_y: np.ndarray, class_weight: str, on_epoch, tap_widths: list[int],
                fit_val: bool = False) -> tuple[FitHead, dict[str, torch.Tensor]]:  # fmt: skip
    """``fit(head, features, labels) -> history``: each tap of the features (``tap_widths``: the
    width of each) standardized, the head computed in closed form (:func:`.loops.fit_ridge_head`;
    the head then takes raw features), with ``fit_val`` fitting the validation images too. And what
    ``fit`` fills with the validation logits where the head's own would be in sample (``fit_val``:
    their leave-one-out logits)."""
    out_of_sample: dict[str, torch.Tensor] = {}

    def fit(head, x: np.ndarray, y: np.ndarray) -> list[dict]:
        mean, scale = tap_standardization(np.vstack([x, val_x]) if fit_val else x, tap_widths)
        standardized = [(np.asarray(v) - mean) / scale for v in (x, val_x)]
        history, val_logits = fit_ridge_head(head, standardized[0], y, standardized[1], val_y, on_epoch, class_weight,
                                             fit_val)  # fmt: skip
        if fit_val:
            out_of_sample["val"] = val_logits
        head.absorb_standardization(torch.from_numpy(mean), torch.from_numpy(scale))
        return history

    return fit, out_of_sample


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


def fits_validation(config: TrainConfig, prepared: PreparedRun) -> bool:
    """Whether the closed-form head fits the validation images too (its penalty and temperature are
    chosen leave-one-out, so validation chooses nothing): unless ``--holdout`` keeps them out or
    the data set brought them (a ``val/`` folder: the user's own held-out images). With unlabelled
    images the guard's two fits leave them out (it compares the fits on validation images neither
    saw), and the one it keeps is fitted again with them."""
    return not (config.holdout or prepared.splits.val_given)


def _head_on_features(model: TransferModel, prepared: PreparedRun, cut: str, config: TrainConfig, context: RunContext,
                      tap_widths: list[int], fit_val: bool) -> Stage:  # fmt: skip
    """Features of the frozen body (cached), then the head on them computed in closed form, each
    tap standardized first (``tap_widths``: the widths of the taps the features join, one for a
    single cut), fitting the validation images too with ``fit_val``; with unlabelled images, the
    head that learns from them too where the validation says it should (:mod:`.pseudo_labels`)."""
    tick = time.perf_counter()
    resolution, preprocessing = model.preprocessing.resolution, model.preprocessing
    parts = frozen_parts(prepared, cut, preprocessing)
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
    name, class_weight = context.stage, config.resolved_class_weight
    epoch_log = context.epoch_log(name, val_y)
    fit, out_of_sample = head_fitter(val_x, val_y, class_weight, epoch_log, tap_widths, fit_val)
    details = {"validation": "fitted too, scored leave-one-out"} if fit_val else {}
    if unlabeled is None:
        history = fit(model.head, train_x, train_y)
    else:
        unlabeled_x = unlabeled.readable(prepared.splits.unlabeled.labels)[0]
        held_out = head_fitter(val_x, val_y, class_weight, epoch_log, tap_widths)[0] if fit_val else fit  # the guard's fits
        history, report = fit_with_unlabeled(model.head, train_x, train_y, unlabeled_x, held_out, len(prepared.classes),
                                             _graph_features(train_x, unlabeled_x, tap_widths),
                                             refit=fit if fit_val else None)  # fmt: skip
        details["unlabeled"] = {**report, "unreadable": len(unlabeled.skipped)}
    kept = kept_epoch(history)
    log.info("%s: kept epoch %d of %d, val accuracy %.4f", name, kept["epoch"], len(history), kept["val_accuracy"])
    model.head.eval()
    with torch.no_grad():
        logits = {split: model.head(torch.from_numpy(x)) for split, (x, _) in rows.items()}
    logits.update(out_of_sample)
    seconds = {"features_seconds": features_seconds, "head_seconds": time.perf_counter() - tick}
    return Stage(inputs, {s: y for s, (_, y) in rows.items()}, logits, history, seconds, hits,
                 engine={"engine": choice.engine, "reason": choice.reason}, details=details)


def tap_widths_at(prepared: PreparedRun, cut: str) -> list[int]:
    """The widths of the taps a head at ``cut`` reads: one, or every cut point's for ``multicut``
    and ``--cut all`` (each then standardized and weighed alike)."""
    return [point.channels for point in prepared.backbone.read_at(cut)]


def head_stage(model, prepared, cut, config, context) -> Stage:
    """``head``: the run's own head on the frozen body's cached features at its cut (one tap, or
    every one at ``all``), the ridge classifier of leave-one-out strength, fitted on the validation
    images too where :func:`fits_validation` says so (measured against the AdamW head it replaced:
    docs/strategies.md)."""
    return _head_on_features(model, prepared, cut, config, context, tap_widths_at(prepared, cut),
                             fits_validation(config, prepared))  # fmt: skip


def probe_stage(model, prepared, cut, config, context) -> Stage:
    """``probe``: the linear probe that starts LP-FT, computed as ``head``'s, on the images the
    network will train on: the training split alone where the network's early stop and the
    interpolation's alpha are chosen on the validation images, else those too
    (:func:`.loops.trains_on_validation`; measured against the AdamW probe it replaced: docs/strategies.md)."""
    fit_val = trains_on_validation(config, prepared.splits.val.labels, prepared.splits.val_given)
    return _head_on_features(model, prepared, cut, config, context, tap_widths_at(prepared, cut), fit_val)


def multicut_stage(model, prepared, cut, config, context) -> Stage:
    """``multicut``: one head over the pooled features of every cut point (one frozen pass fills
    the cache for all), each tap standardized and weighed by 1/sqrt(its width), the head the ridge
    classifier of leave-one-out strength (Head2Toe's recipe), fitted on the validation images too
    where :func:`fits_validation` says so: ``head``'s stage at the cut that reads them all."""
    return head_stage(model, prepared, cut, config, context)
