"""Decoding at the size a transform needs: ``load_rgb(min_side=...)`` and ``augment.source_side``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment import eval_source_side, train_source_side
from engine.core.config import AugmentConfig
from engine.data.images import ImageFileError, load_rgb
from engine.data.settings import DataSettings

SETTINGS = DataSettings((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875, "center")


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth gradient with mild noise: compresses like a photo, and resizes without aliasing surprises."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 255 * x / width
    green = 255 * y / height
    blue = 127 + 100 * np.sin(x / 40.0) * np.cos(y / 55.0)
    pixels = np.stack([red, green, blue], axis=-1) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(path: Path, image: Image.Image, **options: object) -> Path:
    image.save(path, "JPEG", quality=90, **options)
    return path


def test_eval_side_is_timms_resize_before_the_centre_crop() -> None:
    assert eval_source_side(SETTINGS) == 256  # ceil(224 / 0.875)


@pytest.mark.parametrize(("preset", "expected"), [("none", 256), ("light", 438), ("standard", 518), ("strong", 668)])
def test_train_side_covers_the_random_crops_strongest_zoom(preset: str, expected: int) -> None:
    # light: scale >= 0.35, ratio 3/4..4/3: 224 / sqrt(0.35 * 0.75) = 437.2...
    assert train_source_side(AugmentConfig(preset=preset), SETTINGS) == expected


def test_train_side_follows_overridden_crop_controls() -> None:
    config = AugmentConfig(preset="light", crop_scale=(0.08, 1.0), crop_ratio=(0.75, 1.3333))
    assert train_source_side(config, SETTINGS) == 915  # 224 / sqrt(0.08 * 0.75)


@pytest.mark.parametrize(("min_side", "expected"), [(100, (168, 126)), (400, (1008, 756)), (800, (2016, 1512)),
                                                   (1600, (4032, 3024)), (3024, (4032, 3024))])
def test_jpeg_decodes_at_the_smallest_dct_scale_that_covers_min_side(
    tmp_path: Path, min_side: int, expected: tuple[int, int]
) -> None:
    # 100 -> 1/8 (504 x 378), then reduce(3); 400 -> 1/4, 800 -> 1/2; 1600 and 3024 -> full size.
    path = _jpeg(tmp_path / "big.jpg", _photo(4032, 3024))
    image = load_rgb(path, min_side=min_side)
    assert image.mode == "RGB"
    assert image.size == expected
    assert min(image.size) >= min_side


def test_none_decodes_at_full_size(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "big.jpg", _photo(800, 600))
    assert load_rgb(path).size == (800, 600)
    assert load_rgb(path, min_side=None).size == (800, 600)


def test_small_images_are_never_enlarged(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "small.jpg", _photo(120, 90))
    assert load_rgb(path, min_side=500).size == (120, 90)


def test_png_is_reduced_by_a_whole_factor_that_keeps_min_side(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _photo(1000, 700).save(path)
    image = load_rgb(path, min_side=200)
    assert image.size == (334, 234)  # reduce(3): ceil(1000 / 3), ceil(700 / 3); reduce(4) would give 175
    assert min(image.size) >= 200


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotation_applies_after_a_draft_decode(tmp_path: Path, orientation: int) -> None:
    stored = _photo(1600, 1200)
    stored.paste((255, 0, 0), (0, 0, 200, 200))  # a red corner shows where the top-left went
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _jpeg(tmp_path / "rotated.jpg", stored, exif=exif.tobytes())
    full = load_rgb(path)
    reduced = load_rgb(path, min_side=300)
    assert reduced.size == (full.width // 4, full.height // 4)
    assert (full.width > full.height) == (orientation == 3)
    # The red corner lands in the same place in both.
    corner = np.argwhere(np.asarray(full)[..., 0] > 200).mean(axis=0) / np.array(full.size[::-1])
    corner_reduced = np.argwhere(np.asarray(reduced)[..., 0] > 200).mean(axis=0) / np.array(reduced.size[::-1])
    assert np.allclose(corner, corner_reduced, atol=0.05)


def test_reduced_pixels_match_a_full_decode_resized(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "big.jpg", _photo(4032, 3024, seed=3))
    reduced = load_rgb(path, min_side=400)
    full = load_rgb(path).resize(reduced.size, Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(reduced, dtype=np.int16) - np.asarray(full, dtype=np.int16))
    assert difference.mean() < 2.0
    assert np.percentile(difference, 99) < 8


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_greyscale_and_cmyk_jpegs_become_rgb(tmp_path: Path, mode: str) -> None:
    path = _jpeg(tmp_path / f"{mode}.jpg", _photo(1600, 1200).convert(mode))
    image = load_rgb(path, min_side=300)
    assert image.mode == "RGB"
    assert image.size == (400, 300)
    reference = load_rgb(path).resize(image.size, Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(image, dtype=np.int16) - np.asarray(reference, dtype=np.int16)).mean() < 3


def test_progressive_jpeg_decodes_reduced(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "progressive.jpg", _photo(1600, 1200), progressive=True)
    assert load_rgb(path, min_side=150).size == (200, 150)


def test_sixteen_bit_png_is_scaled_and_reduced(tmp_path: Path) -> None:
    values = np.tile(np.linspace(0, 65535, 900, dtype=np.float64), (600, 1)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I")
    image = load_rgb(path, min_side=200)
    assert image.mode == "RGB" and image.size == (300, 200)
    row = np.asarray(image)[100, :, 0]
    assert row[0] < 5 and row[-1] > 250  # scaled into 0..255, not clipped


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (800, 600), (0, 0, 255, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 400, 600))
    path = tmp_path / "alpha.png"
    rgba.save(path)
    image = load_rgb(path, min_side=150)
    assert image.size == (200, 150)
    assert tuple(np.asarray(image)[75, 150]) == (255, 255, 255)
    assert tuple(np.asarray(image)[75, 50]) == (0, 0, 255)


def test_palette_image_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "palette.gif"
    _photo(800, 600).convert("P").save(path)
    image = load_rgb(path, min_side=150)
    assert image.mode == "RGB" and image.size == (200, 150)


def test_damaged_jpeg_body_is_an_image_file_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    _photo(1600, 1200).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])  # a valid header, half the body
    with pytest.raises(ImageFileError) as raised:
        load_rgb(path, min_side=300)
    assert raised.value.kind == "truncated"
    assert str(path) in str(raised.value)


def test_garbage_inside_jpeg_body_is_an_image_file_error_or_decodes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    _photo(1600, 1200).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    data[len(data) // 3: len(data) // 3 + 2000] = b"\xff\xd9" * 1000  # end markers in the middle of the scan
    path = tmp_path / "garbled.jpg"
    path.write_bytes(bytes(data))
    try:
        image = load_rgb(path, min_side=300)
    except ImageFileError as error:
        assert str(path) in str(error)
    else:
        assert image.size == (400, 300)  # libjpeg may fill the rest; never a crash


def test_decompression_bomb_is_refused_before_a_reduced_decode(tmp_path: Path) -> None:
    # A PNG header declaring 20000 x 20000 pixels: refused from the header, whatever the size asked.
    from imagefactory import png_declaring_size

    path = png_declaring_size(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageFileError) as raised:
        load_rgb(path, min_side=64)
    assert raised.value.kind == "decompression_bomb"
    assert str(path) in str(raised.value)


def test_small_pixel_limit_still_applies_with_min_side(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "big.jpg", _photo(1600, 1200))
    with pytest.raises(ImageFileError) as raised:
        load_rgb(path, max_pixels=1_000_000, min_side=100)
    assert raised.value.kind == "decompression_bomb"
