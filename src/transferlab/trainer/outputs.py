"""What a training run leaves in its folder: ``metrics.json``, ``history.csv``, ``plan.json`` and
``report.html`` with its plots."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..allocator import allocator_in_use
from ..bundle import BundleInfo
from ..config import TrainConfig
from ..data import ImageSet
from ..metrics import classification_metrics, evaluate_logits
from ..plan import Plan
from ..report import (
    plan_figures,
    plot_confusion,
    plot_curves,
    plot_interpolation,
    plot_samples,
    save_figure,
    write_report,
)
from ..threads import spin_count
from .memory import peak_rss_bytes

log = logging.getLogger(__name__)

SAMPLE_GRID_SIZE = 16
WORST_PAIRS, EXAMPLES_PER_PAIR = 3, 4
FEW_VALIDATION_IMAGES = 5  # per class: below this a validation accuracy means little
NEAR_BASELINE = 0.05  # balanced accuracy within this of chance (1 / classes): the model has learnt next to nothing
POOR_RESULT = ("balanced accuracy {balanced:.1%} is near chance ({chance:.1%}): compare with the baseline, add images, "
               "try the recipe for your data size and look at the confused pairs in report.html "
               "(docs/guide.md, 'When the result is poor')")  # fmt: skip


def unlabeled_summary(report: dict) -> str:
    """One line on what the run did with its unlabelled images."""
    verdict = "used" if report["used"] else "not used"
    return (f"{report['images']} read ({report['unreadable']} unreadable), {report['pseudo_labelled']} pseudo-labelled by "
            f"{report['method']}; {verdict}: {report['reason']}")  # fmt: skip


def augmentation_summary(mirror: dict) -> str:
    """One line on what augmentation did, from the run's mirror test (:class:`.transferability.MirrorTest`)."""
    what = ("crops, no mirror (mirrored, the images look like other classes)" if mirror["changes_labels"]
            else "crops and mirrors")  # fmt: skip
    return (f"{what}; a probe on the training images: {100 * mirror['accuracy']:.1f}% as they are, "
            f"{100 * mirror['mirrored_accuracy']:.1f}% mirrored")


def ensemble_summary(members: list[dict], split: str) -> str:
    """One line on an ensemble's members: each one's temperature and its own balanced accuracy."""
    return "; ".join(f"{m['strategy']} alone {m[f'{split}_balanced_accuracy']:.1%} (temperature {m['temperature']:.2f})"
                     for m in members)  # fmt: skip


def _cache_state(hits: list[bool]) -> str:
    return "hit" if all(hits) else ("partial" if any(hits) else "miss")


def _warn_small_validation(labels: np.ndarray, classes: tuple[str, ...]) -> None:
    fewest = int(np.bincount(labels, minlength=len(classes)).min()) if len(labels) else 0
    if fewest < FEW_VALIDATION_IMAGES:
        log.warning(
            "the validation split holds %d image(s) of its smallest class: its accuracy (and the best-epoch choice) "
            "rests on very few images. Add images, raise --val-fraction, or judge the model on a test split.", fewest
        )


