"""Training a transfer model on a prepared run: the data path walks forward.

The model is the body up to the cut with a new head; then the strategy's stages run in the order
its table entry names them (:mod:`.stages`): ``head``/``truncate`` train the head on cached
features of the frozen body, ``finetune`` the probe and then the whole network, ``scratch`` the
re-initialized whole network. Outputs are written into the run's folder as they come;
``metrics.json`` last, so a folder with a ``metrics.json`` holds a finished run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from .. import distributed
from ..bundle import BundleInfo, Tap, save_bundle
from ..config import TrainConfig
from ..heads import make_head
from ..plan import Plan
from ..prepare import PreparedRun
from ..runlock import OutputLock
from ..strategies import ALL_CUTS
from ..surgery import TransferModel, body_over, freeze
from .outputs import write_outputs
from .stages import STAGES, RunContext, Stage, present_splits
from .tensorboard import TensorBoardLog

log = logging.getLogger(__name__)


def train_prepared(prepared: PreparedRun, config: TrainConfig, plan: Plan | None = None) -> dict:
    """Train as ``config`` says on ``prepared``; write model, metrics and report into ``config.out``.

    Returns the metrics (also saved as ``metrics.json``). A second run on the same folder at the
    same time is refused (``OutputInUse``); under torchrun only the main process writes.
    """
    if not distributed.is_main():
        return _train(prepared, config, plan)
    with OutputLock(config.out):
        return _train(prepared, config, plan)


def taps_of(backbone, cut: str) -> tuple[Tap, ...]:
    """The cut points a head at ``cut`` reads: that one, or every one for ``ALL_CUTS``."""
    points = backbone.cut_points if cut == ALL_CUTS else [backbone.cut(cut)]
    return tuple(Tap(point.name, point.channels) for point in points)


def build_model(prepared: PreparedRun, config: TrainConfig) -> tuple[TransferModel, str]:
    """The transfer model ``config`` asks for - the frozen body up to its cut (or over every cut)
    and a new head - and the cut."""
    backbone = prepared.backbone
    cut = config.resolved_cut([c.name for c in backbone.cut_points])
    taps = taps_of(backbone, cut)
    preprocessing = dataclasses.replace(backbone.preprocessing,
                                        resolution=config.resolution or backbone.preprocessing.resolution)  # fmt: skip
    head = make_head(sum(t.channels for t in taps), len(prepared.classes), config.head_init, config.dropout)
    return TransferModel(freeze(body_over(backbone, [t.cut for t in taps])), head, preprocessing), cut


def fit_stages(prepared: PreparedRun, config: TrainConfig, out: Path) -> tuple[TransferModel, str, dict[str, Stage]]:
    """The model ``config`` asks for, trained by its strategy's stages in order (checkpoints in
    ``out``); the stages' results by name, the last one's made the model. Writes no report."""
    torch.manual_seed(config.seed)
    model, cut = build_model(prepared, config)
    board = TensorBoardLog(config.tensorboard, prepared.classes) if config.tensorboard and distributed.is_main() else None
    context, stages = RunContext(out, board), {}
    try:
        for name in config.strategy_entry.stages:
            stages[name] = STAGES[name](model, prepared, cut, config, context)
    finally:
        if board is not None:
            board.close()
    return model.cpu(), cut, stages


def _train(prepared: PreparedRun, config: TrainConfig, plan: Plan | None) -> dict:
    started = time.perf_counter() - prepared.seconds  # train_seconds covers the whole run
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = prepared.backbone
    model, cut, stages = fit_stages(prepared, config, out)
    preprocessing = model.preprocessing
    taps = taps_of(backbone, cut)
    info = BundleInfo(
        classes=prepared.classes, preprocessing=preprocessing, backbone=config.backbone, arch=backbone.arch, cut=cut,
        cut_points=tuple(backbone.cut_points), num_features=sum(t.channels for t in taps),
        head_dropout=config.dropout, head_init=config.head_init, strategy=config.strategy, taps=taps,
    )  # fmt: skip
    if distributed.is_main():
        save_bundle(out / "model", model.eval(), info)
    weights_source = backbone.weights_source if config.strategy_entry.pretrained else f"{config.init} init"
    return write_outputs(out, config, stages, present_splits(prepared), info, weights_source, plan, started)
