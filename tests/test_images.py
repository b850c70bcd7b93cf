"""engine.data.images on real files: every format, odd modes, EXIF rotation, and each kind of broken file."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from imagefactory import FORMAT_SUFFIXES, draw, png_declaring_size, truncate, write_bytes
from PIL import Image

from engine.core.errors import DatasetError
from engine.data.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    ImageFileError,
    ImageHeader,
    inspect_bytes,
    load_rgb,
    read_header,
    to_rgb,
)


@pytest.mark.parametrize("image_format", sorted(FORMAT_SUFFIXES))
def test_every_format_gives_header_and_rgb(tmp_path: Path, image_format: str) -> None:
    path = draw(tmp_path / f"picture{FORMAT_SUFFIXES[image_format]}", size=(48, 40))

    header = read_header(path)
    image = load_rgb(path)

    assert (header.width, header.height, header.format) == (48, 40, image_format)
    assert path.suffix in IMAGE_SUFFIXES
    assert image.mode == "RGB" and image.size == (48, 40)
    assert inspect_bytes(path.read_bytes(), name=path) == header


def test_read_header_does_not_decode(tmp_path: Path) -> None:
    # Only the header is valid; decoding this file would fail, reading its header must not.
    path = png_declaring_size(tmp_path / "header_only.png", 300, 200)

    assert read_header(path) == ImageHeader(width=300, height=200, format="PNG", mode="L")


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "animated.gif"
    red, blue = Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)

    assert load_rgb(path).getpixel((10, 10)) == (255, 0, 0)


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    Image.new("RGB", (60, 30), (200, 30, 30)).save(path, exif=exif)

    assert (read_header(path).width, read_header(path).height) == (60, 30)
    assert load_rgb(path).size == (30, 60)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))
    path = tmp_path / "alpha.png"
    image.save(path)

    pixels = [load_rgb(path).getpixel((x, 0)) for x in range(3)]

    assert pixels[0] == (255, 255, 255)  # fully transparent black shows the white behind it
    assert pixels[1] == (255, 0, 0)
    assert all(126 <= channel <= 128 for channel in pixels[2])  # half-transparent black: mid grey


def test_la_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (100, 255))
    path = tmp_path / "grey_alpha.png"
    image.save(path)

    rgb = load_rgb(path)

    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (100, 100, 100)


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)

    rgb = load_rgb(path)

    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (0, 200, 0)


def test_gif_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 0, 0, 0, 200] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    path = tmp_path / "transparent.gif"
    image.save(path, transparency=0)

    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(path).getpixel((1, 0)) == (0, 0, 200)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red ink mix

    header = read_header(path)
    red, green, blue = load_rgb(path).getpixel((8, 8))

    assert header.mode == "CMYK"
    assert red > 240 and green < 15 and blue < 15


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale_becomes_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"grey_{mode}.png"
    Image.new(mode, (4, 4), 255 if mode == "L" else 1).save(path)

    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)).save(path)

    image = load_rgb(path)

    assert read_header(path).mode.startswith("I")
    assert [image.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (4, 4, 4)]


def test_16_bit_big_endian_is_scaled() -> None:
    values = np.array([[0, 32768, 65535]], dtype=">u2")
    image = Image.frombytes("I;16B", (3, 1), values.tobytes())

    assert [to_rgb(image).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_32_bit_int_in_16_bit_range_is_scaled() -> None:
    image = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))

    assert image.mode == "I"
    assert [to_rgb(image).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_tiff_in_unit_range_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(path)

    image = load_rgb(path)

    assert read_header(path).mode == "F"
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_outside_unit_range_is_stretched() -> None:
    image = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32))

    assert [to_rgb(image).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_ycbcr_becomes_rgb() -> None:
    image = Image.new("RGB", (2, 2), (10, 200, 30)).convert("YCbCr")

    red, green, blue = to_rgb(image).getpixel((0, 0))

    assert abs(red - 10) <= 3 and abs(green - 200) <= 3 and abs(blue - 30) <= 3


def test_truncated_jpeg_is_refused_with_its_path(tmp_path: Path) -> None:
    path = truncate(draw(tmp_path / "cut.jpg", size=(64, 64)))

    with pytest.raises(ImageFileError) as caught:
        load_rgb(path)
    with pytest.raises(ImageFileError) as inspected:
        inspect_bytes(path.read_bytes(), name=path)

    assert caught.value.kind == "truncated" and str(path) in str(caught.value)
    assert isinstance(caught.value, DatasetError)
    assert inspected.value.kind == "truncated" and "FFD9" in inspected.value.reason


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    path = truncate(draw(tmp_path / "cut.png", size=(64, 64)))

    with pytest.raises(ImageFileError) as inspected:
        inspect_bytes(path.read_bytes(), name=path)
    with pytest.raises(ImageFileError) as loaded:
        load_rgb(path)

    assert inspected.value.kind == "truncated" and "IEND" in inspected.value.reason
    assert loaded.value.kind == "truncated"


@pytest.mark.parametrize("image_format", ["GIF", "WEBP", "BMP", "TIFF"])
def test_truncation_of_other_formats_is_caught_from_the_bytes(tmp_path: Path, image_format: str) -> None:
    path = truncate(draw(tmp_path / f"cut{FORMAT_SUFFIXES[image_format]}", size=(64, 64)), keep=0.6)

    with pytest.raises(ImageFileError) as inspected:
        inspect_bytes(path.read_bytes(), name=path)

    assert inspected.value.kind == "truncated"


def test_png_with_a_damaged_chunk_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(draw(tmp_path / "good.png", size=(32, 32)).read_bytes())
    data[60] ^= 0xFF  # inside the compressed pixel data: the chunk CRC no longer matches

    with pytest.raises(ImageFileError) as inspected:
        inspect_bytes(bytes(data), name="damaged.png")

    assert inspected.value.kind == "corrupt"


def test_jpeg_with_padding_or_trailing_data_is_accepted(tmp_path: Path) -> None:
    data = draw(tmp_path / "good.jpg").read_bytes()

    assert inspect_bytes(data + b"\x00" * 16, name="padded.jpg").format == "JPEG"
    # Some cameras append data after the end marker: decoding confirms the image is whole.
    assert inspect_bytes(data + b"trailer data", name="trailer.jpg").format == "JPEG"


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "noise.jpg", np.random.default_rng(1).bytes(500))

    with pytest.raises(ImageFileError) as caught:
        read_header(path)

    assert caught.value.kind == "not_an_image" and str(path) in str(caught.value)


def test_damaged_header_with_a_known_signature_is_corrupt() -> None:
    with pytest.raises(ImageFileError) as caught:
        # Signature and end chunk intact, header chunk zeroed: damaged, not cut short.
        inspect_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40 + b"\x00\x00\x00\x00IEND\xaeB`\x82", name="broken.png")

    assert caught.value.kind == "corrupt" and "PNG" in caught.value.reason


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = write_bytes(tmp_path / "empty.png", b"")

    with pytest.raises(ImageFileError) as zero:
        load_rgb(empty)
    with pytest.raises(ImageFileError) as missing:
        read_header(tmp_path / "absent.png")

    assert zero.value.kind == "zero_byte"
    assert missing.value.kind == "unreadable" and "file not found" in str(missing.value)


def test_bomb_far_above_the_limit_is_refused_by_pillow_check(tmp_path: Path) -> None:
    path = png_declaring_size(tmp_path / "bomb.png", 20_000, 20_000)

    for reader in (read_header, load_rgb):
        with pytest.raises(ImageFileError) as caught:
            reader(path)
        assert caught.value.kind == "decompression_bomb"
        assert f"400000000 pixels exceeds the limit of {MAX_IMAGE_PIXELS}; refused without decoding" in str(
            caught.value
        )


def test_bomb_just_above_the_limit_is_refused_without_a_warning(tmp_path: Path) -> None:
    # Between the limit and twice it Pillow only warns; pytest turns warnings into errors,
    # so passing here also proves the warning does not leak.
    path = png_declaring_size(tmp_path / "bomb.png", 10_000, 10_000)

    with pytest.raises(ImageFileError) as caught:
        inspect_bytes(path.read_bytes(), name=path)

    assert caught.value.kind == "decompression_bomb"
    assert f"10000×10000 pixels exceeds the limit of {MAX_IMAGE_PIXELS}" in caught.value.reason


def test_a_lower_pixel_limit_is_honoured(tmp_path: Path) -> None:
    path = draw(tmp_path / "small.png", size=(20, 20))

    with pytest.raises(ImageFileError, match="20×20 pixels exceeds the limit of 100"):
        load_rgb(path, max_pixels=100)


def test_loaded_image_is_independent_of_the_file(tmp_path: Path) -> None:
    path = draw(tmp_path / "picture.png")
    image = load_rgb(path)

    path.unlink()

    assert io.BytesIO(image.tobytes()).getbuffer().nbytes == 48 * 40 * 3


def test_image_file_error_survives_pickling(tmp_path: Path) -> None:
    # Data-loader worker processes send exceptions back pickled.
    error = ImageFileError(tmp_path / "cut.jpg", "truncated", "image file is truncated")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.path, copy.kind, copy.reason, str(copy)) == (error.path, "truncated", error.reason, str(error))
