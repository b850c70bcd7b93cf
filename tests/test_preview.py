"""Preview grids: layout, pixels put back from normalised tensors, seeding, mixed pairs, datasets with bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from imagefactory import make_class_folders, truncate
from PIL import Image
from screenshots import SCREENSHOT_DIR

from augment import preview_dataset
from augment.preview import CAPTION_LINES, COPIES_PER_ROW, FONT_SIZE, GAP, MARGIN, preview
from engine.core.config import AugmentConfig
from engine.core.errors import DatasetError
from engine.data.settings import DataSettings

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
SCREENSHOTS = SCREENSHOT_DIR
TILE = 64
# crop_pct 1: the unaugmented tile of a 64-pixel image is the image itself.
SETTINGS = DataSettings(input_size=(3, TILE, TILE), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        interpolation="bicubic", crop_pct=1.0, crop_mode="center")
CELL_HEIGHT = TILE + CAPTION_LINES * (FONT_SIZE + 3) + GAP


def drawn_images(count: int) -> list[Image.Image]:
    """Distinct 64-pixel pictures: a coloured disc on a gradient."""
    images = []
    for index in range(count):
        ramp = np.linspace(0, 255, TILE, dtype=np.uint8)
        pixels = np.stack([np.tile(ramp, (TILE, 1)), np.tile(ramp[:, None], (1, TILE)),
                           np.full((TILE, TILE), 60 * index, dtype=np.uint8)], axis=-1)
        yy, xx = np.mgrid[:TILE, :TILE]
        disc = (yy - 20 - 8 * index) ** 2 + (xx - 32) ** 2 < 14 ** 2
        pixels[disc] = (255, 40 * index, 0)
        images.append(Image.fromarray(pixels))
    return images


def tile_top(grid: Image.Image, image: Image.Image) -> int:
    """The y of the first-column tile that shows ``image`` (within 1 grey level after un-normalising)."""
    canvas = np.asarray(grid).astype(int)
    target = np.asarray(image).astype(int)
    for y in range(grid.height - TILE + 1):
        if np.abs(canvas[y:y + TILE, MARGIN:MARGIN + TILE] - target).max() <= 1:
            return y
    raise AssertionError("the unaugmented image is not in the first column")


def test_grid_has_one_row_per_image_with_the_unaugmented_input_first() -> None:
    images = drawn_images(2)
    grid = preview(AugmentConfig(preset="standard"), images, 6, settings=SETTINGS)
    assert grid.mode == "RGB"
    columns = 1 + 3
    assert grid.width == 2 * MARGIN + columns * TILE + (columns - 1) * GAP
    first, second = tile_top(grid, images[0]), tile_top(grid, images[1])
    assert second - first == CELL_HEIGHT
    assert grid.height == first + 2 * CELL_HEIGHT - GAP + MARGIN


def test_copies_are_spread_over_the_rows() -> None:
    grid = preview(AugmentConfig(preset="light"), drawn_images(3), 7, settings=SETTINGS)
    columns = 1 + math.ceil(7 / 3)
    assert grid.width == 2 * MARGIN + columns * TILE + (columns - 1) * GAP


def test_same_seed_same_grid() -> None:
    config = AugmentConfig(preset="strong", mixup_alpha=0.4, cutmix_alpha=1.0)
    images = drawn_images(2)
    first = preview(config, images, 4, settings=SETTINGS, seed=5)
    assert first.tobytes() == preview(config, images, 4, settings=SETTINGS, seed=5).tobytes()
    assert first.tobytes() != preview(config, images, 4, settings=SETTINGS, seed=6).tobytes()


def test_mixing_adds_a_row_of_mixed_pairs() -> None:
    images = drawn_images(2)
    plain = preview(AugmentConfig(preset="light"), images, 4, settings=SETTINGS)
    mixed = preview(AugmentConfig(preset="light", mixup_alpha=0.4, cutmix_alpha=1.0), images, 4, settings=SETTINGS)
    assert mixed.width == plain.width
    plain_rows = plain.height - tile_top(plain, images[0])
    assert mixed.height - tile_top(mixed, images[0]) == plain_rows + CELL_HEIGHT


def test_preset_none_shows_the_input_unchanged() -> None:
    images = drawn_images(1)
    grid = np.asarray(preview(AugmentConfig(preset="none"), images, 2, settings=SETTINGS)).astype(int)
    top = tile_top(Image.fromarray(grid.astype(np.uint8)), images[0])
    for column in range(3):
        left = MARGIN + column * (TILE + GAP)
        assert np.abs(grid[top:top + TILE, left:left + TILE] - np.asarray(images[0]).astype(int)).max() <= 1


def test_files_are_read_and_bad_calls_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    drawn_images(1)[0].save(path)
    assert preview(AugmentConfig(), [path], 2, settings=SETTINGS).width > 0
    with pytest.raises(ValueError, match="n: must be >= 1"):
        preview(AugmentConfig(), [path], 0)
    with pytest.raises(DatasetError, match="no images"):
        preview(AugmentConfig(), [], 4)


def test_dataset_preview_picks_across_classes_and_skips_bad_files(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3, "fox": 1}, size=(64, 64))
    truncate(made["fox"][0], keep=0.3)  # the only fox cannot be decoded
    grid = preview_dataset(tmp_path / "data", AugmentConfig(preset="light"), 3 * COPIES_PER_ROW, settings=SETTINGS)
    shown = []
    for label in ("cat", "dog"):
        for path in made[label]:
            try:
                tile_top(grid, Image.open(path).convert("RGB"))
            except AssertionError:
                continue
            shown.append(label)
    # Three rows, taking the classes in turn: both readable classes, one of them twice.
    assert sorted(set(shown)) == ["cat", "dog"] and len(shown) == 3
    columns = 1 + COPIES_PER_ROW
    assert grid.width == 2 * MARGIN + columns * TILE + (columns - 1) * GAP


def test_dataset_preview_without_a_readable_image_is_a_dataset_error(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path / "data", {"cat": 1}, size=(64, 64))
    truncate(made["cat"][0], keep=0.3)
    with pytest.raises(DatasetError, match="no image could be decoded"):
        preview_dataset(tmp_path / "data", AugmentConfig(), 4)


def test_demo_previews_are_saved_for_review() -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    standard = preview_dataset(DEMO, AugmentConfig(preset="standard"), 16)
    strong = preview_dataset(DEMO, AugmentConfig(preset="strong", mixup_alpha=0.4, cutmix_alpha=1.0), 16, seed=1)
    columns = 1 + COPIES_PER_ROW
    for grid in (standard, strong):
        assert grid.width == 2 * MARGIN + columns * 224 + (columns - 1) * GAP
    assert strong.height > standard.height  # the row of mixed pairs
    standard.save(SCREENSHOTS / "augment_preview.png")
    strong.save(SCREENSHOTS / "augment_preview_strong_mixup.png")
