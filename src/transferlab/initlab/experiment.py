"""The init lab: the same network trained under different weight initializations.

Reproduces the seed's experiment (an MLP 784-256-128-10 on Fashion-MNIST, 2 epochs of Adam)
and measures *why* constant initializations fail: the hidden units of a layer start identical,
receive identical gradients, and stay identical, so the layer acts as one unit.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..datasets import load_dataset
from ..errors import ConfigError, check_choice
from ..hardware import resolve_device
from ..inits import init_module
from .config import LAB_MODELS, LabConfig
from .report import write_lab_report

log = logging.getLogger(__name__)

SYMMETRY_TOLERANCE = 1e-6


def build_lab_model(name: str) -> nn.Sequential:
    """``mlp``: the seed's 784-256-128-10 with ReLU and dropout 0.2; ``deep-mlp``: 10 hidden
    layers of 128 ReLU units; ``cnn``: two conv blocks and two Linear layers."""
    check_choice("--model", name, LAB_MODELS)
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10),
        )  # fmt: skip
    if name == "deep-mlp":
        layers = [nn.Flatten(), nn.Linear(784, 128), nn.ReLU()]
        for _ in range(9):
            layers += [nn.Linear(128, 128), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(128, 10))
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


@dataclass
class LabData:
    train_x: torch.Tensor  # N x 784 float in [0, 1]
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    def to(self, device: str) -> LabData:
        return LabData(*(t.to(device) for t in (self.train_x, self.train_y, self.val_x, self.val_y)))


def load_lab_data(config: LabConfig) -> LabData:
    """Flattened 28x28 grayscale images in [0, 1] (the seed's ToTensor, no normalization)."""
    pool = load_dataset(config.data, config.data_dir).train
    source = pool.source
    if not hasattr(source, "pixels") or source.pixels.shape[1:] != (28, 28):
        raise ConfigError(f"The init lab needs 28x28 grayscale data such as fashion-mnist, not {config.data!r}.")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pool))
    if config.train_samples is not None:
        order = order[: config.train_samples]
    n_val = int(round(len(order) * config.val_fraction))
    pixels = torch.from_numpy(source.pixels[pool.indices]).reshape(len(pool), -1).float().div_(255)
    labels = torch.from_numpy(pool.labels)
    val, train = torch.from_numpy(order[:n_val]), torch.from_numpy(order[n_val:])
    return LabData(pixels[train], labels[train], pixels[val], labels[val])


# --------------------------------------------------------------------------------------------
# Measurements: symmetry of units, activation and gradient scale per layer.


def _linear_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def unit_symmetry(weight: torch.Tensor) -> dict[str, float]:
    """How alike the units (rows) of a layer are.

    ``distinct_units``: rows that differ from every earlier row by more than a tolerance;
    ``mean_cosine``: mean pairwise cosine similarity of the rows (two all-zero rows count as
    identical, 1.0). Identical units give 1 distinct unit and cosine 1.
    """
    rows = weight.detach().reshape(weight.shape[0], -1).double()
    scale = rows.abs().max().clamp_min(1e-12)
    distinct = torch.unique(torch.round(rows / scale / SYMMETRY_TOLERANCE), dim=0).shape[0]
    norms = rows.norm(dim=1, keepdim=True)
    zero = norms.squeeze(1) == 0
    unit = rows / norms.clamp_min(1e-12)
    cosine = unit @ unit.T
    cosine[zero[:, None] & zero[None, :]] = 1.0
    n = rows.shape[0]
    mean_cosine = ((cosine.sum() - cosine.diagonal().sum()) / max(1, n * (n - 1))).item()
    return {"distinct_units": int(distinct), "units": n, "mean_cosine": mean_cosine}


def layer_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
    """Per weighted layer, on one batch in eval mode: output std, weight-gradient std, symmetry."""
    layers = _linear_layers(model)
    outputs: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o.detach()))
             for k, layer in enumerate(layers)]  # fmt: skip
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        nn.functional.cross_entropy(model(x), y).backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    stats = []
    for k, layer in enumerate(layers):
        grad = layer.weight.grad
        stats.append({
            "layer": k + 1,
            "activation_std": outputs[k].std().item(),
            "gradient_std": grad.std().item() if grad is not None else 0.0,
            **unit_symmetry(layer.weight),
        })  # fmt: skip
    model.zero_grad(set_to_none=True)
    return stats


