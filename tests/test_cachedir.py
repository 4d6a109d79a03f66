"""The cache folder: sizes by kind, clearing what is recomputed on demand, refusing unknown kinds."""

from pathlib import Path

import pytest
from conftest import run_here

from transferlab.cachedir import KINDS, cache_usage, clear_cache, default_cache_root
from transferlab.config import TrainConfig
from transferlab.errors import ConfigError


def _fill(root: Path) -> None:
    """features: two entries of 1,000 + 500 bytes; crossfit: one of 300; archives: one of 200; a stranger."""
    for path, size in (("features/a/values.npy", 1000), ("features/b/values.npy", 500), ("crossfit/x/fold-0.npz", 300),
                       ("archives/emoji.tgz", 200), ("mine/notes.txt", 7)):  # fmt: skip
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"\0" * size)


def test_usage_gives_each_kinds_size_and_entries_known_kinds_first(tmp_path):
    _fill(tmp_path)
    usage = {kind.name: (kind.bytes, kind.entries) for kind in cache_usage(tmp_path)}
    assert usage == {"features": (1500, 2), "crossfit": (300, 1), "archives": (200, 1), "mine": (7, 1)}
    assert [kind.name for kind in cache_usage(tmp_path)] == ["features", "crossfit", "archives", "mine"]
    assert cache_usage(tmp_path / "absent") == []


def test_clear_keeps_the_archives_unless_named_and_leaves_other_folders(tmp_path):
    _fill(tmp_path)
    assert clear_cache(tmp_path) == 1800
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives", "mine"]
    assert clear_cache(tmp_path, ["archives"]) == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_unknown_kind_is_refused_before_anything_is_removed(tmp_path):
    _fill(tmp_path)
    with pytest.raises(ConfigError, match="unknown cache kind.*featurez.*the kinds are features"):
        clear_cache(tmp_path, ["crossfit", "featurez"])
    assert (tmp_path / "crossfit").is_dir()


def test_the_cache_root_is_the_one_runs_use(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path == TrainConfig(data="digits").cache_root
    assert TrainConfig(data="digits", cache_dir=str(tmp_path / "c")).cache_root == tmp_path / "c"


def test_cache_command_shows_clears_and_refuses(tmp_path):
    _fill(tmp_path)
    shown = run_here("cache", cache=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:4] == ["features", "0.0", "MB", "2"] and KINDS["features"] in lines[0]
    assert lines[-1].startswith("total") and str(tmp_path) in lines[-1]
    cleared = run_here("cache", "--clear", "crossfit", cache=tmp_path)
    assert cleared.returncode == 0 and "removed 0.0 MB" in cleared.stdout
    assert not (tmp_path / "crossfit").exists() and (tmp_path / "features").is_dir()
    wrong = run_here("cache", "features", cache=tmp_path)
    assert wrong.returncode == 2 and "naming kinds needs --clear" in wrong.stderr
    assert (tmp_path / "features").is_dir()
