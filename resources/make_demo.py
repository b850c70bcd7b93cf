"""Rebuild the bundled demo project from Debian's ``dataset-fashion-mnist`` package.

Takes the first 50 images of each class from the Fashion-MNIST test set, upscales
them from 28 to 64 px (bicubic, so the health report's small-image check does not
flag every demo photo) and writes PNGs into one folder per class, with the licence.
Run: ``python resources/make_demo.py`` (needs ``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
COPYRIGHT = Path("/usr/share/doc/dataset-fashion-mnist/copyright")
TARGET = Path(__file__).resolve().parent / "demo"
CLASS_NAMES = (
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)
IMAGES_PER_CLASS = 50
SIDE = 64


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header_bytes)


def main() -> int:
    if not SOURCE.is_dir():
        print(f"error: {SOURCE} not found; install Debian's dataset-fashion-mnist", file=sys.stderr)
        return 2
    images = _read_idx(SOURCE / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz", 8)
    shutil.rmtree(TARGET, ignore_errors=True)
    for class_index, class_name in enumerate(CLASS_NAMES):
        folder = TARGET / class_name
        folder.mkdir(parents=True)
        chosen = np.flatnonzero(labels == class_index)[:IMAGES_PER_CLASS]
        for source_index in chosen:
            picture = Image.fromarray(images[source_index], mode="L").resize((SIDE, SIDE), Image.BICUBIC)
            picture.save(folder / f"{class_name}_{source_index:05d}.png", optimize=True)
    notice = (
        "Demo images: a subset of Fashion-MNIST (test set, first 50 per class),\n"
        f"upscaled from 28x28 to {SIDE}x{SIDE} px by resources/make_demo.py.\n\n"
    )
    (TARGET / "LICENSE.txt").write_text(notice + COPYRIGHT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
