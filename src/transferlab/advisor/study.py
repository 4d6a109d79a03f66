"""The transfer study: every strategy (and ``truncate`` at every cut) on controlled cells, against
the advisor's pick.

A cell is a source network and a target dataset at a size. Similarity is controlled: ImageNet
EfficientNet-Lite0 and a ``cnn-small`` pretrained here on Fashion-MNIST's upper-body classes,
transferred to Fashion-MNIST (all classes, or the five others) and to scikit-learn's digits.
For each cell: test accuracy of every run, the advisor's pick, its regret (best minus picked, in
points) and the advisor's cost as a fraction of running everything. ``calibrate`` sets the
advisor's thresholds from the studied cells, ``held_out_regrets`` scores that calibration on cells
it did not see. Also: a transfer-by-depth curve (frozen vs fine-tuned at each cut) in the manner
of Yosinski et al., "How transferable are features in deep neural networks?", NeurIPS 2014.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..config import TrainConfig
from ..prepare import PreparedRun, prepare
from ..report import save_figure, write_report
from ..strategy import FINAL_CUT, CutEvidence, Thresholds, decide
from ..trainer.train import train_prepared
from .advise import advise_prepared

log = logging.getLogger(__name__)

UPPER_BODY = "0,2,3,4,6"  # T-shirt/top, Pullover, Dress, Coat, Shirt
OTHER_FIVE = "1,5,7,8,9"  # Trouser, Sandal, Sneaker, Bag, Ankle boot


@dataclass(frozen=True)
class StudySettings:
    """Sizes and budgets; ``quick`` is the CI-sized version."""

    sizes: tuple[int, ...]
    digits_sizes: tuple[int | None, ...]
    resolution: int  # for the EfficientNet-Lite0 cells
    head_epochs: int
    network_epochs: int
    test_per_class: int
    pretrain_per_class: int
    pretrain_epochs: int
    advise_sample: int


QUICK = StudySettings((10,), (10,), 32, 20, 2, 30, 300, 3, 10)
FULL = StudySettings((10, 100, 1000), (10, None), 64, 40, 5, 300, 6000, 8, 50)


@dataclass(frozen=True)
class Cell:
    name: str
    backbone: str
    data: str
    classes: str | None
    per_class: int | None  # None: all images
    resolution: int


def _cells(settings: StudySettings, source_bundle: str) -> list[Cell]:
    lite, cnn = "efficientnet_lite0", source_bundle
    cells = [Cell(f"imagenet->fmnist10@{n}", lite, "fashion-mnist", None, n, settings.resolution) for n in settings.sizes]
    cells += [Cell(f"fmnist-upper->fmnist-other5@{n}", cnn, "fashion-mnist", OTHER_FIVE, n, 28) for n in settings.sizes]
    for n in settings.digits_sizes:
        size = n or "all"
        cells += [Cell(f"imagenet->digits@{size}", lite, "digits", None, n, settings.resolution),
                  Cell(f"fmnist-upper->digits@{size}", cnn, "digits", None, n, 28)]  # fmt: skip
    return cells


def _runs(prepared: PreparedRun) -> list[tuple[str, str]]:
    """(strategy, cut) of every run of a cell: head, truncate at each stage, finetune, scratch."""
    stages = [c.name for c in prepared.backbone.cut_points[:-1]]
    return [("head", FINAL_CUT), *[("truncate", s) for s in stages], ("finetune", FINAL_CUT), ("scratch", FINAL_CUT)]


def _base_config(cell: Cell, settings: StudySettings, cache: str | None) -> TrainConfig:
    """What every run of ``cell`` shares: the data, its size, the backbone, the resolution."""
    return TrainConfig(data=cell.data, classes=cell.classes, backbone=cell.backbone, resolution=cell.resolution,
                       samples_per_class=cell.per_class, test_per_class=settings.test_per_class, batch_size=32,
                       probe_epochs=settings.head_epochs, measure_per_class=settings.advise_sample,
                       cache_dir=cache)  # fmt: skip


def _config(base: TrainConfig, strategy: str, cut: str, settings: StudySettings, out: Path) -> TrainConfig:
    network = strategy in ("finetune", "scratch")
    return dataclasses.replace(
        base, strategy=strategy, cut=None if cut == FINAL_CUT else cut, freeze_bn=strategy == "finetune",
        epochs=settings.network_epochs if network else settings.head_epochs, out=str(out / f"{strategy}-{cut}"),
    )  # fmt: skip


def _run(prepared: PreparedRun, config: TrainConfig) -> dict:
    """Test accuracy and seconds of training ``config`` on ``prepared``, or the recorded result of
    this exact run from an earlier, interrupted or finished, study (the record sits in the run's folder)."""
    record = Path(config.out) / "study-run.json"
    key = json.loads(json.dumps(dataclasses.asdict(config)))
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("config") == key:
            log.info("Reusing the finished run %s", config.out)
            return saved["result"]
    started = time.perf_counter()
    metrics = train_prepared(prepared, config)
    result = {"test_accuracy": metrics["test_accuracy"], "seconds": time.perf_counter() - started}
    record.write_text(json.dumps({"config": key, "result": result}))
    return result


def run_cell(cell: Cell, settings: StudySettings, out: Path, cache: str | None) -> dict:
    base = _base_config(cell, settings, cache)
    started = time.perf_counter()
    prepared = prepare(base)
    plan = advise_prepared(prepared, base)
    advise_seconds = time.perf_counter() - started
    results = {f"{s}@{c}": _run(prepared, _config(base, s, c, settings, out / cell.name)) for s, c in _runs(prepared)}
    best = max(results, key=lambda k: results[k]["test_accuracy"])
    pick = f"{plan.strategy}@{plan.cut}"
    brute_force = sum(r["seconds"] for r in results.values())
    return {
        "cell": dataclasses.asdict(cell), "runs": results, "best": best, "pick": pick,
        "regret_points": 100 * (results[best]["test_accuracy"] - results[pick]["test_accuracy"]),
        "advise_seconds": advise_seconds, "advise_cost_fraction": advise_seconds / brute_force,
        "plan": plan.to_json(),
    }  # fmt: skip


CANDIDATES = {  # the values calibration tries for each threshold, in increasing order
    "small_data": (1, 20, 50, 100, 200, 500, 1000, 2000),  # 1: nothing is small
    "scratch": (20, 50, 100, 200, 500, 1000, 2000, 10**9),  # 10**9: never scratch
    "transfer_gain": (0.0, 0.02, 0.05, 0.1, 0.2, 0.5),
    "similarity_margin": (0.0, 0.02, 0.05, 0.1, 0.2),
}


def pick_regret(cell: dict, thresholds: Thresholds) -> float:
    """Regret (points) of the pick ``thresholds`` make from a studied cell's recorded evidence."""
    plan = cell["plan"]
    evidence = [CutEvidence(**e) for e in plan["evidence"]]
    decision = decide(plan["images_per_class"], evidence, thresholds)
    runs = cell["runs"]
    return 100 * (runs[cell["best"]]["test_accuracy"] - runs[f"{decision.strategy}@{decision.cut}"]["test_accuracy"])


def calibrate(cells: list[dict]) -> Thresholds:
    """The candidate thresholds with the lowest mean regret over ``cells``, then the lowest worst
    regret. Where the cells leave a threshold free (several values give the same regrets), it is
    set to the middle of those values rather than at an edge the data did not test."""

    def score(thresholds):
        regrets = [pick_regret(cell, thresholds) for cell in cells]
        return np.mean(regrets), max(regrets)

    best = min((Thresholds(*values) for values in itertools.product(*CANDIDATES.values())), key=score)
    target = score(best)
    for name, values in CANDIDATES.items():
        tied = [v for v in values if score(dataclasses.replace(best, **{name: v})) == target]
        best = dataclasses.replace(best, **{name: tied[len(tied) // 2]})
    return best


def held_out_regrets(cells: list[dict]) -> list[float]:
    """Each cell's regret with thresholds calibrated on the other cells only (leave one cell out):
    what the calibration is worth on a case it has not seen."""
    return [pick_regret(cell, calibrate(cells[:i] + cells[i + 1 :])) for i, cell in enumerate(cells)]


def depth_curve(cell: Cell, settings: StudySettings, out: Path, cache: str | None) -> dict:
    """Test accuracy at each cut, frozen (truncate) and fine-tuned from that cut."""
    base = _base_config(cell, settings, cache)
    prepared = prepare(base)
    curve = {}
    for cut in [c.name for c in prepared.backbone.cut_points]:
        frozen = _run(prepared, _config(base, "truncate" if cut != FINAL_CUT else "head", cut, settings, out / "depth"))
        tuned = _run(prepared, _config(base, "finetune", cut, settings, out / "depth"))
        curve[cut] = {"frozen": frozen["test_accuracy"], "fine_tuned": tuned["test_accuracy"]}
    return curve


def _plot_cells(cells: list[dict]):
    figure, axis = plt.subplots(figsize=(11, 0.5 + 0.45 * len(cells) * 4))
    labels, positions = [], []
    y = 0
    for cell in cells:
        for name, run in cell["runs"].items():
            colour = "tab:green" if name == cell["pick"] else ("tab:orange" if name == cell["best"] else "tab:blue")
            axis.barh(y, run["test_accuracy"], color=colour)
            labels.append(f"{cell['cell']['name']}  {name}")
            positions.append(y)
            y += 1
        y += 1
    axis.set_yticks(positions, labels, fontsize=7)
    axis.invert_yaxis()
    axis.set(xlabel="test accuracy", title="Every run per cell (green: advisor's pick, orange: best)")
    figure.tight_layout()
    return figure


def _plot_depth(curve: dict, title: str):
    figure, axis = plt.subplots(figsize=(7, 4))
    cuts = list(curve)
    axis.plot(cuts, [curve[c]["frozen"] for c in cuts], "o-", label="frozen (truncate / head)")
    axis.plot(cuts, [curve[c]["fine_tuned"] for c in cuts], "s-", label="fine-tuned from that cut")
    axis.set(xlabel="cut point", ylabel="test accuracy", title=title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def _plot_frozen_by_depth(cells: list[dict]):
    """Frozen transfer (truncate at each cut, head at the final one) of every cell against depth."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for axis, source in zip(axes, ("imagenet", "fmnist-upper")):
        for cell in (c for c in cells if c["cell"]["name"].startswith(source + "->")):
            frozen = {name.split("@")[1]: run["test_accuracy"] for name, run in cell["runs"].items() if name.startswith("truncate@")}
            frozen[FINAL_CUT] = cell["runs"][f"head@{FINAL_CUT}"]["test_accuracy"]
            axis.plot(list(frozen), list(frozen.values()), "o-", label=cell["cell"]["name"].split("->")[1])
        axis.set(xlabel="cut point", title=f"frozen transfer from {source}")
        axis.tick_params(axis="x", labelrotation=45)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy")
    figure.tight_layout()
    return figure


def cells_table(cells: list[dict]) -> str:
    lines = ["| cell | best | advisor's pick | regret (points) | advisor cost / brute force |", "|---|---|---|---|---|"]
    for c in cells:
        best, pick = c["best"], c["pick"]
        lines.append(
            f"| {c['cell']['name']} | {best} {c['runs'][best]['test_accuracy']:.4f} | {pick} "
            f"{c['runs'][pick]['test_accuracy']:.4f} | {c['regret_points']:.2f} | {c['advise_cost_fraction']:.1%} |"
        )
    return "\n".join(lines)


def run_study(quick: bool = False, out: str | Path = "runs/study", cache_dir: str | None = None) -> dict:
    """Pretrain the cnn-small source, run every cell and the depth curve, write study.json and report.html."""
    settings = QUICK if quick else FULL
    out = Path(out)
    started = time.perf_counter()
    source = out / "source-cnn-small"
    if not (source / "model" / "bundle.json").exists():
        pretraining = TrainConfig(data="fashion-mnist", classes=UPPER_BODY, backbone="cnn-small", strategy="scratch",
                                  samples_per_class=settings.pretrain_per_class, epochs=settings.pretrain_epochs,
                                  batch_size=128, out=str(source), cache_dir=cache_dir)  # fmt: skip
        train_prepared(prepare(pretraining), pretraining)
    cells = [run_cell(cell, settings, out, cache_dir) for cell in _cells(settings, str(source / "model"))]
    depth_cell = Cell("depth", str(source / "model"), "fashion-mnist", OTHER_FIVE, settings.sizes[-1], 28)
    curve = depth_curve(depth_cell, settings, out, cache_dir)
    regrets, held_out = [c["regret_points"] for c in cells], held_out_regrets(cells)
    calibrated = calibrate(cells)
    summary = {
        "quick": quick, "cells": cells, "depth_curve": curve,
        "mean_regret_points": float(np.mean(regrets)), "worst_regret_points": float(np.max(regrets)),
        "shipped_thresholds": dataclasses.asdict(Thresholds()), "calibrated_thresholds": dataclasses.asdict(calibrated),
        "calibrated_mean_regret_points": float(np.mean([pick_regret(c, calibrated) for c in cells])),
        "held_out_regret_points": held_out, "held_out_mean_regret_points": float(np.mean(held_out)),
        "worst_advise_cost_fraction": float(max(c["advise_cost_fraction"] for c in cells)),
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    figures = {
        "Every run per cell": save_figure(_plot_cells(cells), out / "cells.png"),
        "Transfer by depth": save_figure(_plot_depth(curve, f"cnn-small (upper body) -> other five, {settings.sizes[-1]}/class"),
                                         out / "depth.png"),
        "Frozen transfer by depth, every cell": save_figure(_plot_frozen_by_depth(cells), out / "frozen-depth.png"),
    }  # fmt: skip
    header = ["cell", "best", "pick", "regret (points)", "advise cost"]
    rows = [[c["cell"]["name"], c["best"], c["pick"], c["regret_points"], c["advise_cost_fraction"]] for c in cells]
    write_report(out / "report.html", "transferlab study" + (" (quick)" if quick else ""),
                 {k: v for k, v in summary.items() if k not in ("cells", "depth_curve")}, figures,
                 tables={"Cells": (header, rows)})  # fmt: skip
    (out / "study.json").write_text(json.dumps(summary, indent=2))
    return summary
