"""Training loops: ``fit_ridge_head`` (a new head computed in closed form on cached features of a
frozen body) and ``fit_network`` (a whole network on decoded images, with checkpoints, resume and
early stopping)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..config import TrainConfig
from ..ensemble import fit_temperature
from ..errors import ConfigError, TrainingDiverged
from ..features import predict_pixels, to_unit_float
from ..heads import LinearHead
from ..metrics import evaluate_logits
from ..transferability import ridge_classifier

log = logging.getLogger(__name__)


def _config_default(name: str):
    """``TrainConfig``'s default of ``name``: the trainer's settings have no defaults of their own."""
    return TrainConfig.__dataclass_fields__[name].default


EpochCallback = Callable[[dict, torch.Tensor], None]  # (the epoch's history row, its validation logits)

# Below this many validation images in the smallest class nothing is chosen on them: not the epoch
# (the whole schedule runs, its last epoch kept), nor the interpolation's alpha (``interpolate``), nor a
# closed-form head's temperature (its leave-one-out scores temper it instead: :func:`fit_ridge_head`).
CHOOSING_IMAGES = 10
PATIENCE = 3  # epochs without a validation-loss gain before training stops, where validation chooses the epoch


def smallest_class(labels: torch.Tensor | np.ndarray) -> int:
    """The images of the smallest class ``labels`` holds (0 for none)."""
    counts = np.bincount(np.asarray(labels))
    return int(counts[counts > 0].min()) if len(counts) else 0


def kept_epoch(history: list[dict]) -> dict:
    """The row of a head's ``history`` (:func:`fit_ridge_head`: its one row) whose weights it kept."""
    return next(row for row in history if row["kept"])


def resolved_patience(patience: int | None, val_labels: torch.Tensor | np.ndarray,
                      pretrained: bool = True) -> tuple[int, str]:  # fmt: skip
    """The early stopping a run gets, and why: ``patience`` as given, or :data:`PATIENCE` where the
    smallest validation class has :data:`CHOOSING_IMAGES` images or more, else 0 (none: the last
    epoch's weights kept, the cosine schedule run to its end) - for a network that starts
    ``pretrained`` (measured there); one from random weights keeps :data:`PATIENCE` (not measured)."""
    if patience is not None:
        return patience, "as given"
    smallest = smallest_class(val_labels)
    if smallest < CHOOSING_IMAGES and pretrained:
        return 0, (f"none: {smallest} validation image(s) in the smallest class, fewer than the {CHOOSING_IMAGES} to "
                   "choose an epoch by; the last epoch kept")  # fmt: skip
    return PATIENCE, f"the best validation epoch, after {PATIENCE} epochs without a gain"


def trains_on_validation(config: TrainConfig, val_labels: torch.Tensor | np.ndarray, val_given: bool) -> bool:
    """Whether a pretrained network trains on the validation images too: where nothing is chosen on
    them - no ``--patience`` given and fewer than :data:`CHOOSING_IMAGES` in the smallest class, so
    no early stop (:func:`resolved_patience`) and the interpolation's alpha fixed - unless
    ``--holdout`` keeps them out, the data set brought them (a ``val/`` folder: the user's own
    held-out images) or the network starts from random weights (it keeps its early stopping)."""
    entry = config.strategy_entry
    return (entry.trains_body and entry.pretrained and config.patience is None and not config.holdout and not val_given
            and smallest_class(val_labels) < CHOOSING_IMAGES)  # fmt: skip


def loss_weights(labels: torch.Tensor, num_classes: int, class_weight: str) -> torch.Tensor | None:
    """Per-class loss weights: ``None`` for "none"; for "balanced", n / (classes x count), so that
    every class weighs the same in the loss however many images it has (scikit-learn's rule)."""
    if class_weight != "balanced":
        return None
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).float()
    return len(labels) / (num_classes * counts)