def build_metrics(config: TrainConfig, stages: dict, info: BundleInfo, weights_source: str, plan: Plan | None,
                  started: float) -> dict:  # fmt: skip
    """The run's metrics from its training ``stages`` (by name; the last one made the final model);
    each earlier stage's history is kept as ``<name>_history`` (``probe_history`` for LP-FT)."""
    last = list(stages.values())[-1]
    eval_split = "test" if "test" in last.logits else "val"
    labels = last.labels
    val_loss, val_accuracy = evaluate_logits(last.logits["val"], torch.from_numpy(labels["val"]))
    eval_loss, eval_accuracy = evaluate_logits(last.logits[eval_split], torch.from_numpy(labels[eval_split]))
    quality = classification_metrics(labels[eval_split], last.logits[eval_split].argmax(1).numpy(), info.classes)
    skipped = sorted({name for f in last.inputs.values() for name in f.skipped})
    seconds = {k: v for stage in stages.values() for k, v in stage.seconds.items()}
    _warn_small_validation(labels["val"], info.classes)
    chance = 1 / len(info.classes)
    poor = quality["balanced_accuracy"] < chance + NEAR_BASELINE
    if poor:
        log.warning(POOR_RESULT.format(balanced=quality["balanced_accuracy"], chance=chance))
    return {
        "strategy": config.strategy,
        "backbone": config.backbone,
        "weights_source": weights_source,
        "cut": info.cut,
        "resolution": info.preprocessing.resolution,
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        **({"test_accuracy": eval_accuracy, "test_loss": eval_loss} if eval_split == "test" else {}),
        "evaluated_on": eval_split,
        "balanced_accuracy": quality["balanced_accuracy"],
        "macro_f1": quality["macro_f1"],
        "majority_baseline": quality["majority_baseline"],
        "near_chance": poor,
        "per_class": quality["per_class"],
        "confusion_matrix": quality["confusion_matrix"],
        "num_train": int(len(labels["train"])),
        "num_val": int(len(labels["val"])),
        "num_test": int(len(labels["test"])) if "test" in labels else 0,
        "classes": list(info.classes),
        "skipped_files": len(skipped),
        "skipped": skipped,
        "feature_cache": _cache_state([hit for stage in stages.values() for hit in stage.cache_hits]),
        **seconds,
        "train_seconds": time.perf_counter() - started,
        "processes": distributed.world_size(),
        "device": config.resolved_device,
        **next(({"engine": stage.engine} for stage in stages.values() if stage.engine), {}),
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        **last.memory,
        **{name: value for stage in stages.values() for name, value in stage.details.items()},
        "allocator": allocator_in_use(),
        "openmp_spin_count": spin_count(),
        "config": dataclasses.asdict(config),  # as typed (with the plan merged in); as run: "resolved_config"
        **({} if config.strategy_entry.members else
           {"resolved_config": config.resolved(info.cut, info.preprocessing.resolution)}),  # members: their own
        "history": last.history,
        **{f"{name}_history": stage.history for name, stage in stages.items() if stage is not last},
        **({"plan": plan.to_json()} if plan is not None else {}),
    }


def _grid(logits: torch.Tensor, valid: np.ndarray, images: ImageSet, chosen: np.ndarray):
    """Grid of predictions on the readable rows ``chosen`` (positions among the readable images)."""
    positions = np.flatnonzero(valid)[chosen]
    confidence, predicted = torch.softmax(logits[chosen], 1).max(1)
    classes = images.classes
    return plot_samples(
        [np.asarray(images.open(i)) for i in positions],
        [classes[images.labels[i]] for i in positions],
        [classes[p] for p in predicted.tolist()],
        confidence.tolist(),
    )


def _sample_figure(logits: torch.Tensor, valid: np.ndarray, images: ImageSet, seed: int):
    """Predictions on a fixed random sample of readable images (``logits``: readable rows)."""
    rng = np.random.default_rng(seed)
    return _grid(logits, valid, images, np.sort(rng.permutation(int(valid.sum()))[:SAMPLE_GRID_SIZE]))


def worst_confusions(counts: np.ndarray, classes, top: int = WORST_PAIRS) -> list[tuple[str, str, int]]:
    """The most frequent (true class, predicted class, count) mistakes, most frequent first."""
    off = np.asarray(counts).copy()
    np.fill_diagonal(off, 0)
    pairs = sorted(((int(off[t, p]), t, p) for t, p in zip(*np.nonzero(off))), reverse=True)[:top]
    return [(classes[t], classes[p], n) for n, t, p in pairs]


def _confusions_figure(logits: torch.Tensor, valid: np.ndarray, labels: np.ndarray, images: ImageSet, pairs):
    """Up to four examples of each worst-confused pair, or ``None`` when nothing was confused."""
    predicted = logits.argmax(1).numpy()
    index = {name: k for k, name in enumerate(images.classes)}
    chosen = [np.flatnonzero((labels == index[t]) & (predicted == index[p]))[:EXAMPLES_PER_PAIR] for t, p, _ in pairs]
    chosen = np.concatenate(chosen) if chosen else np.zeros(0, dtype=int)
    return _grid(logits, valid, images, chosen) if len(chosen) else None


