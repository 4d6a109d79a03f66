"""Several processes under ``torchrun``: PyTorch DDP (gloo on CPU, NCCL on GPU), nothing home-made.

A single process is the special case of world size 1: every helper works without a process group.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init_from_env() -> None:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Only the main process writes outputs."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(count: int) -> np.ndarray:
    """The positions this process handles out of ``count`` (round-robin)."""
    return np.arange(rank(), count, world_size())


def gather_rows(rows: np.ndarray, count: int) -> np.ndarray:
    """Reassemble the full array from every process's :func:`shard` rows."""
    if not dist.is_initialized():
        return rows
    pieces: list = [None] * world_size()
    dist.all_gather_object(pieces, rows)
    full = np.empty((count, *rows.shape[1:]), dtype=rows.dtype)
    for r, piece in enumerate(pieces):
        full[np.arange(r, count, world_size())] = piece
    return full


def wrap(model: torch.nn.Module, device: str = "cpu") -> torch.nn.Module:
    """``model`` (on ``device``) in DistributedDataParallel when several processes train, else itself."""
    if not dist.is_initialized():
        return model
    devices = [torch.device(device).index] if device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=devices, find_unused_parameters=True)
