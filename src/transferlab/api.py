"""The public API's jobs, the same from Python as from the command line (and under ``torchrun``).

>>> import transferlab as tl
>>> result = tl.train("my_folder/", strategy="auto", out="runs/mine")
>>> result.metrics["test_accuracy"], result.plan.strategy
>>> tl.load("runs/mine/model").predict(["photo.jpg"], top_k=3)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from . import distributed
from .advisor.advise import advise_prepared
from .advisor.rank import Ranking, rank_sources
from .config import TrainConfig, with_plan
from .errors import ConfigError
from .forecast import Forecaster
from .inference import Model, load
from .offline import OFFLINE_BACKBONES
from .plan import Plan
from .prepare import PreparedRun, prepare
from .strategies import AUTO, FINETUNING, FROM_SCRATCH
from .trainer.lr_find import LrFinding, find_lr
from .trainer.train import train_prepared


@dataclass(frozen=True)
class TrainResult:
    """A finished run: its metrics (as in ``metrics.json``), its folder and, for ``auto``, the plan."""

    metrics: dict
    out: Path
    plan: Plan | None = None

    @property
    def model(self) -> Model:
        """The trained model, loaded from ``out/model``."""
        return load(self.out / "model")


def _config(data: str | TrainConfig, options: dict) -> TrainConfig:
    if isinstance(data, TrainConfig):
        return dataclasses.replace(data, **options) if options else data
    return TrainConfig(data=data, **options)


def _saved_plan(path: str) -> Plan:
    """The plan saved at ``path``, less the runs its check kept for the final training: they were
    trained on the images of that day, and a plan may be carried out on others."""
    try:
        plan = Plan.load(path)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"Cannot read the plan {path!r}: {error}") from error
    return dataclasses.replace(plan, crossfit={k: v for k, v in plan.crossfit.items() if k != "checkpoints"})


def _prepare_and_plan(config: TrainConfig) -> tuple[PreparedRun, TrainConfig, Plan | None]:
    """The prepared run and the config to train, with the plan merged in for ``auto``: a saved plan
    is read first (it may name another backbone), a new one measured on the prepared run."""
    if config.strategy != AUTO:
        return prepare(config), config, None
    if config.plan:
        plan = _saved_plan(config.plan)
        config = with_plan(config, plan)
        return prepare(config), config, plan
    prepared = prepare(config)
    plan = advise_prepared(prepared, config)
    config = with_plan(config, plan)
    return prepared.for_backbone(plan.backbone).with_fit(config.fit), config, plan


def train(data: str | TrainConfig, **options) -> TrainResult:
    """Train a transfer model on ``data`` (a built-in name, a folder or a CSV; or a whole
    :class:`TrainConfig`); ``options`` are TrainConfig's fields. With ``strategy="auto"`` the
    advisor measures the data first (or ``plan=`` a saved plan.json is carried out) and the plan
    is merged into the config (:func:`transferlab.config.with_plan`). The data is loaded and the
    backbone built once. Under ``torchrun`` each process calls this; only the main one writes."""
    started = time.perf_counter()  # the run's train_seconds count the advisor's measuring and check too
    config = _config(data, options)
    distributed.init_from_env()
    prepared, config, plan = _prepare_and_plan(config)
    metrics = train_prepared(prepared, config, plan, started)
    return TrainResult(metrics, Path(config.out), plan)


def rank(data: str | TrainConfig, backbones: tuple[str, ...] = OFFLINE_BACKBONES, **options) -> Ranking:
    """Rank candidate source ``backbones`` for ``data`` (default: the four offline ImageNet ones),
    best first, with each one's probe accuracy, LogME, LEEP, transfer gain and time."""
    if not backbones:
        raise ConfigError("rank needs at least one backbone, got none.")
    config = _config(data, {"strategy": AUTO, "backbone": backbones[0], **options})
    return rank_sources(prepare(config), config, tuple(dict.fromkeys(backbones)))


def lr_find(data: str | TrainConfig, **options) -> LrFinding:
    """The learning-rate range test for fine-tuning ``data`` (``options``: TrainConfig's fields);
    writes ``lr-find.png`` and ``lr-find.json`` into ``out``."""
    config = _config(data, {"strategy": FINETUNING, **options})
    return find_lr(prepare(config), config, Path(config.out))


def advise(data: str | TrainConfig, forecaster: Forecaster | None = None, **options) -> Plan:
    """The plan for ``data`` with its evidence and forecasts, without training (``options``:
    TrainConfig's fields; ``measure_per_class`` sets the sample measured, ``samples_per_class`` the
    size the training will use; ``backbones`` several candidates to rank and choose the source
    from; ``forecaster`` one fitted by your own study instead of the shipped one)."""
    config = _config(data, {"strategy": AUTO, **options})
    return advise_prepared(prepare(config), config, forecaster)


def pretrain(data: str, arch: str, out: str, **options) -> TrainResult:
    """Train ``arch`` from scratch on ``data`` and save it as a bundle that later runs transfer from
    (``backbone=f"{out}/model"``). ``options``: TrainConfig's fields (batch size 128 by default)."""
    return train(data, **{"batch_size": 128, **options, "strategy": FROM_SCRATCH, "backbone": arch, "out": out})
