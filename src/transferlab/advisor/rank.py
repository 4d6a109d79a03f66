"""Ranking source networks for the user's data: which pretrained backbone to start from.

Per candidate, on the same per-class sample of the run's labelled images: one frozen pass gives
the features at every cut (cached), scored by the leave-one-out linear probe (the best cut's),
LogME (at that cut) and LEEP (the source classifier's predictions mapped to the target labels).
The ranking orders by the probe, the one score here that estimates the target accuracy itself;
the others are shown beside it, with what each measurement cost.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt

from ..config import TrainConfig
from ..data import per_class_subset
from ..offline import OFFLINE_BACKBONES
from ..plan import CutEvidence, best_cut, transfer_gain
from ..prepare import PreparedRun
from ..report import save_figure, write_report
from ..trainer.extraction import engine_choice, frozen_runner
from ..transferability import multicut_probe_accuracy
from .fit import choose_fit
from .measure import features_at_every_cut, measure, measurement_resolution, probe_learning_curve, source_leep

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class SourceScore:
    """What was measured for one candidate backbone."""

    backbone: str
    parameters: int
    resolution: int
    best_cut: str
    probe_accuracy: float  # at the best cut
    logme: float  # at the best cut
    leep: float | None  # None: the source's classifier is not available
    transfer_gain: float | None  # None: ranked without the random twin
    seconds: float
    evidence: tuple[CutEvidence, ...]
    learning_curve: tuple[tuple[int, float], ...] = ()  # with the twin: the probe at the best cut on 1/4, 1/2, all
    probe_all: float | None = None  # with the twin: the probe on every cut at once (multicut's estimate)
    fit: dict = field(default_factory=dict)  # with the twin: the crop-or-squash check (:class:`.fit.FitCheck`)


@dataclass(frozen=True)
class Ranking:
    """Candidates best first (by probe accuracy, then LogME)."""

    scores: tuple[SourceScore, ...]

    @property
    def best(self) -> SourceScore:
        return self.scores[0]

    def to_json(self) -> list[dict]:
        return [asdict(score) for score in self.scores]

    def table(self) -> str:
        lines = [f"{'backbone':<20} {'params':>7} {'px':>4} {'best cut':<12} {'probe acc':>9} {'LogME':>7} {'LEEP':>7} "
                 f"{'time':>6}"]  # fmt: skip
        for s in self.scores:
            leep = f"{s.leep:7.3f}" if s.leep is not None else f"{'-':>7}"
            lines.append(f"{s.backbone:<20} {s.parameters / 1e6:6.1f}M {s.resolution:>4} {s.best_cut:<12} "
                         f"{s.probe_accuracy:9.3f} {s.logme:7.3f} {leep} {s.seconds:5.1f}s")  # fmt: skip
        return "\n".join(lines)


def score_source(prepared: PreparedRun, config: TrainConfig, name: str, twin: bool = True) -> SourceScore:
    """Measure ``prepared``'s backbone (called ``name`` by the user) on a per-class sample of the
    run's labelled images (training and validation splits: every image the run may learn from);
    ``twin`` adds the random twin (transfer gain), the BatchNorm gaps and the learning curve."""
    started = time.perf_counter()
    backbone = prepared.backbone
    labelled = prepared.splits.train.union(prepared.splits.val)
    sample = per_class_subset(labelled, config.measure_per_class, config.seed)
    resolution = measurement_resolution(backbone, sample, config.resolution)
    choice = engine_choice(config, len(sample) * (2 if twin else 1), resolution)  # the random twin's pass too
    engine = functools.partial(frozen_runner, resolution=resolution, prepared=prepared, config=config, engine=choice.engine)
    blocks, labels = features_at_every_cut(backbone, prepared.weights_digest, sample, resolution, prepared.cache, engine)
    fit = {}
    if twin:  # the advisor's own measurement: crop or squash, decided on the sample unless --fit says
        check, sample, blocks = choose_fit(backbone, prepared.weights_digest, sample, blocks, resolution, prepared.cache,
                                           engine, config.fit)  # fmt: skip
        fit = check.to_json()
    evidence = measure(backbone, blocks, labels, sample, resolution, prepared.cache, config.seed, twin, engine)
    best = best_cut(evidence)
    leep = source_leep(backbone, blocks[-1], labels)
    curve = probe_learning_curve(blocks[evidence.index(best)], labels, config.seed) if twin else ()
    probe_all = multicut_probe_accuracy(blocks, labels) if twin else None
    return SourceScore(
        backbone=name, parameters=sum(p.numel() for p in backbone.model.parameters()), resolution=resolution,
        best_cut=best.cut, probe_accuracy=best.probe_accuracy, logme=best.logme, leep=leep,
        transfer_gain=transfer_gain(evidence) if twin else None, seconds=time.perf_counter() - started,
        evidence=tuple(evidence), learning_curve=curve, probe_all=probe_all, fit=fit,
    )  # fmt: skip


def rank_sources(prepared: PreparedRun, config: TrainConfig, candidates: tuple[str, ...] = OFFLINE_BACKBONES) -> Ranking:
    """Score every candidate on the same sample (one frozen pass each) and order them, best first."""
    scores = []
    for name in candidates:
        scores.append(score_source(prepared.for_backbone(name), config, name, twin=False))
        log.info("rank: %s probe %.3f at %s (%.1f s)", name, scores[-1].probe_accuracy, scores[-1].best_cut,
                 scores[-1].seconds)  # fmt: skip
    return Ranking(tuple(sorted(scores, key=lambda s: (-s.probe_accuracy, -s.logme))))


def _plot(ranking: Ranking):
    figure, axes = plt.subplots(1, 3, figsize=(12, 0.6 + 0.5 * len(ranking.scores)), sharey=True)
    names = [s.backbone for s in ranking.scores]
    for axis, (title, values) in zip(axes, (
        ("probe accuracy (best cut)", [s.probe_accuracy for s in ranking.scores]),
        ("LogME (best cut)", [s.logme for s in ranking.scores]),
        ("LEEP", [s.leep if s.leep is not None else 0.0 for s in ranking.scores]),
    )):  # fmt: skip
        axis.barh(names, values, color=["tab:green"] + ["tab:blue"] * (len(names) - 1))
        axis.set(title=title)
        axis.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    figure.tight_layout()
    return figure


def write_ranking(out: Path, ranking: Ranking, data: str) -> None:
    """``ranking.json``, ``rank.png`` and ``report.html`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "ranking.json").write_text(json.dumps(ranking.to_json(), indent=2))
    figure = save_figure(_plot(ranking), out / "rank.png")
    header = ["backbone", "parameters", "resolution", "best cut", "probe accuracy", "LogME", "LEEP", "seconds"]
    rows = [[s.backbone, s.parameters, s.resolution, s.best_cut, s.probe_accuracy, s.logme,
             s.leep if s.leep is not None else "-", s.seconds] for s in ranking.scores]  # fmt: skip
    write_report(out / "report.html", f"transferlab rank: {data}", {"chosen": ranking.best.backbone},
                 {"Scores per backbone (green: chosen)": figure}, tables={"Ranking": (header, rows)})  # fmt: skip
