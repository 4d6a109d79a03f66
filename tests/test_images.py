import numpy as np
from PIL import Image

from transferlab.images import open_image, resize_center_crop, to_rgb


def test_modes_convert_to_rgb():
    assert to_rgb(Image.new("L", (4, 4), 128)).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] * 256)
    assert to_rgb(palette).getpixel((0, 0)) == (10, 20, 30)


def test_transparent_pixels_go_on_white():
    assert to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 255))).getpixel((0, 0)) == (0, 0, 0)


def test_16_bit_is_scaled_not_clipped():
    image = Image.new("I;16", (2, 2))
    image.putdata([0, 1000, 2000, 4000])
    rgb = np.asarray(to_rgb(image))
    assert rgb[0, 0, 0] == 0 and rgb[1, 1, 0] == 255 and 120 < rgb[1, 0, 0] < 135


def test_exif_rotation_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert open_image(tmp_path / "r.jpg").size == (10, 20)


def test_resize_center_crop_shapes():
    small = resize_center_crop(Image.new("RGB", (28, 28)), 64)
    wide = resize_center_crop(Image.new("RGB", (300, 100)), 32)
    assert small.shape == (64, 64, 3) and wide.shape == (32, 32, 3) and small.dtype == np.uint8
