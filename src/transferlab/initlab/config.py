"""The init lab's settings, torch-free (the command line reads them without loading a network)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError, check_choice
from ..hardware import check_device
from ..inits import initializer_names

LAB_MODELS = ("mlp", "deep-mlp", "cnn")
OPTIMIZERS = ("adam", "sgd")
DEFAULT_INITS = (
    "zeros", "ones", "uniform", "uniform-centered", "general-rule", "normal", "default",
    "xavier-uniform", "kaiming-normal", "orthogonal", "lsuv",
)  # fmt: skip


@dataclass(frozen=True)
class LabConfig:
    """The experiment; defaults are the seed source's (2 epochs, batch 100, Adam 0.001, 20% held out)."""

    inits: tuple[str, ...] = DEFAULT_INITS
    model: str = "mlp"
    epochs: int = 2
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    seeds: int = 3
    val_fraction: float = 0.2
    train_samples: int | None = None  # subsample the training pool (for quick runs)
    data: str = "fashion-mnist"
    data_dir: str | None = None
    out: str = "runs/init-lab"
    device: str = "auto"  # where the networks train: auto (a GPU when CUDA has one), cpu, cuda, cuda:N

    def __post_init__(self):
        check_choice("--model", self.model, LAB_MODELS)
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        for name in self.inits:
            if not name.startswith("constant:"):
                check_choice("--inits", name, initializer_names())
        if self.epochs < 1 or self.seeds < 1 or self.batch_size < 1:
            raise ConfigError("--epochs, --seeds and --batch-size must each be at least 1.")
        check_device(self.device)
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}.")
