"""The training stages a strategy is made of, by name (a strategy's ``stages`` in the table):

* ``head``: features of the frozen body (cached), then a new head on them (``head``, ``truncate``);
* ``probe``: the same with the linear probe's settings, the first stage of LP-FT (``finetune``);
* ``multicut``: a head over the features of every cut point, each tap standardized (``multicut``);
* ``network``: decoded images (cached), then the whole network (``finetune``, ``scratch``).

Each stage function (:data:`.context.StageFunction`) takes the model, the prepared run, the cut,
the config and the run's context (its folder, TensorBoard log and the stage's name) and returns a
:class:`.context.Stage`. A new strategy whose training is not one of these registers its own with
:func:`register_stage`. The frozen-feature stages live in :mod:`.frozen`, the whole network's in
:mod:`.network`; this module is their table, the only place a stage is named.
"""

from __future__ import annotations

from ..errors import ConfigError
from .context import StageFunction
from .frozen import head_stage, multicut_stage, probe_stage
from .network import network_stage

STAGES: dict[str, StageFunction] = {"head": head_stage, "probe": probe_stage, "multicut": multicut_stage,
                                     "network": network_stage}  # fmt: skip


def stage_function(name: str) -> StageFunction:
    """The training stage registered as ``name``; a one-line ConfigError listing the known ones otherwise."""
    if name not in STAGES:
        raise ConfigError(f"no training stage is named {name!r}; the known ones: {', '.join(STAGES)}.")
    return STAGES[name]


def register_stage(name: str, function: StageFunction) -> StageFunction:
    """Add a training stage a strategy can name (a name already taken is refused)."""
    if name in STAGES:
        raise ValueError(f"a training stage named {name!r} is registered already.")
    STAGES[name] = function
    return function
