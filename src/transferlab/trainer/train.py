"""Training a transfer model on a prepared run: the data path walks forward.

The model is the body up to the cut with a new head; then the strategy's stages run in the order
its table entry names them (:mod:`.stages`): ``head``/``truncate`` train the head on cached
features of the frozen body, ``finetune`` the probe and then the whole network, ``scratch`` the
re-initialized whole network. A strategy with members (``ensemble``) trains each of them as its
own run would, then averages their calibrated probabilities (:mod:`..ensemble`). Outputs are
written into the run's folder as they come; ``metrics.json`` last, so a folder with a
``metrics.json`` holds a finished run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..bundle import BundleInfo, Tap, save_bundle, save_ensemble
from ..config import TrainConfig, for_strategy
from ..data import Splits
from ..ensemble import combined, fit_temperature
from ..errors import ConfigError
from ..heads import make_head
from ..metrics import classification_metrics, evaluate_logits
from ..plan import Plan
from ..prepare import PreparedRun
from ..runlock import OutputLock
from ..strategies import ALL_CUTS, FINAL_CUT, STRATEGIES
from ..surgery import TransferModel, body_over, freeze
from .context import RunContext, Stage
from .extraction import present_splits
from .loops import EpochCallback, balanced_weights, trains_on_validation
from .network import TRAINED_ON_VALIDATION
from .outputs import write_outputs
from .stages import stage_function
from .tensorboard import TensorBoardLog

log = logging.getLogger(__name__)


def train_prepared(prepared: PreparedRun, config: TrainConfig, plan: Plan | None = None,
                   started: float | None = None) -> dict:  # fmt: skip
    """Train as ``config`` says on ``prepared``; write model, metrics and report into ``config.out``.

    Returns the metrics (also saved as ``metrics.json``; ``train_seconds`` counts from ``started``, a
    ``time.perf_counter()`` reading taken where the run began - before the advisor measured, for
    ``auto`` - or, by default, from before the preparing). A second run on the same folder at the
    same time is refused (``OutputInUse``); under torchrun only the main process writes.
    """
    started = time.perf_counter() - prepared.seconds if started is None else started
    if not distributed.is_main():
        return _train(prepared, config, plan, started)
    with OutputLock(config.out):
        return _train(prepared, config, plan, started)


def taps_of(backbone, cut: str) -> tuple[Tap, ...]:
    """The taps a head at ``cut`` reads (:meth:`..backbones.Backbone.read_at`)."""
    return tuple(Tap(point.name, point.channels) for point in backbone.read_at(cut))


def build_model(prepared: PreparedRun, config: TrainConfig) -> tuple[TransferModel, str]:
    """The transfer model ``config`` asks for - the frozen body up to its cut (or over every cut)
    and a new head - and the cut."""
    backbone = prepared.backbone
    cut = config.resolved_cut([c.name for c in backbone.cut_points])
    taps = taps_of(backbone, cut)
    preprocessing = dataclasses.replace(backbone.preprocessing, resolution=config.resolution or backbone.preprocessing.resolution,
                                        fit=prepared.splits.train.fit)  # fmt: skip
    head = make_head(sum(t.channels for t in taps), len(prepared.classes), config.head_init, config.dropout)
    return TransferModel(freeze(body_over(backbone, [t.cut for t in taps])), head, preprocessing), cut


def fit_stages(prepared: PreparedRun, config: TrainConfig, out: Path,
               watch: Callable[[np.ndarray], EpochCallback] | None = None) -> tuple[TransferModel, str, dict[str, Stage]]:  # fmt: skip
    """The model ``config`` asks for, trained by its strategy's stages in order (checkpoints in
    ``out``; ``watch``, given the validation labels, sees each epoch of the whole network's
    training); the stages' results by name, the last one's made the model. Writes no report."""
    torch.manual_seed(config.seed)
    model, cut = build_model(prepared, config)
    board = TensorBoardLog(config.tensorboard, prepared.classes) if config.tensorboard and distributed.is_main() else None
    context, stages = RunContext(out, board, watch=watch), {}
    try:
        for name in config.strategy_entry.stages:
            stages[name] = stage_function(name)(model, prepared, cut, config, dataclasses.replace(context, stage=name))
    finally:
        if board is not None:
            board.close()
    return model.cpu(), cut, stages


def fit_or_resume(prepared: PreparedRun, config: TrainConfig, out: Path, kept: str | None) -> tuple[TransferModel, str, dict[str, Stage]]:
    """:func:`fit_stages` into ``out``; where the check on the user's images already trained this run
    on this run's own splits (``kept``: its folder), that run resumed - its stages redone from the
    cache, its whole-network training finished - unless its settings differ from ``config``'s
    (the user's options on a plan): then trained afresh."""
    if kept is not None:
        try:
            return fit_stages(prepared, dataclasses.replace(config, resume=True), Path(kept))
        except ConfigError as different:
            log.warning("not resuming the check's run of %s (%s): training it afresh", config.strategy, different)
    return fit_stages(prepared, config, out)


def _kept(plan: Plan | None, name: str | None = None) -> str | None:
    """The folder of the check's run of the plan's member ``name`` (of its one candidate without a
    name), or None where the check did not train it as the final run."""
    kept = plan.crossfit.get("checkpoints", {}) if plan is not None else {}
    if name is None:
        return next(iter(kept.values())) if len(kept) == 1 and not plan.members else None
    return kept.get(name)


def bundle_info(prepared: PreparedRun, config: TrainConfig, model: TransferModel, cut: str) -> BundleInfo:
    """What the bundle of ``model`` (trained as ``config`` says, at ``cut``) records beside its weights."""
    backbone, taps = prepared.backbone, taps_of(prepared.backbone, cut)
    return BundleInfo(
        classes=prepared.classes, preprocessing=model.preprocessing, backbone=config.backbone, arch=backbone.arch,
        cut=cut, cut_points=tuple(backbone.cut_points), num_features=sum(t.channels for t in taps),
        head_dropout=config.dropout, head_init=config.head_init, strategy=config.strategy, taps=taps,
    )  # fmt: skip


def ensemble_stage(member_stages: list[Stage], temperatures: list[float] | None = None,
                   weights: list[float] | None = None, class_weight: str = "none") -> tuple[Stage, list[float]]:  # fmt: skip
    """The ensemble of the members' final stages: the calibrated probabilities averaged (``weights``:
    default equal) on every split they all scored, each member at its given temperature or, without them, one fitted
    on its validation logits (each class's images counted by the ensemble's ``class_weight``, its
    weights from the training split's counts), with the history of the member that trained longest
    (a network's epochs, not a computed head's one row); and the temperatures."""
    last = member_stages[-1]
    for stage in member_stages:
        for split, labels in last.labels.items():
            if not np.array_equal(stage.labels[split], labels):
                raise RuntimeError(f"the ensemble's members read different {split} images; they cannot be averaged.")
    if not temperatures:
        val_labels, classes = torch.from_numpy(last.labels["val"]), last.logits["val"].shape[1]
        train_labels = last.labels.get("train")
        by_class = None if train_labels is None else balanced_weights(torch.from_numpy(train_labels), classes, class_weight)
        temperatures = [fit_temperature(stage.logits["val"], val_labels, by_class) for stage in member_stages]
    scored = [split for split in last.logits if all(split in stage.logits for stage in member_stages)]
    logits = {split: combined([stage.logits[split] for stage in member_stages], temperatures, weights)
              for split in scored}  # fmt: skip
    history = max((stage.history for stage in member_stages), key=len)
    return Stage(last.inputs, last.labels, logits, history, memory=last.memory), temperatures


COMBINED = "members combined"  # the key of an ensemble's last stage, its members' probabilities averaged


@dataclass(frozen=True)
class EnsembleMember:
    """A member to train: its name (its folder), its strategy's config, and, when the plan fixed
    them out of fold, its temperature and weight."""

    name: str
    config: TrainConfig
    temperature: float | None = None
    weight: float = 1.0


def _planned_member_config(config: TrainConfig, out: Path, member: dict) -> TrainConfig:
    """The run of one member of a plan (its strategy, cut, BatchNorm setting and augmentation, its
    backbone where it is a companion, and ``holdout`` where the check kept the run it scored on the
    validation images; a plan of an older release has no augmentation) inside ``out``."""
    cut = None if member["cut"] in (FINAL_CUT, ALL_CUTS) else member["cut"]
    settings = {name: member[name] for name in ("freeze_bn", "augment", "holdout", "backbone")
                if member.get(name) is not None}  # fmt: skip
    return for_strategy(config, member["strategy"], out=str(out / member["candidate"]), cut=cut, companions=None,
                        **settings)  # fmt: skip


def companion_name(strategy: str, backbone: str) -> str:
    """The name (and folder) of an ensemble's companion ``strategy`` trained on ``backbone``."""
    return f"{strategy}-{backbone}"


def member_settings(name: str, augment: bool) -> dict:
    """What the table's member ``name`` is given beyond its own defaults in an ensemble: ``augment``,
    where it takes ``--augment``."""
    return {"augment": augment} if "augment" in STRATEGIES[name].options else {}


def _table_member_config(config: TrainConfig, out: Path, name: str, augment: bool, splits: Splits) -> TrainConfig:
    """The run of the table's member ``name`` inside ``out``: its own defaults, augmented as ``augment``
    says where it takes ``--augment``, and keeping the validation images out where it would train on
    them (:func:`.loops.trains_on_validation`): its temperature is fitted on them."""
    member = for_strategy(config, name, out=str(out / name), companions=None, **member_settings(name, augment))
    held_out = trains_on_validation(member, splits.val.labels, splits.val_given)
    return dataclasses.replace(member, holdout=True) if held_out else member


def _companions(config: TrainConfig, out: Path, resolution: int, members: list[EnsembleMember]) -> list[EnsembleMember]:
    """The table's companion trained on each of the run's companion backbones as the member of its
    strategy trains (where one is), at the ensemble's ``resolution``: each member sees the same
    images at prediction."""
    companion = config.strategy_entry.companion
    if companion is None:
        return []
    same = [member.config for member in members if member.config.strategy == companion]
    base = same[0] if same else for_strategy(config, companion, companions=None)
    return [EnsembleMember(companion_name(companion, backbone),
                           dataclasses.replace(base, backbone=backbone, resolution=resolution,
                                               out=str(out / companion_name(companion, backbone))))
            for backbone in config.resolved_companions()]  # fmt: skip


def ensemble_members(config: TrainConfig, out: Path, plan: Plan | None, splits: Splits,
                     resolution: int) -> list[EnsembleMember]:  # fmt: skip
    """The plan's members (weighted and tempered on the user's images) when it has them, else the
    table's, each with its own defaults and equal weights, those that train the body on augmented
    images as the ensemble's default says at ``splits``' labelled images a class (or as typed), and
    its companions at ``resolution``."""
    if plan is not None and plan.members:
        return [EnsembleMember(m["candidate"], _planned_member_config(config, out, m), m["temperature"], m["weight"])
                for m in plan.members]  # fmt: skip
    labelled_per_class = splits.labelled_per_class()
    augment = config.members_augment(labelled_per_class)
    if augment and config.augment is None:
        log.info("the ensemble's fine-tuned member trains on augmented images (%.0f labelled images a class, from %d)",
                 labelled_per_class, config.strategy_entry.augment_members_from)  # fmt: skip
    members = [EnsembleMember(name, _table_member_config(config, out, name, augment, splits))
               for name in config.strategy_entry.members]  # fmt: skip
    return [*members, *_companions(config, out, resolution, members)]


def member_run(prepared: PreparedRun, config: TrainConfig, member: TrainConfig) -> PreparedRun:
    """What a member of ``config``'s ensemble trains on: ``prepared``, or, for a companion on another
    backbone, the same splits over that backbone."""
    return prepared if member.backbone == config.backbone else prepared.over_backbone(member.backbone)


def _member_report(name: str, cut: str, temperature: float, stage: Stage, classes: tuple[str, ...]) -> dict:
    """What metrics.json says of one member: its cut, its temperature, its own figures alone."""
    val_loss, val_accuracy = evaluate_logits(stage.logits["val"], torch.from_numpy(stage.labels["val"]))
    split = "test" if "test" in stage.logits else "val"
    predictions = stage.logits[split].argmax(1).numpy()
    balanced = classification_metrics(stage.labels[split], predictions, classes)["balanced_accuracy"]
    return {"strategy": name, "cut": cut, "temperature": temperature, "val_accuracy": val_accuracy,
            "val_loss": val_loss, f"{split}_balanced_accuracy": balanced}  # fmt: skip


def _train_ensemble(prepared: PreparedRun, config: TrainConfig, out: Path,
                    plan: Plan | None) -> tuple[BundleInfo, dict[str, Stage]]:  # fmt: skip
    """Each member trained as its own run would be (checkpoints in ``out/<member>``), the ensemble
    scored and saved; its info and every stage by name (a name two members share: prefixed by the
    member's), the ensemble's last."""
    members, stages, finals = {}, {}, []
    resolution = config.resolution or prepared.backbone.preprocessing.resolution
    chosen = ensemble_members(config, out, plan, prepared.splits, resolution)
    for member in chosen:
        run = member_run(prepared, config, member.config)
        model, cut, member_stages = fit_or_resume(run, member.config, out / member.name, _kept(plan, member.name))
        members[member.name] = (model.eval(), bundle_info(run, member.config, model, cut))
        for key, stage in member_stages.items():  # each member's times under its own name
            stage.seconds = {f"{member.name}_{k}": value for k, value in stage.seconds.items()}
            stages[key if key not in stages else f"{member.name}.{key}"] = stage
        finals.append((member.name, cut, list(member_stages.values())[-1]))
    given = [m.temperature for m in chosen] if all(m.temperature is not None for m in chosen) else None
    weights = [m.weight for m in chosen]
    stages[COMBINED], temperatures = ensemble_stage([stage for _, _, stage in finals], given, weights,
                                                    config.resolved_class_weight)  # fmt: skip
    reports = [{**_member_report(name, cut, t, stage, prepared.classes), "weight": w,
                "resolved_config": member.config.resolved(cut, members[name][1].preprocessing.resolution)}
               for (name, cut, stage), t, w, member in zip(finals, temperatures, weights, chosen)]  # fmt: skip
    stages[COMBINED].details["members"] = reports
    if any(stage.details.get("validation") == TRAINED_ON_VALIDATION for _, _, stage in finals):
        stages[COMBINED].details["validation"] = TRAINED_ON_VALIDATION  # its validation figures are in-sample in part
    log.info("ensemble of %s at temperatures %s, weights %s", ", ".join(members),
             ", ".join(f"{t:.2f}" for t in temperatures), ", ".join(f"{w:.2f}" for w in weights))  # fmt: skip
    own = [info for _, info in members.values() if info.backbone == config.backbone] or [next(iter(members.values()))[1]]
    info = dataclasses.replace(own[-1], strategy=config.strategy)  # the ensemble's own backbone, not a companion's
    if distributed.is_main():
        save_ensemble(out / "model", members, temperatures, info, weights)
    return info, stages


def _train(prepared: PreparedRun, config: TrainConfig, plan: Plan | None, started: float) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = prepared.backbone
    if config.strategy_entry.members:
        info, stages = _train_ensemble(prepared, config, out, plan)
    else:
        model, cut, stages = fit_or_resume(prepared, config, out, _kept(plan))
        info = bundle_info(prepared, config, model, cut)
        if distributed.is_main():
            save_bundle(out / "model", model.eval(), info)
    weights_source = backbone.weights_source if config.strategy_entry.pretrained else f"{config.init} init"
    return write_outputs(out, config, stages, present_splits(prepared), info, weights_source, plan, started)
