import numpy as np
import pytest
from PIL import Image

from transferlab.images import UNREADABLE, aspect_ratio, image_size, open_image, resize_center_crop, to_rgb, to_square


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


def _photograph(width: int, height: int) -> np.ndarray:
    """A smooth colour scene with a little grain, as a camera gives."""
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    channels = [np.sin(6 * x + 3 * y), np.cos(9 * x * y), x - y]
    grain = np.random.default_rng(0).normal(0, 4, (height, width, 3))
    return (np.stack(channels, 2) * 90 + 128 + grain).clip(0, 255).astype(np.uint8)


def test_a_large_jpeg_decodes_at_a_reduced_scale_down_to_the_side_it_will_be_shrunk_to(tmp_path):
    Image.fromarray(_photograph(2400, 1600)).save(tmp_path / "photo.jpg", quality=92)
    full, reduced = open_image(tmp_path / "photo.jpg"), open_image(tmp_path / "photo.jpg", min_side=224)
    assert full.size == (2400, 1600) and reduced.size == (2400 // 4, 1600 // 4)  # 1/8 would leave 200 < 224
    difference = np.abs(resize_center_crop(full, 224).astype(int) - resize_center_crop(reduced, 224).astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 12
    Image.fromarray(_photograph(600, 400)).save(tmp_path / "photo.png")
    assert open_image(tmp_path / "photo.png", min_side=64).size == (600, 400)  # other formats decode whole


def test_a_rotated_jpeg_decoded_at_a_reduced_scale_is_still_turned_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    Image.fromarray(_photograph(1600, 800)).save(tmp_path / "rotated.jpg", exif=exif)
    assert open_image(tmp_path / "rotated.jpg", min_side=100).size == (800 // 8, 1600 // 8)  # upright, short side 100


def test_squash_keeps_the_sides_a_centre_crop_cuts_off():
    pixels = np.full((100, 300, 3), 255, dtype=np.uint8)
    pixels[:, :50] = (255, 0, 0)  # a red band in the left sixth
    wide = Image.fromarray(pixels)
    squashed, cropped = to_square(wide, 30, "squash"), to_square(wide, 30, "crop")
    assert squashed.shape == cropped.shape == (30, 30, 3)
    assert (squashed[:, :4] == (255, 0, 0)).all() and (squashed[:, 6:] == 255).all()  # the band, a sixth of the width
    assert (cropped == 255).all()  # the centre square holds none of it
    assert aspect_ratio((300, 100)) == aspect_ratio((100, 300)) == 3.0 and aspect_ratio((64, 64)) == 1.0


def test_image_size_reads_the_header_only(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (120, 40)).save(path)
    assert image_size(path) == (120, 40)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UNREADABLE):
        image_size(tmp_path / "broken.png")
