"""Small real image files for the dataset tests, drawn with Pillow: good, odd and broken ones."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

FORMAT_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


def draw(
    path: Path, *, size: tuple[int, int] = (48, 40), seed: int = 0, mode: str = "RGB", **save_options: object
) -> Path:
    """Save a noise image unique to ``seed`` (format from the suffix) and return its path."""
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_options)
    return path


def make_class_folders(
    root: Path, counts: Mapping[str, int], *, suffix: str = ".png", size: tuple[int, int] = (48, 40)
) -> dict[str, list[Path]]:
    """Fill ``root/<label>/`` with ``counts[label]`` distinct images; a count of 0 makes an empty folder."""
    made: dict[str, list[Path]] = {}
    for label, count in counts.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        made[label] = [
            draw(
                folder / f"{label}_{index:03d}{suffix}", size=size, seed=zlib.crc32(f"{root}/{label}/{index}".encode())
            )
            for index in range(count)
        ]
    return made


def png_declaring_size(path: Path, width: int, height: int) -> Path:
    """Write a tiny, well-formed PNG whose header claims ``width`` × ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    content = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content + chunk(b"IEND", b""))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` down to the first ``keep`` share of its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write raw bytes (random junk, empty files, text) into a possibly new folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