def balanced_weights(labels: torch.Tensor, num_classes: int, class_weight: str) -> torch.Tensor | None:
    """:func:`loss_weights`' balanced weights under either balanced kind (what draws no batches - a
    closed-form head, a temperature, the default's combination - weighs instead); None for "none"."""
    return None if class_weight == "none" else loss_weights(labels, num_classes, "balanced")


def epoch_order(labels: torch.Tensor, class_weight: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The positions one epoch visits: a permutation; with "balanced-sampling", as many draws with
    replacement, each image weighted by 1 / its class's count, so every class comes up equally often."""
    if class_weight == "balanced-sampling":
        counts = torch.bincount(labels).float()
        return torch.multinomial(1.0 / counts[labels], len(labels), replacement=True, generator=generator)
    return torch.randperm(len(labels), generator=generator)


def fit_ridge_head(head: LinearHead, x: np.ndarray, y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                   on_epoch: Callable | None = None, class_weight: str = "none",
                   fit_val: bool = False) -> tuple[list[dict], torch.Tensor]:  # fmt: skip
    """``head`` set to the ridge classifier of leave-one-out strength on ``x`` (closed form:
    :func:`..transferability.ridge_classifier`; under a balanced ``class_weight``, either kind, each
    image's squared error weighted by :func:`balanced_weights`), its scores divided by a temperature
    of least cross-entropy so that their softmax is a probability (:func:`..ensemble.fit_temperature`)
    on scores of images it was not fitted on: the validation images' where their smallest class has
    :data:`CHOOSING_IMAGES` or more, else - or with ``fit_val``, the validation images fitted too -
    every fitted image's leave-one-out scores. Returns a one-row history (no epochs), with the penalty, its leave-one-out accuracy and
    the temperature, and the validation logits: the head's, or with ``fit_val`` their leave-one-out
    ones (each by the head fitted without it), so that they stay out of sample."""
    classes = head.fc.out_features
    fitted_x, fitted_y = (np.vstack([x, val_x]), np.concatenate([y, val_y])) if fit_val else (x, y)
    class_weights = balanced_weights(torch.from_numpy(np.asarray(fitted_y)), classes, class_weight)
    ridge = ridge_classifier(fitted_x, fitted_y, classes, None if class_weights is None else class_weights.numpy())
    if fit_val or smallest_class(val_y) < CHOOSING_IMAGES:
        unseen_scores, unseen_y = ridge.loo_scores, fitted_y
    else:
        unseen_scores, unseen_y = np.asarray(val_x, dtype=np.float64) @ ridge.weights + ridge.bias, val_y
    temperature = fit_temperature(torch.from_numpy(unseen_scores).float(), torch.from_numpy(np.asarray(unseen_y)),
                                  class_weights)  # fmt: skip
    with torch.no_grad():
        head.fc.weight.copy_(torch.from_numpy(ridge.weights.T / temperature))
        head.fc.bias.copy_(torch.from_numpy(ridge.bias / temperature))
    head.eval()
    with torch.no_grad():
        logits = {"train": head(torch.from_numpy(np.asarray(x, dtype=np.float32))),
                  "val": torch.from_numpy(ridge.loo_scores[len(x):] / temperature).float() if fit_val
                  else head(torch.from_numpy(np.asarray(val_x, dtype=np.float32)))}  # fmt: skip
    (train_loss, train_accuracy), (val_loss, val_accuracy) = (
        evaluate_logits(logits[name], torch.from_numpy(np.asarray(labels))) for name, labels in (("train", y), ("val", val_y)))
    row = {"epoch": 1, "train_loss": train_loss, "train_accuracy": train_accuracy, "val_loss": val_loss,
           "val_accuracy": val_accuracy, "lr": 0.0, "penalty": ridge.penalty, "loo_accuracy": ridge.loo_accuracy,
           "temperature": temperature}  # fmt: skip
    if on_epoch is not None:
        on_epoch(row, logits["val"])
    return [{**row, "kept": 1}], logits["val"]


# --------------------------------------------------------------------------------------------
# Whole-network training (finetune, scratch, pretrain): checkpoints, resume, early stopping.

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class NetworkTraining:
    """Settings for training a whole network on images (built from a ``TrainConfig`` by
    ``stages.network_settings``; the defaults here are TrainConfig's).

    ``layer_decay``: each layer group below the head gets ``lr * layer_decay**depth`` (1.0: one
    rate for all). ``gradual_unfreeze``: start with the top groups trainable and unfreeze the rest
    over the first half of the epochs. ``freeze_bn``: keep every BatchNorm's statistics fixed.
    """

    epochs: int
    lr: float
    batch_size: int = _config_default("batch_size")
    weight_decay: float = _config_default("weight_decay")
    warmup_epochs: float = _config_default("warmup_epochs")
    layer_decay: float = _config_default("layer_decay")
    patience: int | None = _config_default("patience")  # None: :func:`resolved_patience` decides from the validation split
    augment: bool = False
    flips: bool = True  # with ``augment``: half the images mirrored (off where mirroring changes labels)
    freeze_bn: bool = False
    gradual_unfreeze: bool = _config_default("gradual_unfreeze")
    seed: int = _config_default("seed")
    class_weight: str = _config_default("class_weight")  # "balanced": each class's loss weighted by n / (classes x
    # its count); "balanced-sampling": each epoch draws its images with replacement, every class equally likely
    micro_batch: int = 0  # > 0: each step's batch runs in passes of at most this many images, gradients accumulated
    schedule: str = _config_default("schedule")  # or "one-cycle"
    regularizer: str = _config_default("regularizer")  # "l2-sp": pull the body towards its starting weights; "bss"
    regularizer_strength: float = 0.0  # the config's resolved strength
    tune: str = _config_default("tune")  # which body parameters train: "all", "bias" (BitFit), "norm", "lora"
    device: str = "cpu"  # where the batches go (the model is there already)
    precision: str | None = None  # "bfloat16": autocast on a GPU (hardware.autocast_dtype); None: float32


NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def tunable(body: nn.Module, tune: str) -> set[int]:
    """The ids of ``body``'s parameters that train under ``tune``: every one, the biases only
    (BitFit: Ben Zaken, Ravfogel, Goldberg, ACL 2022), those of the normalization layers, or the
    LoRA adapters."""
    if tune == "bias":
        return {id(p) for name, p in body.named_parameters() if name.endswith("bias")}
    if tune == "norm":
        return {id(p) for m in body.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    if tune == "lora":  # the adapters that trainer.lora injected
        return {id(p) for name, p in body.named_parameters() if "lora_" in name}
    return {id(p) for p in body.parameters()}


def layer_groups(model: nn.Module, settings: NetworkTraining) -> list[dict]:
    """Optimizer parameter groups: head at ``lr``, body groups scaled by ``layer_decay**depth``.

    Uses timm's per-block grouping (``param_groups_layer_decay``, bottom to top, no weight decay
    on biases and norms) where the body has timm's ``group_matcher``, also at ``layer_decay=1``
    so that gradual unfreezing has groups to open; otherwise the whole body is one group at
    ``lr * layer_decay``.
    """
    from timm.optim import param_groups_layer_decay

    body = model.body if hasattr(model.body, "group_matcher") else getattr(model.body, "model", model.body)
    body_decay = 0.0 if settings.regularizer == "l2-sp" else settings.weight_decay  # L2-SP replaces decay to zero
    if hasattr(body, "group_matcher"):
        groups = param_groups_layer_decay(body, body_decay, layer_decay=settings.layer_decay)
        allowed = tunable(body, settings.tune)
        groups = [{**g, "params": [p for p in g["params"] if id(p) in allowed]} for g in groups]
        groups = [g for g in groups if g["params"]]
    else:
        allowed = tunable(body, settings.tune)
        groups = [{"params": [p for p in body.parameters() if id(p) in allowed], "weight_decay": body_decay,
                   "lr_scale": settings.layer_decay}]  # fmt: skip
        if settings.gradual_unfreeze:
            log.warning("gradual unfreezing opens layer groups, and this body (%s) is one group: it trains whole "
                        "from the start", type(body).__name__)  # fmt: skip
    groups.append({"params": list(model.head.parameters()), "weight_decay": settings.weight_decay, "lr_scale": 1.0})
    for group in groups:
        group["lr"] = settings.lr * group["lr_scale"]
    return groups


ONE_CYCLE_START, ONE_CYCLE_END, ONE_CYCLE_RISE = 1 / 25, 1 / 25e4, 0.3  # fastai's and PyTorch's OneCycleLR defaults


def _one_cycle(total: int):
    """Smith's one-cycle policy ("Super-convergence", 2018) as fastai runs it: the rate rises from
    1/25 of the maximum to the maximum over the first 30% of the steps, then falls to 1/25e4 of it,
    both along a cosine."""
    rise = max(1, int(ONE_CYCLE_RISE * total))

    def between(start: float, end: float, progress: float) -> float:
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def factor(step: int) -> float:
        if step < rise:
            return between(ONE_CYCLE_START, 1.0, step / rise)
        return between(1.0, ONE_CYCLE_END, (step - rise) / max(1, total - rise))

    return factor


def _schedule(settings: NetworkTraining, steps_per_epoch: int):
    """The learning-rate factor per optimizer step: linear warm-up, then cosine decay to zero; or one-cycle."""
    total = settings.epochs * steps_per_epoch
    if settings.schedule == "one-cycle":
        return _one_cycle(total)
    warmup = min(total - 1, int(settings.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# The version of the augmentation recipe (2: no mirroring where the mirror test says it changes labels,
# trainer/network.py): raising it scores the check's augmented folds again.
AUGMENTATION_RECIPE = 2


def augment_batch(pixels: torch.Tensor, flips: bool = True) -> torch.Tensor:
    """Light augmentation on uint8 N x 3 x R x R: random resized crop (scale 0.6-1), and with
    ``flips`` half the images mirrored left to right."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    size = pixels.shape[-1]
    out = torch.empty_like(pixels)
    for i, image in enumerate(pixels):
        top, left, height, width = v2.RandomResizedCrop.get_params(image, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3))
        image = TF.resized_crop(image, top, left, height, width, [size, size], antialias=True)
        out[i] = TF.horizontal_flip(image) if torch.rand(()) < 0.5 and flips else image
    return out


def _freeze_untunable(model: nn.Module, trainable: list[nn.Parameter]) -> None:
    """Body parameters outside the optimizer's groups (``tune``) get no gradients at all."""
    body = getattr(model, "body", None)
    if body is not None:
        keep = {id(p) for p in trainable}
        for p in body.parameters():
            p.requires_grad_(id(p) in keep)


def _set_unfrozen(groups: list[dict], epoch: int, settings: NetworkTraining) -> None:
    """Gradual unfreezing: the top share of body groups that is trainable in ``epoch``."""
    body = groups[:-1]
    if settings.gradual_unfreeze:
        ramp = max(1, settings.epochs // 2)
        keep = math.ceil(len(body) * min(1.0, (epoch + 1) / ramp))
    else:
        keep = len(body)
    for k, group in enumerate(body):
        for p in group["params"]:
            p.requires_grad_(k >= len(body) - keep)


def l2_sp_penalty(anchors: dict[nn.Parameter, torch.Tensor], strength: float) -> torch.Tensor:
    """L2-SP (Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with
    Convolutional Networks", ICML 2018): ``strength / 2`` times the squared distance of the body's
    trainable weights from their pretrained values."""
    return strength / 2 * sum(((p - start) ** 2).sum() for p, start in anchors.items() if p.requires_grad)


BSS_COMPONENTS = 1  # how many of the smallest singular values BSS shrinks (the paper's k = 1)


def bss_penalty(features: torch.Tensor, strength: float, k: int = BSS_COMPONENTS) -> torch.Tensor:
    """Batch Spectral Shrinkage (Chen, Wang, Fu, Long, Wang, "Catastrophic Forgetting Meets Negative
    Transfer", NeurIPS 2019): ``strength`` times the sum of the ``k`` smallest squared singular
    values of the batch's feature matrix, the components least transferable from the source."""
    singular = torch.linalg.svdvals(features.float())
    return strength * (singular[-k:] ** 2).sum()


def prepare_trainable(model: nn.Module, groups: list[dict], settings: NetworkTraining) -> dict | None:
    """Only the optimizer's body parameters (``tune``) get gradients; returns L2-SP's anchors
    (their starting values) when that regularizer is on, else ``None``."""
    trainable = [p for group in groups[:-1] for p in group["params"]]
    _freeze_untunable(model, trainable)
    return {p: p.detach().clone() for p in trainable} if settings.regularizer == "l2-sp" else None


def accumulate_gradients(net: nn.Module, batch: torch.Tensor, pixels: torch.Tensor, labels: torch.Tensor,
                weight: torch.Tensor | None, settings: NetworkTraining,
                anchors: dict[nn.Parameter, torch.Tensor] | None = None) -> tuple[float, int]:  # fmt: skip
    """Forward and backward over ``batch`` in micro-batches, the gradients summed as one batch's
    (each pass's loss scaled by its share; the L2-SP penalty, with ``anchors``, added once).
    Returns the batch's mean loss and how many were right."""
    chunks = batch.split(settings.micro_batch) if settings.micro_batch else (batch,)
    features: list[torch.Tensor] = []  # with BSS: each pass's input to the head
    hook = (getattr(net, "module", net).head.register_forward_pre_hook(lambda _m, args: features.append(args[0]))
            if settings.regularizer == "bss" else None)  # fmt: skip
    try:
        return _passes(net, chunks, batch, pixels, labels, weight, settings, anchors, features)
    finally:
        if hook is not None:
            hook.remove()


def _passes(net, chunks, batch, pixels, labels, weight, settings, anchors, features) -> tuple[float, int]:
    """The passes of :func:`accumulate_gradients`, one per chunk of ``batch``."""
    total, correct = 0.0, 0
    for k, chunk in enumerate(chunks):
        inputs, targets = _to_device(pixels[chunk], settings.device), _to_device(labels[chunk], settings.device)
        sync = k == len(chunks) - 1 or not hasattr(net, "no_sync")  # DDP: all-reduce once per step
        with contextlib.nullcontext() if sync else net.no_sync(), _autocast(settings):
            logits = net(to_unit_float(augment_batch(inputs, settings.flips) if settings.augment else inputs)).float()
            loss = nn.functional.cross_entropy(logits, targets, weight=weight)
            if not torch.isfinite(loss):
                return float(loss.item()), 0
            scaled = loss * (len(chunk) / len(batch))
            if anchors and sync:  # once per step, in the pass that synchronizes
                scaled = scaled + l2_sp_penalty(anchors, settings.regularizer_strength)
            if features:  # BSS: on this pass's features
                scaled = scaled + bss_penalty(features.pop(), settings.regularizer_strength) * (len(chunk) / len(batch))
            scaled.backward()
        total += loss.item() * len(chunk)
        correct += (logits.argmax(1) == targets).sum().item()
    return total / len(batch), correct


def _to_device(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """``tensor`` on ``device``: through pinned memory and a non-blocking copy to a GPU; itself on the CPU."""
    if device == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _autocast(settings: NetworkTraining):
    """Mixed precision where the device supports it (``settings.precision``), else nothing."""
    if settings.precision is None:
        return contextlib.nullcontext()
    return torch.autocast(settings.device.partition(":")[0], dtype=getattr(torch, settings.precision))


def _resumable(settings: dict | None) -> dict | None:
    """The settings a resumed run must share: all but the micro-batch, which the memory budget
    chooses from what the machine has free at the start of each run, and the device."""
    return {k: v for k, v in settings.items() if k not in ("micro_batch", "device", "precision")} if settings else settings


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to a temporary file and rename it: the previous checkpoint survives any failure."""
    partial = path.with_suffix(".tmp")
    try:
        torch.save(state, partial)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OSError(f"could not write checkpoint {path} ({error}); the previous checkpoint is intact") from error


@dataclass
class _Progress:
    """What a run of :func:`fit_network` has behind it, all of it in the checkpoint: the history, the
    best validation loss and its weights, the epochs since it improved, the next epoch."""

    history: list[dict] = field(default_factory=list)
    best_loss: float = float("inf")
    best_state: dict | None = None
    stale: int = 0
    start: int = 0
    finished: bool = False  # restored from a finished run's checkpoint

    def record(self, row: dict, model: nn.Module, keep_best: bool = True) -> None:
        """Add the epoch's ``row``; keep the weights when its validation loss is the best yet (and
        ``keep_best``: a run that ends on its last epoch copies none)."""
        self.history.append(row)
        if row["val_loss"] < self.best_loss:
            best = copy.deepcopy(model.state_dict()) if keep_best else None
            self.best_loss, self.best_state, self.stale = row["val_loss"], best, 0
        else:
            self.stale += 1


def _restored(path: Path, settings: NetworkTraining, model: nn.Module, optimizer, scheduler) -> _Progress:
    """The state of the interrupted run checkpointed at ``path``, loaded into ``model``, ``optimizer``
    and ``scheduler`` (a finished run's: its final weights, nothing left to train); refused when that
    run's settings differ."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if _resumable(state.get("settings")) != _resumable(dataclasses.asdict(settings)):
        raise ConfigError(
            f"{path} was written by a run with other settings ({state.get('settings')}); resume with the same "
            "options, or start afresh without --resume."
        )
    model.load_state_dict(state["model"])
    if state.get("finished"):
        log.info("%s holds a finished run: its weights, no training left", path)
        return _Progress(state["history"], state["best_loss"], None, state["stale"], settings.epochs, finished=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resuming from %s after epoch %d", path, state["epoch"] + 1)
    return _Progress(state["history"], state["best_loss"], state["best_state"], state["stale"], state["epoch"] + 1)


def _finished_state(model: nn.Module, progress: _Progress, settings: NetworkTraining) -> dict:
    """What a finished run's checkpoint keeps: the weights it ended with, its history and settings -
    enough for ``resume`` to give the same model again, without the optimizer's moments and the
    second copy of the weights that only an unfinished run needs (a quarter of the size under AdamW)."""
    return {"model": model.state_dict(), "history": progress.history, "best_loss": progress.best_loss,
            "stale": progress.stale, "epoch": len(progress.history) - 1, "settings": dataclasses.asdict(settings),
            "finished": True}  # fmt: skip


@dataclass(frozen=True)
class _Step:
    """What one optimizer step needs besides the batch: the network (wrapped for DDP), the optimizer
    and its schedule, the images and labels, the class weights, L2-SP's anchors, the settings."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    pixels: torch.Tensor
    labels: torch.Tensor
    weight: torch.Tensor | None
    anchors: dict | None
    settings: NetworkTraining


def _train_epoch(step: _Step, batches: tuple[torch.Tensor, ...], epoch: int, checkpoint: Path | None) -> tuple[float, float]:
    """One pass over ``batches``: the mean training loss and accuracy; a non-finite loss stops the
    run, naming the last good ``checkpoint``."""
    total_loss, correct, seen = 0.0, 0, 0
    settings = step.settings
    with tqdm(batches, desc=f"epoch {epoch + 1}/{settings.epochs}", unit="batch", leave=False,
              disable=None if distributed.is_main() else True) as bar:  # fmt: skip
        for number, batch in enumerate(bar):
            step.optimizer.zero_grad(set_to_none=True)
            loss, right = accumulate_gradients(step.net, batch, step.pixels, step.labels, step.weight, settings, step.anchors)
            if not math.isfinite(loss):
                where = f"the last good checkpoint is {checkpoint}" if checkpoint and checkpoint.exists() else (
                    "no checkpoint was written yet")  # fmt: skip
                raise TrainingDiverged(f"The loss became {loss} at epoch {epoch + 1}, batch {number + 1}; {where}. "
                                       "Try a lower --lr.")  # fmt: skip
            step.optimizer.step()
            step.scheduler.step()
            total_loss, correct, seen = total_loss + loss * len(batch), correct + right, seen + len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    return total_loss / seen, correct / seen


def fit_network(
    model: nn.Module,
    groups: list[dict],
    train_pixels: torch.Tensor,
    train_y: torch.Tensor,
    val_pixels: torch.Tensor,
    val_y: torch.Tensor,
    settings: NetworkTraining,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on uint8 images with AdamW, warm-up + cosine, early stopping on val loss
    (``groups`` and ``settings``: from ``network.setup_network``).

    Every epoch reseeds from ``settings.seed`` (data order, augmentation, dropout), and a
    checkpoint (model, optimizer, scheduler, history, best weights) is written atomically after
    each epoch, so ``resume=True`` continues an interrupted run to the same result. The model
    ends with the weights of its best validation epoch, or of its last where
    :func:`resolved_patience` says validation is too small to choose by; the checkpoint then
    shrinks to those weights and the history (:func:`_finished_state`), which a resume restores
    without training.
    """
    world = distributed.world_size()
    per_process_batch = max(1, settings.batch_size // world)
    usable = len(train_pixels) - len(train_pixels) % world  # every process takes the same number of steps
    optimizer = torch.optim.AdamW(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings, math.ceil(usable // world / per_process_batch)))
    model.to(memory_format=torch.channels_last)
    if hasattr(model, "freeze_bn"):
        model.freeze_bn = settings.freeze_bn
    weight = loss_weights(train_y, int(train_y.max()) + 1, settings.class_weight)
    weight = weight.to(settings.device) if weight is not None else None
    step = _Step(distributed.wrap(model, settings.device), optimizer, scheduler, train_pixels, train_y, weight,
                 prepare_trainable(model, groups, settings), settings)  # fmt: skip
    path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir else None
    if checkpoint_dir and distributed.is_main():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    progress = _restored(path, settings, model, optimizer, scheduler) if resume and path and path.exists() else _Progress()
    patience, _ = resolved_patience(settings.patience, val_y)
    for epoch in range(progress.start, settings.epochs):
        if patience and progress.stale >= patience:
            break
        torch.manual_seed(settings.seed * 100_003 + epoch)
        _set_unfrozen(groups, epoch, settings)
        model.train()
        lr = optimizer.param_groups[-1]["lr"]
        order = epoch_order(train_y, settings.class_weight)[:usable][distributed.rank() :: world]
        train_loss, train_accuracy = _train_epoch(step, order.split(per_process_batch), epoch, path)
        val_logits = predict_pixels(model, val_pixels, settings.micro_batch or per_process_batch)
        val_loss, val_accuracy = evaluate_logits(val_logits, val_y, weight)
        progress.record({"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_accuracy,
                         "val_loss": val_loss, "val_accuracy": val_accuracy, "lr": lr}, model, patience > 0)  # fmt: skip
        if on_epoch is not None and distributed.is_main():
            on_epoch(progress.history[-1], val_logits)
        log.info("epoch %d: train loss %.4f, val loss %.4f, val accuracy %.4f", epoch + 1, train_loss, val_loss, val_accuracy)
        if path and distributed.is_main():
            _save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "epoch": epoch, "history": progress.history,
                                    "best_loss": progress.best_loss, "best_state": progress.best_state,
                                    "stale": progress.stale, "settings": dataclasses.asdict(settings)})  # fmt: skip
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    if path and distributed.is_main() and not progress.finished:
        _save_checkpoint(path, _finished_state(model, progress, settings))
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    return progress.history
