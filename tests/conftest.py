"""Shared helpers and fixtures: small generated image folders, a feature cache in a temp dir, and
running the installed ``transferlab`` command (or its entry in this process, for errors that come
before any training)."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from transferlab.testing import COLOURS, make_image  # noqa: F401 - the tests' helpers
from transferlab.testing import write_image_folder as write_folder

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would fill the captured output of failures


def pytest_sessionstart(session) -> None:
    """The free disk where the tests write, first in the output (also under -q): a full disk fails
    the tests that write images with errors far from the cause."""
    import tempfile

    places = {"temporary files": Path(tempfile.gettempdir()), "the checkout": session.config.rootpath}
    free = ", ".join(f"{shutil.disk_usage(path).free / 2**30:.1f} GiB for {name} ({path})" for name, path in places.items())
    session.config.pluginmanager.get_plugin("terminalreporter").write_line(f"free disk: {free}")


def split_folders(root: Path, train_per_class: int, test_seed: int) -> Path:
    """``root/d/train`` (``train_per_class`` images of each colour) and ``root/d/test`` (4 each); returns ``root``."""
    write_folder(root / "d" / "train", per_class=train_per_class)
    write_folder(root / "d" / "test", per_class=4, seed=test_seed)
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """3 classes x 12 PNG images of 40x40 pixels."""
    return write_folder(tmp_path / "colours")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(path))
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion_dir(tmp_path) -> Path:
    """Fashion-MNIST's four IDX files with 10 x 6 training and 10 x 2 test images of noise."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, per_class in (("train", 6), ("t10k", 2)):
        labels = np.repeat(np.arange(10), per_class)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (len(labels), 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


CLI = str(Path(sys.executable).parent / "transferlab")


def run(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFERLAB_CACHE": str(cache), "TQDM_DISABLE": "1"}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=600)


def run_here(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """What :func:`run` returns, from the command line's entry called in this process: the same
    parsing, checks and one-line errors without a new interpreter importing torch (seconds a call) -
    for the errors raised before anything trains."""
    from transferlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    environment = {"TRANSFERLAB_CACHE": str(cache), "TQDM_DISABLE": "1"}
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # main() configures logging for a process of its own
    with mock.patch.dict(os.environ, environment), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as stop:  # argparse's own errors
            code = stop.code
        finally:
            root.handlers[:], root.level = handlers, level
    return subprocess.CompletedProcess(["transferlab", *args], code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("transferlab: error:") and expected in last, result.stderr


# Headless Chromium (Debian's chromium; `make test` installs it), to check reports as a browser renders them.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
COUNT_IMAGES = """<script>window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.dataset.images = document.images.length; document.body.dataset.broken = broken;
  document.body.dataset.tables = document.querySelectorAll("table").length; });</script></body>"""


def render(report, tmp_path, screenshot=None) -> dict:
    """The report as headless Chromium loads it: how many images, how many of them broken, how many tables."""
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", COUNT_IMAGES))
    user_data = tmp_path / "chromium-profile"
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    if screenshot is not None:
        subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", "--window-size=1200,1800",
                        "--hide-scrollbars", f"--screenshot={screenshot}", report.as_uri()],
                       capture_output=True, timeout=120, check=True)  # fmt: skip
    found = {key: int(value) for key, value in re.findall(r'data-(images|broken|tables)="(\d+)"', dom)}
    assert found, f"chromium did not render {report}: {dom[:500]}"
    return found
