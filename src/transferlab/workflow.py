"""The user-level jobs: train a transfer model, evaluate it, predict with it.

Each job writes its outputs into a folder as it goes; ``metrics.json`` is written last, so a
folder with a ``metrics.json`` holds a finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbones import FINAL_CUT, build_backbone
from .bundle import BundleInfo, load_bundle, save_bundle
from .data import FileSource, ImageSet, load_dataset, per_class_subset, split_dataset
from .errors import ConfigError, DataError, check_choice
from .features import DecodedImages, FeatureCache, Features, cached_features, compute_outputs, to_unit_float
from .heads import DEFAULT_HEAD_INIT, make_head
from .inits import resolve_initializer
from .report import confusion_matrix, plot_confusion, plot_curves, plot_samples, save_figure, write_report
from .surgery import TransferModel, body_at, freeze
from .train import HeadTraining, evaluate_logits, fit_head

log = logging.getLogger(__name__)

STRATEGIES = ("head", "truncate")
SAMPLE_GRID_SIZE = 16


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved into ``metrics.json``."""

    data: str
    out: str = "runs/latest"
    strategy: str = "head"
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    pretrained: bool = True
    cut: str | None = None  # None: the final cut for head, the middle stage for truncate
    resolution: int | None = None  # None: the backbone's own
    samples_per_class: int | None = None
    test_per_class: int | None = None
    val_fraction: float = 0.1
    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    head_init: str = DEFAULT_HEAD_INIT
    dropout: float = 0.0
    seed: int = 0
    data_dir: str | None = None
    cache_dir: str | None = None  # None: ~/.cache/transferlab/features
    use_cache: bool = True
    strict: bool = False

    def __post_init__(self):
        check_choice("strategy", self.strategy, STRATEGIES, "train()")
        resolve_initializer(self.head_init)
        if self.resolution is not None and not 16 <= self.resolution <= 1024:
            raise ConfigError(f"resolution must be between 16 and 1024 pixels, got {self.resolution}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.strategy == "head" and self.cut not in (None, FINAL_CUT):
            raise ConfigError(f"strategy 'head' keeps the whole body (cut 'final'); use --strategy truncate for --cut {self.cut}.")

    def head_training(self) -> HeadTraining:
        return HeadTraining(self.epochs, self.lr, self.batch_size, self.weight_decay, self.seed)


def _default_cut(strategy: str, cut_points: list) -> str:
    if strategy == "head":
        return FINAL_CUT
    return cut_points[(len(cut_points) - 1) // 2].name  # truncate: the middle stage


def _kept(features: Features, images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(features.values[features.valid]), images.labels[features.valid]


def _sample_figure(model_head: nn.Module, features: Features, images: ImageSet, seed: int):
    """Grid of predictions on a fixed random sample of readable images."""
    rng = np.random.default_rng(seed)
    readable = np.flatnonzero(features.valid)
    chosen = np.sort(rng.permutation(readable)[:SAMPLE_GRID_SIZE])
    with torch.no_grad():
        probabilities = torch.softmax(model_head(torch.as_tensor(features.values[chosen])), 1)
    confidence, predicted = probabilities.max(1)
    classes = images.classes
    return plot_samples(
        [np.asarray(images.open(i)) for i in chosen],
        [classes[images.labels[i]] for i in chosen],
        [classes[p] for p in predicted.tolist()],
        confidence.tolist(),
    )


def train(config: TrainConfig) -> dict:
    """Train a transfer model as ``config`` says; write model, metrics and report into ``config.out``.

    Returns the metrics (also saved as ``metrics.json``).
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    out = Path(config.out)
    splits = split_dataset(
        load_dataset(config.data, config.data_dir),
        config.val_fraction, config.samples_per_class, config.test_per_class, config.seed,
    )  # fmt: skip
    backbone = build_backbone(config.backbone, config.pretrained, config.weights)
    cut = config.cut or _default_cut(config.strategy, backbone.cut_points)
    preprocessing = dataclasses.replace(
        backbone.preprocessing, resolution=config.resolution or backbone.preprocessing.resolution
    )
    classes = splits.train.classes
    head = make_head(backbone.cut(cut).channels, len(classes), config.head_init, config.dropout)
    model = TransferModel(freeze(body_at(backbone, cut)), head, preprocessing)
    extractor = nn.Sequential(model.normalize, model.body)
    fingerprint = hashlib.sha256(
        f"{backbone.weights_fingerprint()}|{cut}|{preprocessing.mean}|{preprocessing.std}".encode()
    ).hexdigest()[:24]
    cache = FeatureCache(config.cache_dir) if config.cache_dir else FeatureCache()
    features, cache_hits = {}, []
    extraction_started = time.perf_counter()
    for split, images in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        if images is not None:
            features[split], hit = cached_features(
                extractor, fingerprint, images, preprocessing.resolution,
                cache if config.use_cache else None, config.strict, desc=f"features {split}",
            )  # fmt: skip
            cache_hits.append(hit)
    features_seconds = time.perf_counter() - extraction_started

    head_started = time.perf_counter()
    train_x, train_y = _kept(features["train"], splits.train)
    val_x, val_y = _kept(features["val"], splits.val)
    if len(np.unique(train_y)) < len(classes):
        raise DataError("After skipping unreadable images some class has no training image left.")
    history = fit_head(head, train_x, train_y, val_x, val_y, config.head_training())
    head_seconds = time.perf_counter() - head_started
    head.eval()

    eval_split = "test" if "test" in features else "val"
    eval_x, eval_y = _kept(features[eval_split], splits.test if eval_split == "test" else splits.val)
    with torch.no_grad():
        eval_logits = head(torch.as_tensor(eval_x))
    eval_loss, eval_accuracy = evaluate_logits(eval_logits, torch.as_tensor(eval_y))
    with torch.no_grad():
        val_loss, val_accuracy = evaluate_logits(head(torch.as_tensor(val_x)), torch.as_tensor(val_y))

    info = BundleInfo(
        classes=classes, preprocessing=preprocessing, backbone=config.backbone, arch=backbone.arch, cut=cut,
        cut_points=tuple(backbone.cut_points), num_features=backbone.cut(cut).channels,
        head_dropout=config.dropout, head_init=config.head_init, strategy=config.strategy,
    )  # fmt: skip
    save_bundle(out / "model", model, info)

    skipped = sorted({name for f in features.values() for name in f.skipped})
    metrics = {
        "strategy": config.strategy,
        "backbone": config.backbone,
        "weights_source": backbone.weights_source,
        "cut": cut,
        "resolution": preprocessing.resolution,
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        **({"test_accuracy": eval_accuracy, "test_loss": eval_loss} if eval_split == "test" else {}),
        "num_train": int(len(train_y)),
        "num_val": int(len(val_y)),
        "num_test": int(len(eval_y)) if eval_split == "test" else 0,
        "classes": list(classes),
        "skipped_files": len(skipped),
        "skipped": skipped,
        "feature_cache": "hit" if all(cache_hits) else ("partial" if any(cache_hits) else "miss"),
        "features_seconds": features_seconds,
        "head_seconds": head_seconds,
        "train_seconds": time.perf_counter() - started,
        "config": dataclasses.asdict(config),
        "history": history,
    }
    _write_train_report(out, metrics, history, eval_logits, eval_y, classes, eval_split,
                        _sample_figure(head, features[eval_split], splits.test if eval_split == "test" else splits.val,
                                       config.seed))  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("wrote %s", out)
    return metrics


def _write_train_report(out: Path, metrics: dict, history, eval_logits, eval_y, classes, eval_split, samples_figure):
    counts = confusion_matrix(eval_y, eval_logits.argmax(1).numpy(), len(classes))
    figures = {
        "Loss and accuracy per epoch": save_figure(plot_curves(history), out / "curves.png"),
        f"Confusion matrix ({eval_split})": save_figure(plot_confusion(counts, classes), out / "confusion.png"),
        f"Sample predictions ({eval_split})": save_figure(samples_figure, out / "samples.png"),
    }
    summary = {k: v for k, v in metrics.items() if k not in ("config", "history", "skipped")}
    write_report(out / "report.html", f"transferlab train: {metrics['strategy']} on {metrics['config']['data']}",
                 summary, figures, {"config": metrics["config"], "skipped": metrics["skipped"]})  # fmt: skip


# --------------------------------------------------------------------------------------------
# Using a trained bundle.


def _decode_for_model(paths: list[str | Path], resolution: int) -> torch.Tensor:
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise DataError(f"Image {str(path)!r} does not exist.")
    source = ImageSet(FileSource(paths), np.arange(len(paths)), np.zeros(len(paths), dtype=np.int64), ("?",))
    decoded = DecodedImages(source, resolution, strict=True)
    return torch.stack([decoded[i][0] for i in range(len(paths))])


def predict(model_dir: str | Path, images: list[str | Path], top_k: int = 3) -> list[dict]:
    """Top-``k`` classes with probabilities for each image file."""
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}.")
    model, info = load_bundle(model_dir)
    pixels = _decode_for_model(images, info.preprocessing.resolution)
    with torch.inference_mode():
        probabilities = torch.softmax(model.to(memory_format=torch.channels_last)(to_unit_float(pixels)), 1)
    top = probabilities.topk(min(top_k, len(info.classes)), dim=1)
    return [
        {"image": str(path), "top": [(info.classes[c], p) for c, p in zip(idx.tolist(), prob.tolist())]}
        for path, idx, prob in zip(images, top.indices, top.values)
    ]


def evaluate(
    model_dir: str | Path,
    data: str,
    out: str | Path = "evaluation",
    data_dir: str | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
) -> dict:
    """Accuracy and confusion matrix of a bundle on ``data`` (its test split when it has one)."""
    model, info = load_bundle(model_dir)
    dataset = load_dataset(data, data_dir)
    images = dataset.test if dataset.test is not None else dataset.train
    if set(images.classes) != set(info.classes):
        only_data = sorted(set(images.classes) - set(info.classes))
        only_model = sorted(set(info.classes) - set(images.classes))
        raise DataError(
            f"The classes of {data!r} differ from the model's: only in the data {only_data}, only in the model {only_model}."
        )
    if samples_per_class is not None:
        images = per_class_subset(images, samples_per_class, seed)
    to_model = np.asarray([info.classes.index(c) for c in images.classes])
    labels = to_model[images.labels]
    outputs = compute_outputs(model, images, info.preprocessing.resolution, desc="evaluate")
    predictions = outputs.values.argmax(1)[outputs.valid]
    labels = labels[outputs.valid]
    accuracy = float((predictions == labels).mean()) if len(labels) else float("nan")
    counts = confusion_matrix(labels, predictions, len(info.classes))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"model": str(model_dir), "data": data, "accuracy": accuracy, "num_images": int(len(labels)),
               "skipped_files": len(outputs.skipped), "skipped": list(outputs.skipped),
               "classes": list(info.classes), "confusion_matrix": counts.tolist()}  # fmt: skip
    figure = save_figure(plot_confusion(counts, info.classes, f"Confusion matrix on {data}"), out / "confusion.png")
    summary = {k: v for k, v in metrics.items() if k not in ("confusion_matrix", "skipped")}
    write_report(out / "report.html", f"transferlab evaluate: {data}", summary, {"Confusion matrix": figure})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
