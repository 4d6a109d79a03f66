"""Generated data sets for structured and far-domain tasks that frozen ImageNet features are known to
handle badly: counting objects, the orientation of a bar, letters in several fonts, and which
shape carries which colour. Rendered at 64 px, stored at 32x32 RGB, deterministic (seeded per
split): 1,000 training and 250 test images per class."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data import Dataset, labelled
from ..errors import DataError

CANVAS, SIZE = 64, 32
TRAIN_PER_CLASS, TEST_PER_CLASS = 1000, 250
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts"))
Render = Callable[[int, np.random.Generator], Image.Image]


def _background(rng: np.random.Generator) -> Image.Image:
    base = rng.integers(0, 90, 3)
    noise = rng.normal(0, 12, (CANVAS, CANVAS, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _bright(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(150, 256, 3))


def _render_count(label: int, rng: np.random.Generator) -> Image.Image:
    """``label + 1`` discs of random size and colour, not overlapping."""
    image, placed = _background(rng), []
    draw = ImageDraw.Draw(image)
    while len(placed) < label + 1:
        r = int(rng.integers(3, 7))
        x, y = (int(v) for v in rng.integers(r + 1, CANVAS - r - 1, 2))
        if all(math.hypot(x - px, y - py) > r + pr + 2 for px, py, pr in placed):
            placed.append((x, y, r))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=_bright(rng))
    return image


ORIENTATIONS = (0, 45, 90, 135)


def _render_orientation(label: int, rng: np.random.Generator) -> Image.Image:
    """A bar at 0, 45, 90 or 135 degrees (jittered by up to 10), anywhere, of any length and colour."""
    image = _background(rng)
    angle = math.radians(ORIENTATIONS[label] + rng.uniform(-10, 10))
    half = rng.uniform(10, 24)
    cx, cy = (float(v) for v in rng.uniform(half * 0.7 + 2, CANVAS - half * 0.7 - 2, 2))
    dx, dy = half * math.cos(angle), -half * math.sin(angle)
    ImageDraw.Draw(image).line([cx - dx, cy - dy, cx + dx, cy + dy], fill=_bright(rng), width=int(rng.integers(3, 7)))
    return image


LETTERS = "ABCDEFGHJK"


def _fonts() -> list[Path]:
    for directory in FONT_DIRS:
        fonts = sorted(directory.rglob("*.ttf")) if directory.is_dir() else []
        if fonts:
            return fonts
    raise DataError("The 'glyphs' data set renders TrueType fonts and found none: apt-get install fonts-dejavu-core.")


def _render_glyph(label: int, rng: np.random.Generator, fonts: list[Path]) -> Image.Image:
    """A letter in a random font, size, rotation (up to 15 degrees) and place, grey on grey (at least
    60 grey levels apart)."""
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(30, 46)))
    layer = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(layer).text((CANVAS / 2, CANVAS / 2), LETTERS[label], fill=255, font=font, anchor="mm")
    layer = layer.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, translate=tuple(rng.integers(-8, 9, 2)))
    background = rng.uniform(20, 236)
    ink = background + rng.choice([-1, 1]) * rng.uniform(60, 160)
    if not 0 <= ink <= 255:
        ink = background - (ink - background)  # the other side, where there is room
    mask = np.asarray(layer, dtype=np.float32) / 255
    grey = background + (ink - background) * mask + rng.normal(0, 6, mask.shape)
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")


SHAPES = ("circle", "square", "triangle")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, colour) -> None:
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    else:
        draw.polygon([(x, y - r), (x - r, y + r * 0.8), (x + r, y + r * 0.8)], fill=colour)


def _render_colour_shape(label: int, rng: np.random.Generator) -> Image.Image:
    """A red and a blue shape of two different kinds; the class is the red one's shape, so colour
    alone and shape alone do not tell it: only their conjunction does."""
    image = _background(rng)
    draw = ImageDraw.Draw(image)
    other = [s for s in range(len(SHAPES)) if s != label][int(rng.integers(2))]
    left_is_red = rng.random() < 0.5
    for shape, red in ((label, True), (other, False)):
        side = 0 if red == left_is_red else 1
        x, y, r = rng.uniform(12 + side * 32, 20 + side * 32), rng.uniform(14, 50), rng.uniform(7, 11)
        colour = (int(rng.integers(190, 256)), int(rng.integers(0, 60)), int(rng.integers(0, 60)))
        _draw_shape(draw, SHAPES[shape], x, y, r, colour if red else colour[::-1])
    return image


def _generate(name: str, classes, render: Render) -> Dataset:
    splits = {}
    for split, per_class, seed in (("train", TRAIN_PER_CLASS, 0), ("test", TEST_PER_CLASS, 1)):
        rng = np.random.default_rng([seed, len(name)])
        labels = np.repeat(np.arange(len(classes)), per_class)
        pixels = np.stack([np.asarray(render(int(k), rng).resize((SIZE, SIZE), Image.LANCZOS)) for k in labels])
        splits[split] = labelled(pixels, labels, classes, f"{name}/{split}")
    return Dataset(name, splits["train"], splits["test"])


def load_count() -> Dataset:
    return _generate("count", [str(k) for k in range(1, 6)], _render_count)


def load_orientation() -> Dataset:
    return _generate("orientation", [f"{a}deg" for a in ORIENTATIONS], _render_orientation)


def load_glyphs() -> Dataset:
    fonts = _fonts()
    return _generate("glyphs", list(LETTERS), lambda label, rng: _render_glyph(label, rng, fonts))


def load_colour_shape() -> Dataset:
    return _generate("colour-shape", [f"red-{s}" for s in SHAPES], _render_colour_shape)