# --------------------------------------------------------------------------------------------
# One run and the whole comparison.


@dataclass
class RunResult:
    init: str
    seed: int
    batch_losses: list[float]
    val_accuracy: float
    val_accuracy_dropout: float  # measured in train mode, dropout active, as the seed's source did
    val_loss: float
    seconds: float
    at_init: list[dict] = field(default_factory=list)
    after_training: list[dict] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10% of batches (at least one)."""
        tail = self.batch_losses[-max(1, len(self.batch_losses) // 10) :]
        return float(np.mean(tail))


def _optimizer(config: LabConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)


def run_one(config: LabConfig, data: LabData, init: str, seed: int, probe: int = 1000) -> RunResult:
    """Train one network from initialization ``init``; every init sees the same batches per seed."""
    torch.manual_seed(seed)
    model = build_lab_model(config.model).to(data.train_x.device)
    init_module(model, init, sample=data.train_x[:probe])
    probe_x, probe_y = data.val_x[:probe], data.val_y[:probe]
    at_init = layer_statistics(model, probe_x, probe_y)
    optimizer = _optimizer(config, model)
    order = torch.Generator().manual_seed(seed)
    losses, started = [], time.perf_counter()
    model.train()
    for _ in range(config.epochs):
        for batch in torch.randperm(len(data.train_x), generator=order).split(config.batch_size):
            loss = nn.functional.cross_entropy(model(data.train_x[batch]), data.train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        logits = model(data.val_x)
        val_accuracy_dropout = (model.train()(data.val_x).argmax(1) == data.val_y).float().mean().item()
    val_loss = nn.functional.cross_entropy(logits, data.val_y).item()
    val_accuracy = (logits.argmax(1) == data.val_y).float().mean().item()
    return RunResult(init, seed, losses, val_accuracy, val_accuracy_dropout, val_loss, seconds, at_init,
                     layer_statistics(model, probe_x, probe_y))  # fmt: skip


def summarize(results: list[RunResult]) -> dict[str, dict[str, float]]:
    """Per init: mean and std over seeds of validation accuracy, final loss, validation loss."""
    summary = {}
    for init in dict.fromkeys(r.init for r in results):
        runs = [r for r in results if r.init == init]
        accuracy = np.array([r.val_accuracy for r in runs])
        summary[init] = {
            "val_accuracy_mean": float(accuracy.mean()),
            "val_accuracy_std": float(accuracy.std()),
            "val_accuracy_dropout_mean": float(np.mean([r.val_accuracy_dropout for r in runs])),
            "final_loss_mean": float(np.mean([r.final_loss for r in runs])),
            "val_loss_mean": float(np.nanmean([r.val_loss if math.isfinite(r.val_loss) else np.nan for r in runs])),
            "seeds": len(runs),
            "distinct_units_at_init": [s["distinct_units"] for s in runs[0].at_init],
            "distinct_units_after": [s["distinct_units"] for s in runs[0].after_training],
            "mean_cosine_at_init": [s["mean_cosine"] for s in runs[0].at_init],
            "mean_cosine_after": [s["mean_cosine"] for s in runs[0].after_training],
            "units": [s["units"] for s in runs[0].at_init],
        }
    return summary


def run_lab(config: LabConfig) -> dict:
    """Run every init over every seed; write plots, ``metrics.json`` and ``report.html``."""
    device = resolve_device(config.device)
    data = load_lab_data(config).to(device)
    log.info("init lab: %s, %d training and %d validation images", config.model, len(data.train_y), len(data.val_y))
    results = []
    runs = [(init, seed) for seed in range(config.seeds) for init in config.inits]
    for init, seed in tqdm(runs, desc="init lab", unit="run", leave=False):
        results.append(run_one(config, data, init, seed))
    summary = summarize(results)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "config": asdict(config),
        "num_train": len(data.train_y),
        "num_val": len(data.val_y),
        "results": summary,
        "seconds": sum(r.seconds for r in results),
        "layer_statistics": {
            init: {"at_init": next(r for r in results if r.init == init).at_init,
                   "after_training": next(r for r in results if r.init == init).after_training}
            for init in summary
        },  # fmt: skip
    }
    write_lab_report(out, config, results, summary)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
