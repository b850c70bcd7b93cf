"""Classify images with an exported Transfer Studio ONNX model; needs only onnxruntime, numpy and Pillow.

Usage:
    python predict.py model.onnx IMAGE [IMAGE ...] [--top-k 3]

Prints one line per image: the path, then the top-k labels with their probabilities,
tab-separated. The labels and the preprocessing (size, resize filter, crop, mean and
std) are read from the model's own metadata, and the preprocessing repeats timm's
evaluation transform exactly: resize the shorter side to size / crop_pct, centre crop,
scale to [0, 1], normalise. Unreadable images are reported on stderr (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

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
    """Predict every image named on the command line; returns the exit code."""
    parser = argparse.ArgumentParser(description="Top-k labels of images from an exported ONNX model.")
    parser.add_argument("model", help="the exported model.onnx")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    parser.add_argument("--provider", default="CPUExecutionProvider",
                        help="onnxruntime execution provider (default CPUExecutionProvider)")
    arguments = parser.parse_args(argv)

    session = onnxruntime.InferenceSession(arguments.model, providers=[arguments.provider])
    metadata = session.get_modelmeta().custom_metadata_map
    labels = json.loads(metadata["labels"])
    settings = json.loads(metadata["preprocessing"])
    input_name = session.get_inputs()[0].name
    top_k = max(1, min(arguments.top_k, len(labels)))

    failed = 0
    for start in range(0, len(arguments.images), BATCH_SIZE):
        paths, arrays = [], []
        for path in arguments.images[start:start + BATCH_SIZE]:
            try:
                arrays.append(preprocess(load_rgb(path), settings))
                paths.append(path)
            except OSError as error:  # Pillow's UnidentifiedImageError is an OSError
                print(f"{path}: cannot read the image ({error})", file=sys.stderr)
                failed += 1
        if not arrays:
            continue
        probabilities = session.run(None, {input_name: np.stack(arrays)})[0]
        for index, path in enumerate(paths):
            row = probabilities[index]
            best = np.argsort(-row)[:top_k]
            print("\t".join([path, *(f"{labels[i]}\t{row[i]:.4f}" for i in best)]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
