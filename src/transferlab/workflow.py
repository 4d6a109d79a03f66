"""The user-level jobs: train a transfer model, evaluate it, predict with it.

Each job writes its outputs into a folder as it goes; ``metrics.json`` is written last, so a
folder with a ``metrics.json`` holds a finished run.
"""

from __future__ import annotations

import csv
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

from . import distributed
from .backbones import FINAL_CUT, build_backbone
from .bundle import BundleInfo, load_bundle, save_bundle
from .data import FileSource, ImageSet, load_dataset, per_class_subset, select_classes, split_dataset
from .errors import ConfigError, DataError, check_choice
from .export import onnx_runner
from .features import DEFAULT_CACHE_DIR, DecodedImages, FeatureCache, Features, cached_features, compute_outputs, to_unit_float
from .heads import DEFAULT_HEAD_INIT, make_head
from .inits import init_module, resolve_initializer
from .report import confusion_matrix, plot_confusion, plot_curves, plot_samples, save_figure, write_report
from .runlock import OutputLock
from .runtime import allocator_in_use
from .surgery import TransferModel, body_at, freeze
from .loops import HeadTraining, NetworkTraining, evaluate_logits, fit_head, fit_network, layer_groups, predict_logits

log = logging.getLogger(__name__)

FEATURE_STRATEGIES = ("head", "truncate")  # a frozen body: the head trains on cached features
NETWORK_STRATEGIES = ("finetune", "scratch")  # the whole network trains on (cached, decoded) images
STRATEGIES = (*FEATURE_STRATEGIES, *NETWORK_STRATEGIES)
STRATEGY_DEFAULTS = {  # epochs and learning rate when the config leaves them unset
    "head": (40, 1e-3),
    "truncate": (40, 1e-3),
    "finetune": (8, 3e-4),
    "scratch": (15, 2e-3),
}
SAMPLE_GRID_SIZE = 16
ENGINES = ("pytorch", "onnxruntime")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved into ``metrics.json``."""

    data: str
    out: str = "runs/latest"
    strategy: str = "head"
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    pretrained: bool = True
    cut: str | None = None  # None: the final cut, or the middle stage for truncate
    resolution: int | None = None  # None: the backbone's own
    classes: str | None = None  # a subset of the data's classes: "0-4", "Bag,Sandal"
    samples_per_class: int | None = None
    test_per_class: int | None = None
    val_fraction: float = 0.1
    epochs: int | None = None  # None: the strategy's default (STRATEGY_DEFAULTS)
    lr: float | None = None
    batch_size: int = 64
    weight_decay: float = 1e-4
    head_init: str = DEFAULT_HEAD_INIT
    dropout: float = 0.0
    probe_epochs: int = 40  # finetune: epochs of the linear probe before unfreezing
    layer_decay: float = 0.85
    warmup_epochs: float = 1.0
    patience: int = 3
    augment: bool = False
    freeze_bn: bool = False
    gradual_unfreeze: bool = False
    init: str = "kaiming-normal"  # scratch: initializer of every body layer
    resume: bool = False
    plan: str | None = None  # auto: a saved plan.json to carry out instead of advising again
    advise_sample_per_class: int = 50
    seed: int = 0
    data_dir: str | None = None
    cache_dir: str | None = None  # None: ~/.cache/transferlab/features
    use_cache: bool = True
    strict: bool = False
    engine: str = "pytorch"  # feature extraction: "pytorch" or "onnxruntime"

    def __post_init__(self):
        check_choice("strategy", self.strategy, (*STRATEGIES, "auto"), "train()")
        check_choice("engine", self.engine, ENGINES, "train()")
        if self.plan and self.strategy != "auto":
            raise ConfigError("--plan goes with --strategy auto.")
        resolve_initializer(self.head_init)
        resolve_initializer(self.init)
        if self.resolution is not None and not 16 <= self.resolution <= 1024:
            raise ConfigError(f"resolution must be between 16 and 1024 pixels, got {self.resolution}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.strategy in ("head", "scratch") and self.cut not in (None, FINAL_CUT):
            raise ConfigError(
                f"strategy {self.strategy!r} keeps the whole body (cut 'final'); use --strategy truncate "
                f"(or finetune) for --cut {self.cut}."
            )
        if self.strategy == "auto":
            return
        self.head_training()  # validates epochs, lr, batch size
        if self.strategy in NETWORK_STRATEGIES:
            self.network_training()

    @property
    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else STRATEGY_DEFAULTS[self.strategy][0]

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else STRATEGY_DEFAULTS[self.strategy][1]

    def head_training(self) -> HeadTraining:
        epochs = self.resolved_epochs if self.strategy in FEATURE_STRATEGIES else self.probe_epochs
        lr = self.resolved_lr if self.strategy in FEATURE_STRATEGIES else STRATEGY_DEFAULTS["head"][1]
        return HeadTraining(epochs, lr, self.batch_size, self.weight_decay, self.seed)

    def network_training(self) -> NetworkTraining:
        return NetworkTraining(
            epochs=self.resolved_epochs, lr=self.resolved_lr, batch_size=self.batch_size,
            weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
            layer_decay=self.layer_decay if self.strategy == "finetune" else 1.0, patience=self.patience,
            augment=self.augment, freeze_bn=self.freeze_bn, gradual_unfreeze=self.gradual_unfreeze, seed=self.seed,
        )  # fmt: skip


def _default_cut(strategy: str, cut_points: list) -> str:
    if strategy == "truncate":
        return cut_points[(len(cut_points) - 1) // 2].name  # the middle stage
    return FINAL_CUT


def _kept(values: Features, images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of readable images and their labels, as tensors."""
    return torch.as_tensor(np.asarray(values.values[values.valid])), torch.as_tensor(images.labels[values.valid])


