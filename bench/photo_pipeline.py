"""Whether the fine-tuning data pipeline keeps the model fed on phone-size JPEGs (12 MP, 4032x3024).

Times, in images/s: a plain full Pillow decode and resize (one process, the old way); the
engine's first fine-tuning epoch (its real DataLoader, training transform and sized
workers, decoding at the size the transform needs and filling the decoded-image cache);
its second epoch, read from that cache (the loader sized as for a GPU run, whose training
process mostly waits for the device); and the model's own training step
(tf_efficientnet_lite0, 224 px, forward + backward + AdamW) on this device. Goals: cold
>= 5x the full decode, warm >= 20x, loader (warm) >= 1.5x the model.
Usage: ``python -m bench.photo_pipeline [--photos DIR] [--count N]``; without ``--photos``
it generates noisy photo-like JPEGs once into the user cache.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from augment import create_train_transform, train_source_side
from engine.core.config import AugmentConfig
from engine.core.device import plan_device
from engine.core.paths import user_cache_dir
from engine.data.decoded_cache import DecodedCache
from engine.data.loader_sizing import size_loader
from engine.data.loading import ImageDataset, collate_with_failures
from engine.models.backbones import create_model

PHOTO_SIZE = (4032, 3024)
BACKBONE = "tf_efficientnet_lite0"


def _make_photo(path: Path, seed: int) -> None:
    """A photo-like JPEG: smooth colour fields, edges and sensor-like noise (1-3 MB at quality 90)."""
    width, height = PHOTO_SIZE
    rng = np.random.default_rng(seed)
    # Built at 1/4 size and enlarged (smooth content), then fine noise at full size gives the JPEG its bulk.
    small = rng.normal(128, 60, (height // 64, width // 64, 3)).clip(0, 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize(PHOTO_SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-5, 6, (height, width, 1), dtype=np.int16)
    Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def photo_folder(count: int) -> Path:
    """The generated photos (two classes), made once and kept in the user cache."""
    # The version in the name: photos of an older generator are never mixed with new ones.
    folder = user_cache_dir("bench", f"photos-{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}-v2")
    paths = [folder / ("a" if index % 2 else "b") / f"{index:04d}.jpg" for index in range(count)]
    missing = [(path, index) for index, path in enumerate(paths) if not path.exists()]
    if missing:
        print(f"generating {len(missing)} photos in {folder} ...", flush=True)
        for path, _ in missing:
            path.parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(_make_photo, *zip(*missing, strict=True)))
    return folder


def full_decode_rate(paths: list[Path], limit: int = 12) -> float:
    """Images/s of Image.open + full decode + resize to 224 px (shorter side) in this process."""
    chosen = paths[:limit]
    started = time.perf_counter()
    for path in chosen:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            rgb.resize((round(224 * rgb.width / rgb.height), 224), Image.Resampling.BILINEAR)
    return len(chosen) / (time.perf_counter() - started)


def pipeline_rates(paths: list[Path], batch_size: int, workers: int | str, scratch: Path) -> tuple[float, float, int]:
    """(cold epoch images/s, warm epoch images/s, workers) of the engine's fine-tuning loader."""
    loaded = create_model(BACKBONE, num_classes=2, weights="none")
    augment = AugmentConfig()
    settings = loaded.data_settings
    side = train_source_side(augment, settings)
    # The scan hashes every file; outside the timed part here as well.
    hashes = [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    dataset = ImageDataset(paths, [0] * len(paths), create_train_transform(augment, settings, seed=0), side,
                           cache=DecodedCache(scratch / "decoded"), hashes=hashes)
    plan = plan_device("auto")
    started = time.perf_counter()  # set-up (the decode-rate probe) counts as part of the first epoch
    # Sized as for a GPU run, whatever this machine trains on: the question is whether a GPU is kept fed.
    sizing = size_loader(workers, dataset, batch_size=batch_size, cuda=True, pin_memory=plan.pin_memory)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_with_failures,
                        **sizing.loader_arguments())
    rates = []
    for _ in range(2):
        seen = 0
        for images, _, failures in loader:
            if failures:
                raise RuntimeError(f"bench photo failed to decode: {failures[0]}")
            seen += len(plan.to_device(images))
        rates.append(seen / (time.perf_counter() - started))
        started = time.perf_counter()
    return rates[0], rates[1], sizing.num_workers


def model_rate(batch_size: int, steps: int) -> float:
    """Training images/s of the backbone on this device: forward, backward and an AdamW step."""
    plan = plan_device("auto")
    model = plan.prepare_model(create_model(BACKBONE, num_classes=2, weights="none").model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = plan.grad_scaler()
    images = plan.to_device(torch.randn(batch_size, 3, 224, 224))
    targets = plan.to_device(torch.randint(0, 2, (batch_size,)))

    def step() -> None:
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(3 if plan.is_cuda else 1):
        step()
    if plan.is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if plan.is_cuda:
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, help="a folder of JPEGs to use instead of generated ones")
    parser.add_argument("--count", type=int, default=200, help="photos to generate and read (default 200)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="auto", help="data.num_workers: auto or a number")
    parser.add_argument("--model-steps", type=int, default=0, help="timed training steps (default: 30 on CUDA, 4 else)")
    arguments = parser.parse_args()
    folder = arguments.photos or photo_folder(arguments.count)
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg"))[: arguments.count]
    if not paths:
        parser.error(f"--photos: no JPEG files in {folder}")
    sizes = [path.stat().st_size for path in paths]
    print(f"{len(paths)} photos from {folder}, {np.mean(sizes) / 1e6:.1f} MB each on average")
    workers: int | str = int(arguments.workers) if arguments.workers.isdigit() else "auto"

    full = full_decode_rate(paths)
    print(f"full decode + resize (1 process): {full:8.1f} images/s")
    with tempfile.TemporaryDirectory() as scratch:
        cold, warm, used = pipeline_rates(paths, arguments.batch_size, workers, Path(scratch))
    print(f"engine epoch 1, cold ({used} workers, sized as for a CUDA run): {cold:8.1f} images/s")
    print(f"engine epoch 2, from the cache:        {warm:8.1f} images/s")
    steps = arguments.model_steps or (30 if torch.cuda.is_available() else 4)
    model = model_rate(arguments.batch_size, steps)
    print(f"{BACKBONE} training on {plan_device('auto').describe()}: {model:8.1f} images/s")
    print(f"cpus {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}")
    print(f"ratio cold_vs_full_decode {cold / full:.1f} (goal >= 5)")
    print(f"ratio warm_vs_full_decode {warm / full:.1f} (goal >= 20)")
    print(f"ratio loader_vs_model {warm / model if model > 0 else math.inf:.1f} (goal >= 1.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
