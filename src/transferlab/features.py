"""Features of a frozen body, computed once per image and cached on disk.

A cache entry is keyed by a fingerprint of everything that decides the features: the body's
weights and cut, the resolution and normalization, and the exact images. It is written to a
temporary folder and renamed into place, so an interrupted run never leaves a half entry. Within a
run, other subsets of images it has passed already (the folds of the out-of-fold check, each a
different cut of the labelled images) are gathered from the rows those passes gave.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .data import ImageSet
from .engines import OnnxRunner
from .errors import DataError
from .images import UNREADABLE

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Features:
    """Feature vectors of an image set; rows of unreadable images are zero and marked invalid."""

    values: np.ndarray  # N x D float32
    valid: np.ndarray  # N bool
    skipped: tuple[str, ...]  # descriptions of the images that could not be read

    def readable(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the readable images and their ``labels``: the values themselves (a file's
        pages, for cached values) when every image was readable, else an in-memory copy."""
        values = self.values if self.valid.all() else np.asarray(self.values[self.valid])
        return values, np.asarray(labels)[self.valid]


_WARNED: set[str] = set()  # the unreadable images a warning has named already


class DecodedImages(torch.utils.data.Dataset):
    """Item i: (uint8 3 x R x R tensor, readable?) for image i of an ImageSet at resolution R."""

    def __init__(self, images: ImageSet, resolution: int, strict: bool = False):
        self.images = images
        self.resolution = resolution
        self.strict = strict

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            pixels = self.images.square(i, self.resolution)
        except UNREADABLE as error:
            described = self.images.describe(i)
            message = f"cannot read image {described}: {error}"
            if self.strict:
                raise DataError(message) from error
            # each unreadable image warned of once in a process, not once a pass
            log.log(logging.DEBUG if described in _WARNED else logging.WARNING, "skipping %s", message)
            _WARNED.add(described)
            return torch.zeros(3, self.resolution, self.resolution, dtype=torch.uint8), False
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), True


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float32 in [0, 1], channels-last in memory (faster convs on CPU)."""
    return batch.float().div_(255).contiguous(memory_format=torch.channels_last)


class _RowWriter:
    """Rows that arrive in chunks, kept in memory or streamed into a ``.npy`` file.

    Streaming keeps memory flat however many images there are: each chunk is written and
    dropped, and the finished file is memory-mapped read-only.
    """

    def __init__(self, count: int, path: Path | None = None):
        self.count, self.path, self.filled = count, path, 0
        self.array: np.ndarray | None = None
        self.handle = None

    def add(self, chunk: np.ndarray) -> None:
        if self.array is None and self.handle is None:
            shape = (self.count, *chunk.shape[1:])
            if self.path is None:
                self.array = np.empty(shape, dtype=chunk.dtype)
            else:
                self.handle = open(self.path, "wb")
                header = {"descr": np.lib.format.dtype_to_descr(chunk.dtype), "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(self.handle, header)
        if self.array is not None:
            self.array[self.filled : self.filled + len(chunk)] = chunk
        else:
            self.handle.write(np.ascontiguousarray(chunk).tobytes())
        self.filled += len(chunk)

    def finish(self, empty_shape: tuple[int, ...]) -> np.ndarray:
        if self.handle is not None:
            self.handle.close()
            return np.load(self.path, mmap_mode="c")  # copy-on-write: writable views, the file untouched
        return self.array if self.array is not None else np.zeros(empty_shape, dtype=np.float32)


@torch.inference_mode()
def run_batch(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The one place a model runs over images: uint8 N x 3 x R x R -> unit floats (channels-last)
    -> ``model``'s outputs, without gradients, in whatever mode ``model`` is in (ONNX Runtime
    engines convert the pixels themselves)."""
    if isinstance(model, OnnxRunner):
        return model.run_pixels(pixels)
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device.type != "cpu":  # batches go where the model is
        pixels = pixels.pin_memory().to(parameter.device, non_blocking=True)
    return model(to_unit_float(pixels)).float().cpu()


