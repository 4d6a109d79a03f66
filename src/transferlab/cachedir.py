"""The cache folder: where it is, what each kind of entry in it holds and costs on disk, and clearing it.

Every run reuses what an earlier one computed there (features of the same images through the same
network, the default's fold runs on the same labelled images, ONNX exports, unpacked data sets), so
it grows with every new folder trained on; ``transferlab cache`` shows it and ``--clear`` empties
it. Everything in it is recomputed on demand, except the package archives of the colour pool,
which ``make pool-data`` downloaded: ``--clear`` keeps those unless they are named.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

KINDS = {
    "features": "frozen networks' outputs and decoded pixels, per image set",
    "crossfit": "the default's fold runs and out-of-fold scores, per labelled image set",
    "onnx": "ONNX exports of frozen networks (float32, int8)",
    "datasets": "built-in data sets unpacked from their archives",
    "archives": "the colour pool's package archives (make pool-data; cleared only when named)",
}
KEPT_UNLESS_NAMED = ("archives",)


def default_cache_root() -> Path:
    """The cache folder when no ``--cache-dir`` is given: ``$TRANSFERLAB_CACHE``, else ~/.cache/transferlab."""
    return Path(os.environ.get("TRANSFERLAB_CACHE", Path.home() / ".cache" / "transferlab"))


@dataclass(frozen=True)
class CacheKind:
    """One kind of entry in the cache folder: its name, what it holds, its size and entry count."""

    name: str
    description: str
    bytes: int
    entries: int


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def cache_usage(root: Path) -> list[CacheKind]:
    """Each kind present in ``root`` (the known ones in :data:`KINDS`' order, then any other
    folder), with its size in bytes and its number of top-level entries."""
    if not root.is_dir():
        return []
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    names = [k for k in KINDS if k in present] + [n for n in present if n not in KINDS]
    return [CacheKind(name, KINDS.get(name, "not transferlab's"), _size(root / name),
                      sum(1 for _ in (root / name).iterdir())) for name in names]  # fmt: skip


def clear_cache(root: Path, kinds: list[str] | tuple[str, ...] = ()) -> int:
    """Remove the ``kinds`` named (none named: every kind of :data:`KINDS` but those in
    :data:`KEPT_UNLESS_NAMED`) from ``root``; returns the bytes freed. A name that is not a kind
    is refused before anything is removed."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown cache kind(s) {', '.join(unknown)}; the kinds are {', '.join(KINDS)}.")
    chosen = list(kinds) or [k for k in KINDS if k not in KEPT_UNLESS_NAMED]
    freed = 0
    for kind in chosen:
        folder = root / kind
        if folder.is_dir():
            freed += _size(folder)
            shutil.rmtree(folder)
    return freed