def _kept_all(outputs: dict[str, Features], splits) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    present = _splits_present(splits)
    return {split: _kept(values, present[split]) for split, values in outputs.items()}


def _sample_figure(logits: torch.Tensor, valid: np.ndarray, images: ImageSet, seed: int):
    """Grid of predictions on a fixed random sample of readable images (``logits``: readable rows)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(int(valid.sum()))[:SAMPLE_GRID_SIZE])
    positions = np.flatnonzero(valid)[chosen]
    confidence, predicted = torch.softmax(logits[chosen], 1).max(1)
    classes = images.classes
    return plot_samples(
        [np.asarray(images.open(i)) for i in positions],
        [classes[images.labels[i]] for i in positions],
        [classes[p] for p in predicted.tolist()],
        confidence.tolist(),
    )


def _splits_present(splits) -> dict[str, ImageSet]:
    return {name: images for name, images in (("train", splits.train), ("val", splits.val), ("test", splits.test))
            if images is not None}  # fmt: skip


def _cached_all(model, fingerprint, splits, resolution, cache, strict, what) -> tuple[dict[str, Features], list[bool]]:
    """Cached outputs of ``model`` (features; ``None``: pixels) for every split."""
    results, hits = {}, []
    for split, images in _splits_present(splits).items():
        results[split], hit = cached_features(model, fingerprint, images, resolution, cache, strict, desc=f"{what} {split}")
        hits.append(hit)
    return results, hits


def _train_head_on_features(model, body_fingerprint, splits, cache, config, timings, cache_hits):
    """Features of the frozen body (cached), then the head on them.

    Returns the outputs, the readable rows with labels per split, the logits and the history."""
    tick = time.perf_counter()
    resolution = model.preprocessing.resolution
    fingerprint = hashlib.sha256(f"{body_fingerprint}|{config.engine}".encode()).hexdigest()[:24]
    extractor = nn.Sequential(model.normalize, model.body)
    if config.engine == "onnxruntime":
        cache_root = Path(config.cache_dir) if config.cache_dir else DEFAULT_CACHE_DIR
        extractor = onnx_runner(extractor, resolution, cache_root / "onnx" / f"{fingerprint}-{resolution}.onnx")
    outputs, hits = _cached_all(extractor, fingerprint, splits, resolution, cache, config.strict, "features")
    cache_hits += hits
    timings["features_seconds"] = time.perf_counter() - tick
    tick = time.perf_counter()
    kept = _kept_all(outputs, splits)
    (train_x, train_y), (val_x, val_y) = kept["train"], kept["val"]
    if len(torch.unique(train_y)) < len(splits.train.classes):
        raise DataError("After skipping unreadable images some class has no training image left.")
    history = fit_head(model.head, train_x.numpy(), train_y.numpy(), val_x.numpy(), val_y.numpy(), config.head_training())
    timings["head_seconds"] = time.perf_counter() - tick
    best = min(history, key=lambda r: r["val_loss"])
    log.info("head: best epoch %d of %d, val accuracy %.4f", best["epoch"], len(history), best["val_accuracy"])
    model.head.eval()
    with torch.no_grad():
        logits = {split: model.head(x) for split, (x, _) in kept.items()}
    return outputs, kept, logits, history


def _train_network(model, splits, cache, config, out, timings, cache_hits):
    """Decoded images (cached), then the whole network. Returns what _train_head_on_features does."""
    tick = time.perf_counter()
    outputs, hits = _cached_all(None, "pixels", splits, model.preprocessing.resolution, cache, config.strict, "decode")
    cache_hits += hits
    timings["decode_seconds"] = time.perf_counter() - tick
    tick = time.perf_counter()
    model.body.requires_grad_(True)
    if config.strategy == "scratch":
        init_module(model.body, config.init)
    settings = config.network_training()
    kept = _kept_all(outputs, splits)  # one in-memory copy of the readable images per split
    (train_x, train_y), (val_x, val_y) = kept["train"], kept["val"]
    history = fit_network(model, layer_groups(model, settings), train_x, train_y, val_x, val_y, settings,
                          checkpoint_dir=out, resume=config.resume)  # fmt: skip
    timings["network_seconds"] = time.perf_counter() - tick
    logits = {split: predict_logits(model, x) for split, (x, _) in kept.items()}
    return outputs, kept, logits, history


def train(config: TrainConfig) -> dict:
    """Train a transfer model as ``config`` says; write model, metrics and report into ``config.out``.

    ``head``/``truncate`` train a new head on cached features of the frozen body. ``finetune``
    trains that head first (linear probe), then the whole network with layer-wise learning
    rates. ``scratch`` re-initializes the body and trains everything. Returns the metrics (also
    saved as ``metrics.json``). A second run on the same ``out`` at the same time is refused.
    """
    plan = _plan_for(config) if config.strategy == "auto" else None
    if plan is not None:
        from .advisor import apply_plan

        config = apply_plan(config, plan)
    if not distributed.is_main():
        return _train(config, plan)
    with OutputLock(config.out):
        return _train(config, plan)


def _plan_for(config: TrainConfig):
    """The saved plan ``config.plan``, or a new one from the advisor."""
    from .advisor import Plan, advise

    if config.plan:
        try:
            return Plan.from_json(json.loads(Path(config.plan).read_text()))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"Cannot read the plan {config.plan!r}: {error}") from error
    return advise(config.data, config.backbone, config.weights, config.classes, config.advise_sample_per_class,
                  config.resolution, config.data_dir, config.cache_dir, config.seed, config.samples_per_class)  # fmt: skip


def _train(config: TrainConfig, plan=None) -> dict:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.data, config.data_dir)
    if config.classes:
        dataset = select_classes(dataset, config.classes)
    splits = split_dataset(dataset, config.val_fraction, config.samples_per_class, config.test_per_class, config.seed)
    pretrained = config.pretrained and config.strategy != "scratch"
    backbone = build_backbone(config.backbone, pretrained, config.weights if pretrained else None)
    cut = config.cut or _default_cut(config.strategy, backbone.cut_points)
    preprocessing = dataclasses.replace(
        backbone.preprocessing, resolution=config.resolution or backbone.preprocessing.resolution
    )
    classes = splits.train.classes
    head = make_head(backbone.cut(cut).channels, len(classes), config.head_init, config.dropout)
    model = TransferModel(freeze(body_at(backbone, cut)), head, preprocessing)
    cache = (FeatureCache(config.cache_dir) if config.cache_dir else FeatureCache()) if config.use_cache else None
    timings, cache_hits, history, probe_history = {}, [], [], None

    if config.strategy != "scratch":
        body_fingerprint = f"{backbone.weights_fingerprint()}|{cut}|{preprocessing.mean}|{preprocessing.std}"
        outputs, kept, logits, history = _train_head_on_features(model, body_fingerprint, splits, cache, config,
                                                                 timings, cache_hits)  # fmt: skip
    if config.strategy in NETWORK_STRATEGIES:
        probe_history = history if config.strategy == "finetune" else None
        outputs, kept, logits, history = _train_network(model, splits, cache, config, out, timings, cache_hits)
    present = _splits_present(splits)
    labels = {split: y for split, (_, y) in kept.items()}
    info = BundleInfo(
        classes=classes, preprocessing=preprocessing, backbone=config.backbone, arch=backbone.arch, cut=cut,
        cut_points=tuple(backbone.cut_points), num_features=backbone.cut(cut).channels,
        head_dropout=config.dropout, head_init=config.head_init, strategy=config.strategy,
    )  # fmt: skip
    if distributed.is_main():
        save_bundle(out / "model", model.eval(), info)

    eval_split = "test" if "test" in logits else "val"
    val_loss, val_accuracy = evaluate_logits(logits["val"], labels["val"])
    eval_loss, eval_accuracy = evaluate_logits(logits[eval_split], labels[eval_split])
    skipped = sorted({name for f in outputs.values() for name in f.skipped})
    metrics = {
        "strategy": config.strategy,
        "backbone": config.backbone,
        "weights_source": backbone.weights_source if config.strategy != "scratch" else f"{config.init} init",
        "cut": cut,
        "resolution": preprocessing.resolution,
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        **({"test_accuracy": eval_accuracy, "test_loss": eval_loss} if eval_split == "test" else {}),
        "num_train": int(len(labels["train"])),
        "num_val": int(len(labels["val"])),
        "num_test": int(len(labels["test"])) if "test" in labels else 0,
        "classes": list(classes),
        "skipped_files": len(skipped),
        "skipped": skipped,
        "feature_cache": "hit" if all(cache_hits) else ("partial" if any(cache_hits) else "miss"),
        **timings,
        "train_seconds": time.perf_counter() - started,
        "processes": distributed.world_size(),
        "allocator": allocator_in_use(),
        "config": dataclasses.asdict(config),
        "history": history,
        **({"probe_history": probe_history} if probe_history is not None else {}),
        **({"plan": plan.to_json()} if plan is not None else {}),
    }
    if distributed.is_main():
        figure = _sample_figure(logits[eval_split], outputs[eval_split].valid, present[eval_split], config.seed)
        _write_train_report(out, metrics, history, logits[eval_split], labels[eval_split].numpy(), classes,
                            eval_split, figure)  # fmt: skip
        _write_history_csv(out / "history.csv", history)
        if plan is not None:
            plan.save(out / "plan.json")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("wrote %s", out)
    distributed.barrier()
    return metrics


def _write_history_csv(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


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


def predict(model_dir: str | Path, images: list[str | Path], top_k: int = 3, engine: str = "pytorch") -> list[dict]:
    """Top-``k`` classes with probabilities for each image file; ``engine`` runs PyTorch or ONNX Runtime."""
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}.")
    check_choice("engine", engine, ENGINES, "predict()")
    model, info = load_bundle(model_dir)
    if engine == "onnxruntime":  # exported once next to the bundle
        model = onnx_runner(model, info.preprocessing.resolution, Path(model_dir) / "model.onnx")
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
