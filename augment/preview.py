"""Draw a grid of augmented copies of a user's images, so they can see what a preset does before training.

Each row is one image: the unaugmented model input, then augmented copies captioned
with the operations that ran; with mixup or cutmix on, a last row shows mixed pairs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup

from augment.controls import AugmentControls, resolve_controls
from augment.mixing import create_mixup, mix_batch
from augment.transforms import ImageTransform, TrainTransform, create_eval_transform, create_train_transform
from engine.core.config import AugmentConfig
from engine.core.errors import DatasetError
from engine.data.discovery import discover_dataset
from engine.data.images import load_rgb, to_rgb
from engine.data.settings import DataSettings

DEFAULT_SETTINGS = DataSettings(
    input_size=(3, 224, 224), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
    interpolation="bicubic", crop_pct=0.875, crop_mode="center",
)
"""Data settings of a preview made without a backbone: 224 px, ImageNet mean and std."""

COPIES_PER_ROW = 4
"""Augmented copies per image that ``preview_dataset`` aims for."""

MAX_TILE_SIDE = 256
"""Tiles of larger model inputs are shrunk to this many pixels, so the grid stays viewable."""

MARGIN = 10
GAP = 6
FONT_SIZE = 12
CAPTION_LINES = 2

_BACKGROUND = (246, 246, 246)
_TEXT = (30, 30, 30)
_MUTED = (110, 110, 110)
_SEPARATOR = (190, 190, 190)

# How the operations that ran are named under each tile; the crop runs on every copy
# (the title says so) and normalising is not an augmentation, so they are not listed.
_OPERATION_NAMES = {
    "HorizontalFlip": "h-flip", "VerticalFlip": "v-flip", "Rotate": "rotate", "ColorJitter": "colour",
    "GaussianBlur": "blur", "GaussNoise": "noise", "CoarseDropout": "cutout", "AutoContrast": "autocontrast",
    "Equalize": "equalize", "Posterize": "posterize", "Solarize": "solarize", "Sharpen": "sharpen",
    "Affine": "shear/shift",
}
_UNLISTED = {"RandomResizedCrop", "Normalize", "ToTensorV2", "NoOp"}


@dataclass(frozen=True)
class _Source:
    name: str
    label: str
    image: Image.Image


def preview(
    config: AugmentConfig,
    images: Sequence[Image.Image | Path],
    n: int,
    *,
    settings: DataSettings | None = None,
    seed: int = 0,
) -> Image.Image:
    """A grid of ``n`` augmented copies of ``images``: one row per image, the model's unaugmented input first.

    Copies are spread over the rows (the first ``min(len(images), n)`` images); the
    same config, images and seed give the same grid. With mixup or cutmix on, a last
    row shows pairs of the images mixed as one training batch would be, captioned with
    the two largest weights of the soft target (each image counts as its own class).

    Args:
        config: the augmentation to show.
        images: Pillow images (any mode) or image files.
        n: augmented copies in all, >= 1.
        settings: the backbone's data settings; None uses ``DEFAULT_SETTINGS``.
        seed: seed of every random draw.

    Returns:
        An RGB image.

    Raises:
        ValueError: ``n`` below 1.
        DatasetError: no images, or a file that cannot be decoded (``ImageFileError``).
        ConfigError: an invalid augmentation (see ``resolve_controls``).
    """
    _check_count(n)
    if not images:
        raise DatasetError("preview: no images given")
    sources = []
    for position, item in enumerate(images[:n]):
        if isinstance(item, Image.Image):
            name, image = f"image {position + 1}", to_rgb(item)
        else:
            name, image = Path(item).name, load_rgb(item)
        sources.append(_Source(name=name, label=name, image=image))
    return _render(config, sources, n, settings or DEFAULT_SETTINGS, seed)


def preview_dataset(
    data_path: str | Path,
    config: AugmentConfig,
    n: int,
    *,
    settings: DataSettings | None = None,
    seed: int = 0,
) -> Image.Image:
    """``preview`` of a few images drawn across the classes of a dataset.

    About ``n / COPIES_PER_ROW`` images are picked, one class after another (seeded),
    from the training files of pre-split data; files that do not decode are skipped.
    Mixed pairs are captioned with class names.

    Args:
        data_path: a dataset folder or CSV, as ``engine.data.discovery.discover_dataset`` reads.
        config: the augmentation to show.
        n: augmented copies in all, >= 1.
        settings: the backbone's data settings; None uses ``DEFAULT_SETTINGS``.
        seed: seed of the picks and of every random draw.

    Raises:
        ValueError: ``n`` below 1.
        DatasetError: the path is not a dataset, or none of its images decodes.
        ConfigError: an invalid augmentation (see ``resolve_controls``).
    """
    _check_count(n)
    source = discover_dataset(data_path)
    trainable = [sample for sample in source.files if sample.split in (None, "train")] or list(source.files)
    by_class: dict[str, list[Path]] = {}
    for sample in trainable:
        by_class.setdefault(sample.label, []).append(sample.path)
    picker = random.Random(seed)
    labels = sorted(by_class)
    picker.shuffle(labels)  # another seed shows other classes when there are more classes than rows
    for paths in by_class.values():
        picker.shuffle(paths)
    wanted = math.ceil(n / COPIES_PER_ROW)
    picked: list[_Source] = []
    while len(picked) < wanted and any(by_class.values()):
        for label in labels:
            if len(picked) == wanted:
                break
            paths = by_class[label]
            while paths:
                path = paths.pop()
                try:
                    image = load_rgb(path)
                except DatasetError:
                    continue
                picked.append(_Source(name=path.name, label=label, image=image))
                break
    if not picked:
        raise DatasetError(f"{source.root}: no image could be decoded for a preview")
    return _render(config, picked, n, settings or DEFAULT_SETTINGS, seed)


def _check_count(n: int) -> None:
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")


def _render(config: AugmentConfig, sources: list[_Source], n: int, settings: DataSettings, seed: int) -> Image.Image:
    controls = resolve_controls(config)
    train = create_train_transform(config, settings, seed=seed)
    evaluate = create_eval_transform(settings)
    rows = len(sources)
    copies = [n // rows + (1 if row < n % rows else 0) for row in range(rows)]
    grid: list[list[tuple[Image.Image, str] | None]] = []
    for source, count in zip(sources, copies, strict=True):
        cells: list[tuple[Image.Image, str] | None] = [(_pixels(evaluate(source.image), settings),
                                                        f"original ({source.label})")]
        for _ in range(count):
            tensor, caption = _augment(train, source.image)
            cells.append((_pixels(tensor, settings), caption))
        grid.append(cells)
    classes = sorted({source.label for source in sources})
    mixup = create_mixup(config, num_classes=len(classes))
    if mixup is not None:
        with _numpy_seed(seed):
            mixed = [
                _mix_pair(mixup, train, sources[column % rows], sources[(column + 1) % rows], classes, settings)
                for column in range(max(copies))
            ]
        grid.append([None, *mixed])
    title = f"preset {config.preset} · {settings.input_size[2]}x{settings.input_size[1]} px · seed {seed}"
    return _draw(grid, title, _summary(controls, config), settings)


def _augment(train: ImageTransform, image: Image.Image) -> tuple[torch.Tensor, str]:
    """One augmented copy and the names of the operations that ran."""
    if not isinstance(train, TrainTransform):
        return train(image), "no augmentation"  # preset none with every control off: the eval transform
    tensor, operations = train.explain(image)
    names = [_OPERATION_NAMES.get(name, name.lower()) for name in operations if name not in _UNLISTED]
    if names:
        return tensor, " · ".join(names)
    return tensor, "crop only" if "RandomResizedCrop" in operations else "unchanged"


def _mix_pair(
    mixup: Mixup, train: ImageTransform, first: _Source, second: _Source, classes: list[str], settings: DataSettings
) -> tuple[Image.Image, str]:
    """Mix augmented copies of two images as a batch of two; show the first with its top-2 weights."""
    batch = torch.stack([_augment(train, first.image)[0], _augment(train, second.image)[0]])
    originals = batch.clone()
    targets = torch.tensor([classes.index(first.label), classes.index(second.label)])
    mixed, soft = mix_batch(mixup, batch, targets)
    result = mixed[0]
    if torch.equal(result, originals[0]):
        kind = "not mixed"
    elif torch.all((result == originals[0]) | (result == originals[1])):
        kind = "cutmix"
    else:
        kind = "mixup"
    weights, indices = soft[0].topk(min(2, len(classes)))
    shares = " + ".join(f"{classes[i]} {w:.0%}" for w, i in zip(weights.tolist(), indices.tolist(), strict=True)
                        if w > 0)
    return _pixels(result, settings), f"{kind}: {shares}"


@contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seed NumPy's global random state (timm's Mixup draws from it), and put it back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _pixels(tensor: torch.Tensor, settings: DataSettings) -> Image.Image:
    """Undo the normalisation of a ``(3, H, W)`` tensor and return it as an RGB image."""
    # NumPy, not torch: a few small single-threaded array operations, where torch's thread
    # pool can stall on a busy machine.
    values = tensor.detach().cpu().numpy().transpose(1, 2, 0) * np.array(settings.std) + np.array(settings.mean)
    return Image.fromarray(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8))


def _summary(controls: AugmentControls, config: AugmentConfig) -> str:
    """The effective controls in words, e.g. ``crop 25%-100% of the area · h-flip 50% · rotate up to 15 deg``."""
    parts = []
    if controls.crop_scale is None:
        parts.append("no random crop")
    else:
        low, high = controls.crop_scale
        parts.append(f"crop {low:.0%}-{high:.0%} of the area")
    for name, chance in (("h-flip", controls.horizontal_flip), ("v-flip", controls.vertical_flip),
                         ("blur", controls.blur), ("noise", controls.noise)):
        if chance > 0:
            parts.append(f"{name} {chance:.0%}")
    if controls.rotation_degrees > 0:
        parts.append(f"rotate up to {controls.rotation_degrees:g} deg")
    if controls.color_jitter > 0:
        parts.append(f"colour jitter {controls.color_jitter:g}")
    if controls.cutout > 0:
        holes = "-".join(str(value) for value in sorted(set(controls.cutout_holes)))
        low, high = controls.cutout_size
        parts.append(f"cutout {controls.cutout:.0%} ({holes} holes of {low:.0%}-{high:.0%})")
    if controls.random_policy == "randaugment":
        parts.append(f"randaugment {controls.random_policy_ops} ops at {controls.random_policy_magnitude:g}")
    elif controls.random_policy == "trivialaugment":
        parts.append(f"trivialaugment up to {controls.random_policy_magnitude:g}")
    if config.mixup_alpha > 0:
        parts.append(f"mixup alpha {config.mixup_alpha:g}")
    if config.cutmix_alpha > 0:
        parts.append(f"cutmix alpha {config.cutmix_alpha:g}")
    if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
        parts.append(f"mixed batches {config.mix_probability:.0%}")
    return " · ".join(parts)


def _draw(
    grid: list[list[tuple[Image.Image, str] | None]], title: str, summary: str, settings: DataSettings
) -> Image.Image:
    """Lay the tiles out with their captions under a title and the summary of the controls."""
    font = ImageFont.load_default(size=FONT_SIZE)
    line_height = FONT_SIZE + 3
    height, width = settings.input_size[1:]
    shrink = min(1.0, MAX_TILE_SIDE / max(height, width))
    tile_width, tile_height = round(width * shrink), round(height * shrink)
    columns = max(len(row) for row in grid)
    canvas_width = 2 * MARGIN + columns * tile_width + (columns - 1) * GAP
    header = _wrap(title, font, canvas_width - 2 * MARGIN, lines=1) + _wrap(
        summary, font, canvas_width - 2 * MARGIN, lines=3)
    cell_height = tile_height + CAPTION_LINES * line_height + GAP
    top = MARGIN + len(header) * line_height + GAP
    canvas = Image.new("RGB", (canvas_width, top + len(grid) * cell_height + MARGIN - GAP), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(header):
        draw.text((MARGIN, MARGIN + index * line_height), line, font=font, fill=_TEXT if index == 0 else _MUTED)
    for row, cells in enumerate(grid):
        y = top + row * cell_height
        if cells[0] is None:
            draw.multiline_text((MARGIN, y), "mixed\npairs", font=font, fill=_TEXT, spacing=3)
        for column, cell in enumerate(cells):
            x = MARGIN + column * (tile_width + GAP)
            if cell is None:
                continue
            tile, caption = cell
            canvas.paste(tile if shrink == 1.0 else tile.resize((tile_width, tile_height), Image.Resampling.LANCZOS),
                         (x, y))
            for index, line in enumerate(_wrap(caption, font, tile_width, lines=CAPTION_LINES)):
                draw.text((x, y + tile_height + 2 + index * line_height), line, font=font, fill=_TEXT)
    # A line after the first column parts each image's unaugmented input from its copies.
    separator = MARGIN + tile_width + GAP // 2
    draw.line([(separator, top), (separator, canvas.height - MARGIN)], fill=_SEPARATOR, width=1)
    return canvas


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, *, lines: int) -> list[str]:
    """Greedy word wrap into at most ``lines`` lines of ``width`` pixels; an overflow ends in "..."."""
    wrapped: list[str] = []
    for word in text.split(" "):
        if wrapped and font.getlength(f"{wrapped[-1]} {word}") <= width:
            wrapped[-1] = f"{wrapped[-1]} {word}"
        else:
            wrapped.append(word)
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] += " ..."
    return [_fit(line, font, width) for line in wrapped]


def _fit(line: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """Cut a line that is wider than ``width`` pixels, marking the cut with "..."."""
    if font.getlength(line) <= width:
        return line
    while line and font.getlength(f"{line}...") > width:
        line = line[:-1]
    return f"{line}..."
