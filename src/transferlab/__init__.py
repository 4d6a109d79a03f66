"""transferlab: transfer learning on images, with the choice of strategy made from measurements.

The jobs: ``train``, ``advise``, ``rank``, ``pretrain``, ``load`` (a trained model: ``.predict``,
``.evaluate``, ``.export``), ``suggest`` (which images to label next), ``run_study`` and ``run_lab``; the building blocks a user needs:
``TrainConfig``, ``Plan``, ``Forecaster``, ``LabConfig``, the backbone registry, and every error.

Names are imported on first use (PEP 562), so that ``import transferlab`` stays cheap: the
``transferlab`` command decides on its memory allocator before torch loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .threads import bound_spinning

bound_spinning()  # read once by the OpenMP library, when torch loads: before it

__version__ = "0.2.0"

_EXPORTS = {
    "api": ["TrainResult", "advise", "lr_find", "pretrain", "rank", "train"],
    "advisor.rank": ["Ranking"],
    "inference": ["Model", "Prediction", "load"],
    "config": ["TrainConfig"],
    "plan": ["Plan"],
    "strategies": ["STRATEGIES", "Strategy", "register_strategy"],
    "forecast": ["Forecaster"],
    "sources": ["build_backbone", "list_backbones"],
    "backbones": ["Backbone", "register_backbone"],
    "advisor.study": ["run_study"],
    "suggestions": ["suggest"],
    "initlab.config": ["LabConfig"],
    "initlab.experiment": ["run_lab"],
    "errors": ["BackboneError", "BundleError", "ConfigError", "DataError", "ExportError", "OutputInUse",
               "TrainingDiverged", "TransferlabError"],  # fmt: skip
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:  # what editors and type checkers see; at run time each name loads on first use
    from .advisor.rank import Ranking
    from .advisor.study import run_study
    from .backbones import Backbone, register_backbone
    from .config import TrainConfig
    from .errors import (
        BackboneError,
        BundleError,
        ConfigError,
        DataError,
        ExportError,
        OutputInUse,
        TrainingDiverged,  # fmt: skip
        TransferlabError,
    )
    from .forecast import Forecaster
    from .inference import Model, Prediction, load
    from .initlab.config import LabConfig
    from .initlab.experiment import run_lab
    from .api import TrainResult, advise, lr_find, pretrain, rank, train
    from .plan import Plan
    from .sources import build_backbone, list_backbones
    from .strategies import STRATEGIES, Strategy, register_strategy
    from .suggestions import suggest


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
