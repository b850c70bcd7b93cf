"""Whether decoding photos only as large as the transforms need costs accuracy.

Builds phone-size JPEGs (2016x1512) from real labelled images: Fashion-MNIST's *train*
split where the Debian package is installed (its test split is reserved), else the bundled
demo photos, and trains the same default run on them twice with
real EfficientNet-Lite0 weights: once as the app does (JPEG draft decoding and box
reduction to the side the transforms need, ``augment.source_side``) and once decoding
every photo at full size, as before. Each run has a cache folder of its own, so no
feature computed one way is reused the other. Prints both validation accuracies and their
ratio (goal >= 0.99). Usage: ``python -m bench.decode_accuracy [--per-class N] [--mode MODE]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

import engine.training.setup as training_setup
from engine.core.config import RunConfig
from engine.core.paths import CACHE_ENV_VAR
from engine.training.train import train

SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEMO = Path(__file__).resolve().parent.parent / "resources" / "demo"
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
PHOTO_SIZE = (1512, 2016)  # a portrait phone photo, 3 MP


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read()[header_bytes:], dtype=np.uint8)


def labelled_images(per_class: int) -> tuple[str, dict[str, list[Image.Image]]]:
    """Where the images come from, and ``per_class`` of them for each class."""
    if (SOURCE / "train-images-idx3-ubyte.gz").exists():
        images = _read_idx(SOURCE / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        labels = _read_idx(SOURCE / "train-labels-idx1-ubyte.gz", 8)
        return "Fashion-MNIST train split", {
            name: [Image.fromarray(images[index]) for index in np.flatnonzero(labels == label)[:per_class]]
            for label, name in enumerate(CLASSES)}
    return "the bundled demo photos", {
        folder.name: [Image.open(path) for path in sorted(folder.glob("*.png"))[:per_class]]
        for folder in sorted(DEMO.iterdir()) if folder.is_dir()}


def make_photos(folder: Path, images: dict[str, list[Image.Image]]) -> Path:
    """The images enlarged to phone size with sensor-like noise, as JPEGs in class folders."""
    rng = np.random.default_rng(0)
    for name, pictures in images.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index, picture in enumerate(pictures):
            big = np.asarray(picture.convert("RGB").resize(PHOTO_SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
            noisy = (big + rng.integers(-6, 7, big.shape[:2] + (1,), dtype=np.int16)).clip(0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / name / f"{index:05d}.jpg", "JPEG", quality=90)
    return folder


@contextmanager
def full_decodes() -> Iterator[None]:
    """Training set-up as before reduced decoding: no needed side, so every photo is decoded whole."""
    saved = training_setup.eval_source_side, training_setup.train_source_side
    training_setup.eval_source_side = lambda *_: None  # type: ignore[assignment]
    training_setup.train_source_side = lambda *_: None  # type: ignore[assignment]
    try:
        yield
    finally:
        training_setup.eval_source_side, training_setup.train_source_side = saved


def best_accuracy(data: Path, run_dir: Path, cache: Path, mode: str, epochs: int) -> float:
    os.environ[CACHE_ENV_VAR] = str(cache)
    config = RunConfig().with_changes(**{"data.path": str(data), "model.mode": mode, "optim.epochs": epochs,
                                         "data.decoded_cache": False})
    result = train(config, run_dir)
    return max(row["val_top1"] for row in result.history if row.get("val_top1") is not None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40, help="photos per class (default 40)")
    parser.add_argument("--mode", default="feature_extraction", help="model.mode of both runs")
    parser.add_argument("--epochs", type=int, default=10)
    arguments = parser.parse_args()
    previous_cache = os.environ.get(CACHE_ENV_VAR)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        source, images = labelled_images(arguments.per_class)
        data = make_photos(root / "photos", images)
        reduced = best_accuracy(data, root / "run-reduced", root / "cache-reduced", arguments.mode, arguments.epochs)
        with full_decodes():
            full = best_accuracy(data, root / "run-full", root / "cache-full", arguments.mode, arguments.epochs)
    if previous_cache is None:
        os.environ.pop(CACHE_ENV_VAR, None)
    else:
        os.environ[CACHE_ENV_VAR] = previous_cache
    count = sum(len(pictures) for pictures in images.values())
    print(f"{count} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} from {source}, {arguments.mode}, "
          f"{arguments.epochs} epochs, best val top-1")
    print(f"decoded at the needed size: {reduced:.4f}")
    print(f"decoded at full size:       {full:.4f}")
    print(f"ratio top1_reduced_vs_full {reduced / full:.3f} (goal >= 0.99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
