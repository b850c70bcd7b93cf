"""Images per second of the ``standard`` augmentation preset against the same steps in torchvision.transforms.v2.

Both pipelines decode the demo PNGs with Pillow and return (3, 224, 224) float32
tensors through DataLoaders with the same workers; timed epochs alternate between
them. Prints both rates and their ratio. Usage: ``python -m bench.augment_throughput``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, v2

from augment import create_train_transform, get_preset
from augment.preview import DEFAULT_SETTINGS
from engine.core.config import AugmentConfig
from engine.data.images import IMAGE_SUFFIXES
from engine.data.loading import ImageDataset, collate_with_failures
from engine.data.settings import DataSettings

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def torchvision_standard(settings: DataSettings) -> v2.Compose:
    """The ``standard`` preset's steps, as close as torchvision.transforms.v2 has them.

    Differences: rotation fills the corners with the mean colour (albumentations
    reflects them), and cutout is one ``RandomErasing`` rectangle of the same area range
    (albumentations cuts 1 to 2 square holes).
    """
    controls = get_preset("standard")
    height, width = settings.input_size[1:]
    strength = controls.color_jitter
    low, high = controls.cutout_size
    return v2.Compose([
        v2.RandomResizedCrop((height, width), scale=controls.crop_scale, ratio=controls.crop_ratio,
                             interpolation=InterpolationMode(settings.interpolation), antialias=True),
        v2.RandomHorizontalFlip(controls.horizontal_flip),
        v2.RandomRotation(controls.rotation_degrees, interpolation=InterpolationMode.BILINEAR,
                          fill=[round(255 * value) for value in settings.mean]),
        v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=strength / 4),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(settings.mean), std=list(settings.std)),
        v2.RandomErasing(p=controls.cutout, scale=(low * low, high * high), ratio=(0.5, 2.0), value=0.0),
    ])


def epoch_seconds(loader: DataLoader) -> float:
    started = time.perf_counter()
    for images, _, _failures in loader:
        assert images.dtype == torch.float32
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEMO, help="a folder of images (any depth)")
    parser.add_argument("--size", type=int, default=224, help="output side in pixels")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="timed epochs of each pipeline")
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args()

    paths = sorted(p for p in arguments.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    settings = dataclasses.replace(DEFAULT_SETTINGS, input_size=(3, arguments.size, arguments.size))
    pipelines = {
        "albumentations": create_train_transform(AugmentConfig(preset="standard"), settings, seed=0),
        "torchvision.v2": torchvision_standard(settings),
    }
    loaders = {
        name: DataLoader(
            ImageDataset(paths, [0] * len(paths), transform), batch_size=arguments.batch_size, shuffle=True,
            num_workers=arguments.workers, persistent_workers=arguments.workers > 0, collate_fn=collate_with_failures,
            generator=torch.Generator().manual_seed(0),
        )
        for name, transform in pipelines.items()
    }
    for loader in loaders.values():
        epoch_seconds(loader)  # starts the workers and warms the caches
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for round_index in range(arguments.rounds):
        # Alternate which pipeline goes first, so a change in machine load hits both alike.
        order = list(loaders) if round_index % 2 == 0 else list(reversed(loaders))
        for name in order:
            times[name].append(epoch_seconds(loaders[name]))
    rates = {name: len(paths) / statistics.median(seconds) for name, seconds in times.items()}
    print(f"standard preset, {len(paths)} images of {arguments.data} -> {arguments.size}px float32,"
          f" {arguments.workers} workers, batch {arguments.batch_size}, median of {arguments.rounds} epochs each")
    for name, rate in rates.items():
        spread = [len(paths) / seconds for seconds in times[name]]
        print(f"{name:16s} {rate:8.0f} images/s  (epochs {min(spread):.0f} to {max(spread):.0f})")
    ratio = rates["albumentations"] / rates["torchvision.v2"]
    print(f"ratio albumentations / torchvision.v2 {ratio:6.2f}")
    return 0 if math.isfinite(ratio) else 1


if __name__ == "__main__":
    sys.exit(main())