def predict_pixels(model: nn.Module, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Outputs of ``model`` in eval mode over decoded uint8 images held in memory, batch by batch."""
    model.eval()
    if not len(pixels):
        return torch.zeros(0)
    return torch.cat([run_batch(model, chunk) for chunk in pixels.split(batch_size)])


def compute_outputs(
    model: nn.Module | None,
    images: ImageSet,
    resolution: int,
    batch_size: int = 64,
    strict: bool = False,
    desc: str = "features",
    sink: Path | None = None,
) -> Features:
    """Decode every image once and run ``model`` (images in [0, 1] -> vectors: features or
    logits) over it in eval mode.

    With ``model=None`` the values are the decoded uint8 pixels (N x 3 x R x R) themselves. With
    ``sink``, the values stream into that ``.npy`` file instead of memory. Rows of unreadable
    images are zero.
    """
    if model is not None:  # outside inference mode: converted parameters must stay trainable tensors
        model.eval().to(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(DecodedImages(images, resolution, strict), batch_size=batch_size)
    writer, valid = _RowWriter(len(images), sink), np.zeros(len(images), dtype=bool)
    with tqdm(total=len(images), desc=desc, unit="img", leave=False) as progress:
        for pixels, ok in loader:
            chunk = pixels.numpy() if model is None else run_batch(model, pixels).numpy()
            chunk[~ok.numpy()] = 0
            valid[writer.filled : writer.filled + len(ok)] = ok.numpy()
            writer.add(chunk)
            progress.update(len(ok))
    values = writer.finish((0, 0))
    skipped = tuple(images.describe(i) for i in np.flatnonzero(~valid))
    return Features(values, valid, skipped)


def digest(parts: dict) -> str:
    """A short stable digest of JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cache_key(images: ImageSet, resolution: int, model: dict) -> str:
    """The key of a cache entry, the only way one is built: what computes the values (``model``:
    named parts such as the weights' digest, the cut, the normalization and the engine; ``{}``
    for decoded pixels) and the exact images at that resolution."""
    return digest({"model": model, "images": images.fingerprint(), "resolution": resolution, "version": 3})


def computation_key(resolution: int, model: dict, fit: str) -> str:
    """What computes an entry's values, whatever the images (see :func:`cache_key`): the model, and
    the resolution and fit the images are made square at."""
    return digest({"model": model, "resolution": resolution, "fit": fit})


class FeatureCache:
    """A folder of feature entries, one sub-folder per key; and, for the run that holds it, which
    entry holds each image's row it has computed or loaded, so that other subsets of those images
    (the folds of the out-of-fold check) are gathered from those entries instead of computed again."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._rows: dict[str, dict[tuple, tuple[str, int]]] = {}  # computation -> image origin -> (entry key, row)

    def remember(self, computation: str, images: ImageSet, key: str) -> None:
        """Note that entry ``key`` holds the rows of ``images`` computed by ``computation``, for :meth:`gather`."""
        rows = self._rows.setdefault(computation, {})
        for row, origin in enumerate(images.origins()):
            rows[origin] = (key, row)

    def unseen(self, computation: str, images: ImageSet) -> np.ndarray:
        """The positions of ``images`` whose rows by ``computation`` this cache has not computed or loaded."""
        rows = self._rows.get(computation, {})
        return np.asarray([i for i, origin in enumerate(images.origins()) if origin not in rows], dtype=np.int64)

    def gather(self, computation: str, images: ImageSet) -> Features | None:
        """The rows of ``images`` from the entries this cache has computed or loaded by
        ``computation``; None unless every image has one in an entry that still loads whole (one that
        does not is forgotten)."""
        rows = self._rows.get(computation, {})
        found = [rows.get(origin) for origin in images.origins()]
        if not found or any(item is None for item in found):
            return None
        keys, at = np.asarray([key for key, _ in found]), np.asarray([row for _, row in found])
        entries = {key: self.load(key) for key in np.unique(keys)}  # each entry read once, however its rows interleave
        damaged = {key for key, entry in entries.items() if entry is None}  # or removed since
        if damaged:
            self._rows[computation] = {origin: place for origin, place in rows.items() if place[0] not in damaged}
            return None
        some = next(iter(entries.values())).values
        values, valid = np.empty((len(found), *some.shape[1:]), dtype=some.dtype), np.empty(len(found), dtype=bool)
        for key, entry in entries.items():
            mine = keys == key
            values[mine], valid[mine] = entry.values[at[mine]], entry.valid[at[mine]]
        return Features(values, valid, tuple(images.describe(i) for i in np.flatnonzero(~valid)))

    def load(self, key: str) -> Features | None:
        entry = self.root / key
        try:
            meta = json.loads((entry / "meta.json").read_text())
            values = np.load(entry / "features.npy", mmap_mode="c")
            valid = np.load(entry / "valid.npy")
        except (OSError, ValueError):
            return None
        if values.shape[0] != meta["count"] or valid.shape[0] != meta["count"]:
            log.warning("feature cache entry %s is inconsistent; recomputing", entry)
            return None
        return Features(np.asarray(values), valid, tuple(meta["skipped"]))

    def _remove_abandoned_staging(self) -> None:
        """Staging folders of processes that died mid-write (e.g. SIGKILL) are deleted."""
        for staging in self.root.glob(".*-*-*"):
            try:
                os.kill(int(staging.name.split("-")[1]), 0)
            except (ValueError, IndexError):
                continue
            except ProcessLookupError:
                log.info("removing %s, left by a process that was killed while writing", staging)
                shutil.rmtree(staging, ignore_errors=True)
            except PermissionError:
                continue  # alive, another user's

    def write(self, key: str, fill: Callable[[Path], Features]) -> Features:
        """Create entry ``key``: ``fill(path)`` writes ``features.npy`` at ``path`` and returns the
        features; the entry appears under its key only once complete (staging folder, rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_staging()
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}-{os.getpid()}-"))
        try:
            features = fill(staging / "features.npy")
            np.save(staging / "valid.npy", features.valid)
            meta = {"count": int(features.valid.shape[0]), "skipped": list(features.skipped)}
            (staging / "meta.json").write_text(json.dumps(meta))
            os.replace(staging, self.root / key)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (self.root / key).exists():
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.load(key) or features

    def save(self, key: str, features: Features) -> None:
        """Store features computed elsewhere (e.g. gathered from several processes)."""
        self.write(key, lambda path: (np.save(path, features.values), features)[1])


def cached_features(
    model: nn.Module | None,
    model_parts: dict,
    images: ImageSet,
    resolution: int,
    cache: FeatureCache | None,
    strict: bool = False,
    desc: str = "features",
) -> tuple[Features, bool]:
    """Outputs of ``model`` over ``images`` from the cache when present, else computed and stored.

    ``model_parts`` names what decides the outputs (see :func:`cache_key`). ``model=None``
    caches the decoded pixels instead (see :func:`compute_outputs`). Images this run has passed
    already (by the same model, in other subsets) are gathered from those passes, only the others
    computed (:meth:`FeatureCache.gather`). Returns the features and whether every image came from
    the cache.
    """
    if cache and (known := _known(model, model_parts, images, resolution, cache, strict, desc)) is not None:
        return known
    key = cache_key(images, resolution, model_parts)
    if distributed.world_size() == 1:
        if cache is None:
            return compute_outputs(model, images, resolution, strict=strict, desc=desc), False
        fill = lambda path: compute_outputs(model, images, resolution, strict=strict, desc=desc, sink=path)  # noqa: E731
        features = cache.write(key, fill)
    else:
        features = _compute_sharded(model, images, resolution, strict, desc)
        if cache and distributed.is_main():
            cache.save(key, features)
        distributed.barrier()
    if cache:
        cache.remember(computation_key(resolution, model_parts, images.fit), images, key)
    return features, False


def _known(model: nn.Module | None, model_parts: dict, images: ImageSet, resolution: int, cache: FeatureCache,
           strict: bool, desc: str) -> tuple[Features, bool] | None:  # fmt: skip
    """What ``cache`` has of ``images``' features (as :func:`cached_features` returns them): its
    entry for them; else their rows gathered from the passes this run computed or loaded, only the
    images none of them had computed (:meth:`FeatureCache.gather`); None where it has none."""
    key, computation = cache_key(images, resolution, model_parts), computation_key(resolution, model_parts, images.fit)
    if (entry := cache.load(key)) is not None:
        cache.remember(computation, images, key)
        found, unseen, whence = entry, 0, f"cache {cache.root / key}"
    else:
        positions = cache.unseen(computation, images)
        if len(positions) == len(images):
            return None
        if len(positions):
            cached_features(model, model_parts, images.subset(positions), resolution, cache, strict, desc)
        found, unseen = cache.gather(computation, images), len(positions)
        if found is None:  # an entry it would gather from no longer loads: computed whole
            return None
        whence = "the rows of this run's earlier passes" + (f" and {unseen} computed now" if unseen else "")
    if strict and found.skipped:
        raise DataError(f"cannot read image {found.skipped[0]} (cached as unreadable; --strict)")
    log.info("%s: %d images from %s", desc, len(images), whence)
    return found, not unseen


def _compute_sharded(model: nn.Module | None, images: ImageSet, resolution: int, strict: bool, desc: str) -> Features:
    """compute_outputs, with each process of a torchrun group doing its share of the images."""
    part = compute_outputs(model, images.subset(distributed.shard(len(images))), resolution, strict=strict, desc=desc)
    values = distributed.gather_rows(np.asarray(part.values), len(images))
    valid = distributed.gather_rows(part.valid, len(images))
    return Features(values, valid, tuple(images.describe(i) for i in np.flatnonzero(~valid)))
