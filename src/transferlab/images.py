"""Decoding and resizing single images into what a network eats: uint8 RGB at one resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# What opening a bad file raises: OSError (truncated, unreadable, not an image), ValueError and
# SyntaxError (malformed headers), DecompressionBombError (more pixels than PIL allows).
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB.

    Transparent pixels are composited onto white; 16-bit and float images are scaled from
    their own range instead of being clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Open a file fully (so corrupt data fails here), apply its EXIF rotation, return RGB.

    With ``min_side`` (the shorter side its user will shrink it to), a JPEG is decoded at the
    smallest of libjpeg's reduced scales (1/2, 1/4, 1/8) that keeps both sides at least that long:
    a camera's 12-megapixel photograph decodes several times faster, the pixels after resizing
    within a few levels of a full decode. Images over PIL's pixel limit (``Image.MAX_IMAGE_PIXELS``,
    about 179 million at twice the warning level) are refused before any pixel is decoded: a
    decompression bomb cannot exhaust memory.
    """
    with Image.open(path) as image:
        if min_side:
            image.draft(None, (min_side, min_side))  # JPEG only; other formats ignore it
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding its pixels."""
    with Image.open(path) as image:
        return image.size


FITS = ("crop", "squash")  # how a non-square image becomes the network's square input


def to_square(image: Image.Image, resolution: int, fit: str) -> np.ndarray:
    """``image`` as the network's resolution x resolution input: its centre cropped (``crop``: the
    sides of a non-square image are cut off) or the whole image resized (``squash``: nothing cut,
    the aspect ratio not kept)."""
    if fit == "squash":
        resized = image.resize((resolution, resolution), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.array(resized, dtype=np.uint8)
    return resize_center_crop(image, resolution)


def aspect_ratio(size: tuple[int, int]) -> float:
    """The longer side over the shorter (1: square)."""
    return max(size) / max(1, min(size))


def resize_center_crop(image: Image.Image, resolution: int) -> np.ndarray:
    """Resize the shorter side to ``resolution`` and crop the centre square: HxWx3 uint8."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return np.array(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)
