"""transferlab: transfer learning on images, with the choice of strategy made from measurements.

The public API is re-exported here explicitly and imported on first use (PEP 562), so that
``import transferlab`` stays cheap: the CLI decides on its memory allocator before torch loads.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "advisor": ["Plan", "Thresholds", "advise", "decide", "random_twin", "transfer_gain"],
    "backbones": ["Backbone", "CutPoint", "Preprocessing", "build_backbone", "list_backbones", "register_backbone"],
    "bundle": ["BundleInfo", "load_bundle", "save_bundle"],
    "data": ["Dataset", "ImageSet", "Splits", "load_dataset", "per_class_subset", "split_dataset"],
    "errors": ["BackboneError", "BundleError", "ConfigError", "DataError", "TransferlabError"],
    "export": ["export_bundle"],
    "features": ["FeatureCache", "cached_features", "compute_outputs"],
    "heads": ["LinearHead", "make_head"],
    "inits": ["INITIALIZERS", "init_module", "initializer_names", "lsuv_"],
    "lab": ["LabConfig", "layer_statistics", "run_lab", "unit_symmetry"],
    "signals": ["BatchNormGap", "logme", "probe_accuracy"],
    "study": ["calibrate", "held_out_regrets", "run_study"],
    "surgery": ["TransferModel", "body_at", "freeze"],
    "loops": ["HeadTraining", "NetworkTraining", "fit_head", "fit_network"],
    "workflow": ["STRATEGIES", "TrainConfig", "evaluate", "predict", "train"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
