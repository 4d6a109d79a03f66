"""Memory of whole-network training: what a run used, and a batch plan that keeps it inside a budget.

The budget is kept by the micro-batch: each optimizer step of ``batch_size`` images runs as
``accumulation`` forward/backward passes of at most ``micro_batch`` images whose gradients add up,
so the effective batch - and the optimization - stays the same while the activations held at once
shrink. Activations per image are estimated from one forward pass: the sum of every leaf module's
output, times ``ACTIVATION_SHARE``, measured end to end on EfficientNet-Lite0 at 224 px with
tcmalloc (`train --strategy finetune`, batch 64: the peak resident memory of the whole run grew by
5.07 GB over what preceded training with passes of 64 images, 2.60 GB with passes of 32: about 80 MB
per image, where the leaf outputs sum to 96 MB).
"""

from __future__ import annotations

import logging
import math
import resource
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

ACTIVATION_SHARE = 0.9
GIB = 2**30
GPU_SHARE = 0.8  # of a GPU's free memory: the rest for the allocator's fragmentation and the kernels' workspaces


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def gpu_free_bytes(device: str) -> int:
    """What the GPU can still give this process: its free memory and what PyTorch's allocator keeps
    cached for reuse (earlier runs' tensors, freed)."""
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


@torch.no_grad()
def activation_bytes_per_image(model: nn.Module, resolution: int) -> int:
    """Estimated training activations of one image: every leaf module's output in one forward pass."""
    total = [0]
    hooks = [m.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + out.numel() * out.element_size()))
             for m in model.modules() if not list(m.children())]  # fmt: skip
    was_training = model.training
    try:
        model.eval()(torch.rand(1, 3, resolution, resolution, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return int(total[0] * ACTIVATION_SHARE)


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int
    accumulation: int  # forward/backward passes per optimizer step


def plan_batches(budget: int, held: int, training: int, per_image: int, batch_size: int) -> BatchPlan:
    """The largest micro-batch whose activations (``per_image`` bytes each) fit ``budget`` bytes beside
    the ``held`` ones (what the process holds before training) and the ``training`` ones (its
    gradients and optimizer state), and the accumulation that keeps the effective batch at
    ``batch_size`` (split as evenly as possible). Where the process already holds so much that not
    one image would fit - memory that earlier runs freed stays resident under the allocator and is
    used again, so a long study or the out-of-fold check would otherwise stop half-way - the budget
    bounds what training adds instead, and says so."""
    room = budget - held - training
    if room < per_image <= budget - training:
        log.warning("the process already holds %.2f GB (earlier runs' memory, kept by the allocator for reuse), more "
                    "than max_memory %.2f GB leaves for one image: the budget bounds what training adds instead",
                    held / GIB, budget / GIB)  # fmt: skip
        room = budget - training
    if room < per_image:
        raise ConfigError(f"max_memory must leave room for at least one image in training: its gradients and "
                          f"optimizer state take {training / GIB:.2f} GB and one image needs {per_image / GIB:.2f} GB; "
                          f"got a budget of {budget / GIB:.2f} GB.")  # fmt: skip
    fits = min(batch_size, room // per_image)
    accumulation = math.ceil(batch_size / fits)
    return BatchPlan(math.ceil(batch_size / accumulation), accumulation)


def plan_for(model: nn.Module, resolution: int, batch_size: int, budget_gb: float | None,
             device: str = "cpu") -> BatchPlan:  # fmt: skip
    """The batch plan for training ``model`` on ``device`` now: inside ``budget_gb`` of resident
    memory on the CPU (``None``: no budget); on a GPU, inside the memory the GPU has free (the
    activations live there, not in the process's resident memory)."""
    if budget_gb is None and not device.startswith("cuda"):
        return BatchPlan(batch_size, 1)
    optimizer_state = 3 * sum(p.numel() * p.element_size() for p in model.parameters())  # grads, Adam's two moments
    per_image = activation_bytes_per_image(model, resolution)
    if device.startswith("cuda"):
        return plan_batches(int(gpu_free_bytes(device) * GPU_SHARE), 0, optimizer_state, per_image, batch_size)
    return plan_batches(int(budget_gb * GIB), current_rss_bytes(), optimizer_state, per_image, batch_size)
