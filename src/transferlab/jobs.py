"""Deprecated: the jobs moved to :mod:`transferlab.api` (the same names; or import them from
``transferlab`` itself). Importing this module still works, with a ``DeprecationWarning``."""

import warnings

from .api import TrainResult, advise, lr_find, pretrain, rank, train

warnings.warn("transferlab.jobs is now transferlab.api (or import from transferlab itself)", DeprecationWarning,
              stacklevel=2)  # fmt: skip

__all__ = ["TrainResult", "advise", "lr_find", "pretrain", "rank", "train"]
