"""Messy inputs and faults: each case of RELIABILITY.md has its test here or where that table says."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
from conftest import CLI, assert_one_line_error, run, write_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import transferlab as tl
from transferlab.data import load_csv
from transferlab.datasets import load_dataset
from transferlab.errors import DataError, OutputInUse
from transferlab.features import FeatureCache, cache_key, cached_features
from transferlab.images import UNREADABLE, open_image
from transferlab.runlock import OutputLock


class MeanColour(nn.Module):  # a stand-in body: mean colour per channel
    def forward(self, x):
        return x.mean((2, 3))


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decompression_bomb() -> bytes:
    """A valid 1x1 PNG whose header claims 20000 x 20000 pixels (CRC fixed)."""
    data = bytearray(_png_bytes(Image.new("L", (1, 1))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 20000, 20000)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


BAD_FILES = {
    "zero-byte.png": b"",
    "truncated.jpg": _jpeg_bytes()[:300],
    "truncated.png": _png_bytes(Image.new("RGB", (64, 64), (200, 0, 0)))[:60],
    "text.jpg": b"this is a text file, not a JPEG\n",
    "bomb.png": decompression_bomb(),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_each_bad_file_is_skipped_with_a_warning_naming_it(tmp_path, name, caplog):
    root = write_folder(tmp_path / "d", per_class=3)
    (root / "red" / name).write_bytes(BAD_FILES[name])
    images = load_dataset(str(root)).train
    with caplog.at_level(logging.WARNING):
        features, _ = cached_features(MeanColour(), {"model": "m"}, images, 16, None)
    assert features.skipped == (str(root / "red" / name),) and features.valid.sum() == 9
    assert name in caplog.text


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(Image.DecompressionBombError, match="exceeds limit"):
        open_image(io.BytesIO(decompression_bomb()))


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "d", per_class=3)
    locked = root / "red" / "locked.png"
    Image.new("RGB", (8, 8)).save(locked)
    real_open = Image.open

    def open_or_deny(path, *args, **kwargs):  # tests run as root, where chmod 000 does not stop reads
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_or_deny)
    features, _ = cached_features(MeanColour(), {"model": "m"}, load_dataset(str(root)).train, 16, None)
    assert features.skipped == (str(locked),)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P", "RGBA", "LA"])
def test_unusual_modes_are_read_not_skipped(tmp_path, mode):
    root = write_folder(tmp_path / "d", per_class=3)
    image = Image.new("RGB", (20, 20), (200, 30, 30)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16))
    image.save(root / "red" / f"odd.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}")
    features, _ = cached_features(MeanColour(), {"model": "m"}, load_dataset(str(root)).train, 16, None)
    assert not features.skipped and features.valid.all() and len(features.valid) == 10


def test_symlink_loop_and_dangling_link_are_harmless(tmp_path):
    root = write_folder(tmp_path / "d", per_class=3)
    os.symlink("..", root / "red" / "loop")
    os.symlink("missing.png", root / "red" / "dangling.png")
    dataset = load_dataset(str(root))
    assert len(dataset.train) == 9


def _csv(tmp_path, lines):
    root = write_folder(tmp_path / "d", per_class=3)
    (root / "labels.csv").write_text("\n".join(["path,label", *lines]) + "\n")
    return root / "labels.csv"


def test_csv_with_missing_file_skips_it(tmp_path):
    lines = [f"{c}/{c}_{i:03d}.png,{c}" for c in ("red", "blue") for i in range(3)] + ["red/nope.png,red"]
    images = load_csv(_csv(tmp_path, lines)).train
    features, _ = cached_features(MeanColour(), {"model": "m"}, images, 16, None)
    assert len(features.skipped) == 1 and features.skipped[0].endswith("nope.png")


def test_csv_duplicate_rows_are_dropped_with_a_warning(tmp_path, caplog):
    lines = [f"{c}/{c}_{i:03d}.png,{c}" for c in ("red", "blue") for i in range(3)] + ["red/red_000.png,red"]
    with caplog.at_level(logging.WARNING):
        dataset = load_csv(_csv(tmp_path, lines))
    assert len(dataset.train) == 6 and "dropped 1 repeated row" in caplog.text


@pytest.mark.parametrize(
    "line, message",
    [("../../etc/passwd,red", "points outside"), ("/etc/hostname,red", "points outside"),
     ("red/red_000.png,blue", "labelled both"), (",red", "empty path")],
)  # fmt: skip
def test_csv_bad_rows_are_refused(tmp_path, line, message):
    lines = [f"{c}/{c}_{i:03d}.png,{c}" for c in ("red", "blue") for i in range(3)] + [line]
    with pytest.raises(DataError, match=message):
        load_csv(_csv(tmp_path, lines))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        image = open_image(io.BytesIO(data))
    except UNREADABLE:
        return
    assert image.mode == "RGB"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_random_csv_text_gives_a_dataset_or_a_data_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "random.csv"
    path.write_text("path,label\n" + text, encoding="utf-8")
    try:
        dataset = load_csv(path)
    except DataError:
        return
    assert len(dataset.train) >= 1


def test_interrupted_cache_write_is_cleaned_and_corrupt_entries_recomputed(tmp_path, image_folder):
    cache = FeatureCache(tmp_path / "cache")
    images = load_dataset(str(image_folder)).train
    first = np.array(cached_features(MeanColour(), {"model": "m"}, images, 16, cache)[0].values)  # a copy, not the mapped file
    key = cache_key(images, 16, {"model": "m"})
    (cache.root / key / "features.npy").write_bytes(b"\x93NUMPY truncated")  # a damaged entry
    abandoned = cache.root / ".somekey-999999999-abcd"  # staging folder of a killed process
    abandoned.mkdir()
    again, hit = cached_features(MeanColour(), {"model": "m"}, images, 16, cache)
    assert not hit and np.array_equal(again.values, first)
    assert not abandoned.exists()


def test_second_run_on_the_same_output_folder_is_refused(tmp_path, image_folder):
    with OutputLock(tmp_path / "out"):
        with pytest.raises(OutputInUse):
            OutputLock(tmp_path / "out").__enter__()
        result = run("train", str(image_folder), "--strategy", "head", "--resolution", "32", "--out", str(tmp_path / "out"),
                     cache=tmp_path / "cache")  # fmt: skip
        assert_one_line_error(result, "in use by another transferlab run")
    with OutputLock(tmp_path / "out"):  # released: usable again
        pass


def test_same_command_same_seed_gives_identical_metrics(tmp_path, image_folder):
    def metrics(out):
        config = tl.TrainConfig(data=str(image_folder), strategy="scratch", backbone="cnn-small", epochs=2,
                                batch_size=8, out=str(tmp_path / out), use_cache=False)  # fmt: skip
        result = tl.train(config).metrics
        return {k: v for k, v in result.items()
                if not k.endswith("seconds") and k not in ("config", "resolved_config", "peak_rss_mb")}  # each its own out

    assert metrics("a") == metrics("b")


@pytest.mark.slow
def test_stress_5000_images_with_5_percent_corrupt(tmp_path):
    rng = np.random.default_rng(1)
    clean = write_folder(tmp_path / "clean", per_class=1667, seed=3)  # 5001 images
    messy = tmp_path / "messy"
    shutil.copytree(clean, messy)
    files = sorted(messy.rglob("*.png"))
    kinds = list(BAD_FILES.values())
    corrupt = rng.choice(len(files), size=250, replace=False)
    for k, index in enumerate(corrupt):
        files[index].write_bytes(kinds[k % len(kinds)])
    for name in sorted(corrupt):
        os.remove(clean / files[name].relative_to(messy))
    env_cache = tmp_path / "cache"
    results = {}
    for name in ("clean", "messy"):
        result = run("train", str(tmp_path / name), "--strategy", "head", "--resolution", "32", "--out",
                     str(tmp_path / f"run-{name}"), cache=env_cache)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        results[name] = json.loads((tmp_path / f"run-{name}" / "metrics.json").read_text())
    assert results["messy"]["skipped_files"] == 250 and results["clean"]["skipped_files"] == 0
    assert results["messy"]["num_train"] + results["messy"]["num_val"] == 5001 - 250
    assert abs(results["messy"]["val_accuracy"] - results["clean"]["val_accuracy"]) <= 0.01


@pytest.mark.slow
def test_sigkill_during_feature_extraction_leaves_no_corrupt_cache(tmp_path):
    import signal
    import time

    data = write_folder(tmp_path / "d", per_class=150)
    cache = tmp_path / "cache"
    env = {**os.environ, "TRANSFERLAB_CACHE": str(cache), "TQDM_DISABLE": "1"}
    command = [CLI, "train", str(data), "--strategy", "head", "--resolution", "96", "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((cache / "features").glob(".*")) and time.monotonic() < deadline:
        time.sleep(0.02)  # features stream into a staging folder while they are computed
    time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert list((cache / "features").glob(".*")), "the kill came after extraction"
    # A split finished before the kill may be cached (on a fast machine the training split is);
    # whatever looks complete must be whole: the staging folder is only renamed once written.
    finished = [p.name for p in (cache / "features").iterdir() if not p.name.startswith(".")]
    assert all(FeatureCache(cache / "features").load(name) is not None for name in finished), "no entry may be corrupt"
    result = run(*command[1:], cache=cache)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list((cache / "features").glob(".*")), "the killed run's staging folder is removed"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["num_train"] == 405
