"""Classify images with an exported Transfer Studio ONNX model; needs only onnxruntime, numpy and Pillow.

Usage:
    python predict.py model.onnx IMAGE_OR_FOLDER [...] [--top-k 3] [--csv predictions.csv]

Folders are searched for images, sub-folders included (hidden ones left out). Prints one line
per image: the path, then the top-k labels with their probabilities, tab-separated; ``--csv``
also writes them as ``path,label_1,probability_1,...,error`` rows (the CSV of the app's
``main.py predict``), unreadable images included with their error. The labels and the
preprocessing (size, resize filter, crop, mean and std) are read from the model's own metadata,
and the preprocessing repeats timm's evaluation transform exactly: resize the shorter side to
size / crop_pct, centre crop, scale to [0, 1], normalise. Unreadable images are reported on
stderr (exit code 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
BATCH_SIZE = 16
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_paths(inputs: list[str]) -> list[str]:
    """Files as given, folders expanded into their image files (recursively, sorted, hidden parts left out)."""
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(str(file) for file in sorted(path.rglob("*"))
                         if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
                         and not any(part.startswith(".") for part in file.relative_to(path).parts))
        elif path.is_file():
            found.append(item)
        else:
            raise SystemExit(f"{item}: no such file or folder")
    if not found:
        raise SystemExit(f"no images found in {', '.join(inputs)}")
    return found


def write_csv(rows: list[list[str]], top_k: int, destination: str) -> None:
    """The rows with their header, written to a temporary file first so a stop never leaves half a CSV."""
    header = ["path"] + [f"{name}_{rank}" for rank in range(1, top_k + 1) for name in ("label", "probability")]
    target = Path(destination).resolve()
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as file:
            csv.writer(file, lineterminator="\n").writerows([[*header, "error"], *rows])
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_rgb(path: str) -> Image.Image:
    """Open an image upright (EXIF orientation), first frame, transparency on white, as 8-bit RGB."""
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = Image.fromarray(np.rint(np.asarray(image, dtype=np.float64) * (255 / 65535)).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(image: Image.Image, settings: dict) -> np.ndarray:
    """timm's eval transform in Pillow + numpy: an RGB image to a normalised (3, H, W) float32 array."""
    _, height, width = settings["input_size"]
    crop_pct = settings["crop_pct"]
    mode = settings["crop_mode"]
    resample = RESAMPLING[settings["interpolation"]]
    scale_h, scale_w = math.floor(height / crop_pct), math.floor(width / crop_pct)
    fill = (0, 0, 0)
    if mode == "squash":
        image = image.resize((scale_w, scale_h), resample)
    elif mode == "border":
        # Longest side to the scaled size, then pad with the mean colour up to the crop.
        ratio = max(image.height / scale_h, image.width / scale_w)
        size = (round(image.width / ratio), round(image.height / ratio))
        if size != image.size:
            image = image.resize(size, resample)
        fill = tuple(round(255 * value) for value in settings["mean"])
    elif scale_h == scale_w:
        # torchvision's Resize(int): the shorter side becomes the size, the longer is truncated.
        short, long = sorted(image.size)
        new_short, new_long = scale_h, int(scale_h * long / short)
        size = (new_short, new_long) if image.width <= image.height else (new_long, new_short)
        if size != image.size:
            image = image.resize(size, resample)
    else:
        # timm's ResizeKeepRatio: the shorter side (relative to the target) reaches it.
        ratio = min(image.height / scale_h, image.width / scale_w)
        size = (round(image.width / ratio), round(image.height / ratio))
        if size != image.size:
            image = image.resize(size, resample)
    image = center_crop(image, height, width, fill)
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
    mean = np.asarray(settings["mean"], dtype=np.float32)
    std = np.asarray(settings["std"], dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)


def center_crop(image: Image.Image, height: int, width: int, fill: tuple) -> Image.Image:
    """Centre crop as torchvision does, padding first when the image is smaller than the crop."""
    if image.width < width or image.height < height:
        padded = Image.new("RGB", (max(width, image.width), max(height, image.height)), fill)
        padded.paste(image, ((padded.width - image.width) // 2, (padded.height - image.height) // 2))
        image = padded
    top = int(round((image.height - height) / 2.0))
    left = int(round((image.width - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def main(argv: list[str] | None = None) -> int:
    """Predict every image named on the command line (or found in a folder named); returns the exit code."""
    parser = argparse.ArgumentParser(description="Top-k labels of images from an exported ONNX model.")
    parser.add_argument("model", help="the exported model.onnx")
    parser.add_argument("images", nargs="+", help="image files or folders of images")
    parser.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    parser.add_argument("--csv", help="also write the predictions to this CSV file")
    parser.add_argument("--provider", default="CPUExecutionProvider",
                        help="onnxruntime execution provider (default CPUExecutionProvider)")
    arguments = parser.parse_args(argv)

    session = onnxruntime.InferenceSession(arguments.model, providers=[arguments.provider])
    metadata = session.get_modelmeta().custom_metadata_map
    labels = json.loads(metadata["labels"])
    settings = json.loads(metadata["preprocessing"])
    input_name = session.get_inputs()[0].name
    top_k = max(1, min(arguments.top_k, len(labels)))

    images = image_paths(arguments.images)
    rows: list[list[str]] = []
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start:start + BATCH_SIZE]
        arrays, errors = [], {}
        for path in batch:
            try:
                arrays.append(preprocess(load_rgb(path), settings))
            except OSError as error:  # Pillow's UnidentifiedImageError is an OSError
                errors[path] = f"cannot read the image ({error})"
                print(f"{path}: {errors[path]}", file=sys.stderr)
        probabilities = iter(session.run(None, {input_name: np.stack(arrays)})[0] if arrays else [])
        for path in batch:  # in the order given, unreadable images in their place
            if path in errors:
                rows.append([path, *[""] * (2 * top_k), errors[path]])
                continue
            row = next(probabilities)
            best = np.argsort(-row)[:top_k]
            print("\t".join([path, *(f"{labels[i]}\t{row[i]:.4f}" for i in best)]))
            rows.append([path, *(value for i in best for value in (labels[i], f"{row[i]:.6f}")), ""])
    failed = sum(1 for row in rows if row[-1])
    if arguments.csv:
        write_csv(rows, top_k, arguments.csv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
