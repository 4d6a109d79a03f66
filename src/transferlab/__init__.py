"""transferlab: transfer learning on images, with the choice of strategy made from measurements."""

__version__ = "0.1.0"

from .backbones import Backbone, CutPoint, Preprocessing, build_backbone, list_backbones, register_backbone
from .bundle import BundleInfo, load_bundle, save_bundle
from .data import Dataset, ImageSet, Splits, load_dataset, per_class_subset, split_dataset
from .errors import BackboneError, BundleError, ConfigError, DataError, TransferlabError
from .features import FeatureCache, cached_features, compute_outputs
from .heads import LinearHead, make_head
from .inits import INITIALIZERS, init_module, initializer_names, lsuv_
from .lab import LabConfig, layer_statistics, run_lab, unit_symmetry
from .surgery import TransferModel, body_at, freeze
from .train import HeadTraining, fit_head
from .workflow import STRATEGIES, TrainConfig, evaluate, predict, train

__all__ = [
    "Backbone", "BackboneError", "BundleError", "BundleInfo", "ConfigError", "CutPoint", "DataError", "Dataset",
    "FeatureCache", "HeadTraining", "INITIALIZERS", "ImageSet", "LabConfig", "LinearHead", "Preprocessing", "STRATEGIES",
    "Splits", "TrainConfig", "TransferModel", "TransferlabError", "body_at", "build_backbone", "cached_features",
    "compute_outputs", "evaluate", "fit_head", "freeze", "init_module", "initializer_names", "layer_statistics", "list_backbones", "lsuv_",
    "load_bundle", "load_dataset", "make_head", "per_class_subset", "predict", "register_backbone", "run_lab",
    "save_bundle", "split_dataset", "train", "unit_symmetry",
]  # fmt: skip