def _write_history_csv(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _per_class_table(per_class: dict) -> tuple[list[str], list[list]]:
    header = ["class", "precision", "recall", "F1", "images"]
    return header, [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in per_class.items()]


def _crossfit_table(evidence: dict) -> tuple[list[str], list[list]]:
    """Each candidate's out-of-fold accuracy with its 90% interval, log loss, forecast, weight and temperature."""
    header = ["candidate", "accuracy", "90% interval", "log loss", "forecast", "weight", "temperature"]
    rows = [[name, row["accuracy"], f"{row['interval'][0]:.3f} - {row['interval'][1]:.3f}", row["log_loss"],
             "-" if row.get("forecast") is None else row["forecast"], "-" if row.get("weight") is None else row["weight"],
             "-" if row.get("temperature") is None else row["temperature"]] for name, row in evidence["candidates"].items()]
    return header, rows  # fmt: skip


def _drawn_history(metrics: dict) -> list[dict]:
    """The epochs the report draws: the whole network's where one trained (an ensemble's last stage
    is its computed head, a single row), else the run's own."""
    return metrics.get("network_history") or metrics["history"]


def _write_report(out: Path, metrics: dict, figures: dict, pairs) -> None:
    split = metrics["evaluated_on"]
    counts = np.asarray(metrics["confusion_matrix"])
    images = {
        "Loss and accuracy per epoch": save_figure(plot_curves(_drawn_history(metrics)), out / "curves.png"),
        f"Confusion matrix ({split})": save_figure(plot_confusion(counts, metrics["classes"]), out / "confusion.png"),
        f"Sample predictions ({split})": save_figure(figures["samples"], out / "samples.png"),
    }
    if figures["confusions"] is not None:
        images[f"The most confused pairs ({split}), examples"] = save_figure(figures["confusions"], out / "confusions.png")
    interpolation = metrics.get("interpolation", {})
    if interpolation.get("alphas"):
        figure = plot_interpolation(interpolation["alphas"], interpolation["val_accuracy"], interpolation["alpha"])
        images["From the linear probe to the fine-tuned network"] = save_figure(figure, out / "interpolation.png")
    hidden = ("config", "history", "skipped", "per_class", "confusion_matrix", "plan", "interpolation", "unlabeled",
              "members", "mirror")  # fmt: skip
    summary = {k: v for k, v in metrics.items() if k not in hidden and not k.endswith(("_seconds", "_history"))}
    summary["seconds"] = ", ".join(f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in metrics.items() if k.endswith("_seconds"))
    if "unlabeled" in metrics:
        summary["unlabelled images"] = unlabeled_summary(metrics["unlabeled"])
    if interpolation:
        summary["interpolation"] = f"alpha {interpolation['alpha']:g} ({interpolation['rule']})"
    if "mirror" in metrics:
        summary["augmentation"] = augmentation_summary(metrics["mirror"])
    if "members" in metrics:
        summary["ensemble members"] = ensemble_summary(metrics["members"], split)
    if metrics["near_chance"]:
        summary["poor result"] = POOR_RESULT.format(balanced=metrics["balanced_accuracy"], chance=1 / len(metrics["classes"]))
    tables = {
        f"Per class ({split})": _per_class_table(metrics["per_class"]),
        f"Most confused pairs ({split})": (["true class", "predicted as", "images"], [list(p) for p in pairs]),
    }
    if "plan" in metrics:
        plan = metrics["plan"]
        summary["plan"] = plan["explanation"]
        images.update(plan_figures(out, plan))
        tables["The plan's evidence per cut"] = (
            ["cut", "channels", "probe accuracy", "random", "LogME", "BN gap"],
            [[e["cut"], e["channels"], e["probe_accuracy"], e["random_probe_accuracy"], e["logme"],
              e["batchnorm_gap"] if e["batchnorm_gap"] is not None else "-"] for e in plan["evidence"]],
        )  # fmt: skip
        if plan.get("crossfit", {}).get("candidates"):
            tables["Checked on your images: out-of-fold scores"] = _crossfit_table(plan["crossfit"])
    tables["Settings"] = (["setting", "value"], [[k, v] for k, v in metrics["config"].items()])
    write_report(out / "report.html", f"transferlab train: {metrics['strategy']} on {metrics['config']['data']}",
                 summary, images, {"skipped": metrics["skipped"]} if metrics["skipped"] else None, tables)  # fmt: skip


def write_outputs(out: Path, config: TrainConfig, stages: dict, present: dict[str, ImageSet], info: BundleInfo,
                  weights_source: str, plan: Plan | None, started: float) -> dict:  # fmt: skip
    """Metrics, history, plan and report of a finished run (the main process writes them)."""
    metrics = build_metrics(config, stages, info, weights_source, plan, started)
    if distributed.is_main():
        split, last = metrics["evaluated_on"], list(stages.values())[-1]
        logits, valid, images = last.logits[split], last.inputs[split].valid, present[split]
        pairs = worst_confusions(np.asarray(metrics["confusion_matrix"]), info.classes)
        figures = {"samples": _sample_figure(logits, valid, images, config.seed),
                   "confusions": _confusions_figure(logits, valid, last.labels[split], images, pairs)}  # fmt: skip
        _write_report(out, metrics, figures, pairs)
        _write_history_csv(out / "history.csv", last.history)
        if plan is not None:
            plan.save(out / "plan.json")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("wrote %s", out)
    distributed.barrier()
    return metrics
