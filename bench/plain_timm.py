"""A plain timm fine-tune, the way a user would write it by hand: the reference ``bench.quality`` compares recipes with.

A timm model with its pretrained weights and a new head, timm's default data config and
transforms for it, every layer training with AdamW at one constant rate, cross-entropy, and a
wall-clock budget instead of an epoch count: it trains on every photo of the folder (it has no
validation split and selects nothing) until the time is up, then predicts. No warm-up, schedule,
label smoothing, EMA, feature cache or early stopping. Usage:
``python -m bench.plain_timm DATA --seconds 120 [--score FOLDER]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

BACKBONE = "tf_efficientnet_lite0"
LEARNING_RATE = 3e-4  # AdamW's usual fine-tuning rate; its default 1e-3 is a lot for pretrained layers
BATCH_SIZE = 32


@dataclass
class PlainModel:
    """A model trained by ``fine_tune``.

    Attributes:
        model: the network, in eval mode.
        transform: timm's eval transform for it (PIL image -> (3, H, W) float32, normalized).
        classes: class names in output order (the folders' sorted names).
        epochs: passes over the photos, the last one possibly cut short by the budget.
        steps: optimizer steps taken.
        seconds: wall time from creating the model to the last step.
    """

    model: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    classes: list[str]
    epochs: float
    steps: int
    seconds: float

    def predict_proba(self, paths: Sequence[Path], batch_size: int = 64) -> np.ndarray:
        """``(N, C)`` float32 softmax rows of the image files, in order."""
        device = next(self.model.parameters()).device
        rows = []
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                batch = torch.stack([self.transform(_rgb(path)) for path in paths[start:start + batch_size]])
                rows.append(self.model(batch.to(device)).float().softmax(dim=1).cpu().numpy())
        return np.concatenate(rows)


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def pretrained_arguments(backbone: str) -> dict[str, Any]:
    """``timm.create_model`` arguments that load the backbone's pretrained weights.

    Online a user writes ``pretrained=True`` and timm downloads them. Offline, where an installed
    package ships them (``engine.models.weights``), timm reads that file instead: the same weights.
    """
    from engine.models.weights import get_weights_provider

    provider = get_weights_provider(backbone)
    if provider is not None and provider.is_available():
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(provider.safetensors_path())}}
    return {"pretrained": True}


def fine_tune(
    data: Path,
    seconds: float,
    *,
    backbone: str = BACKBONE,
    seed: int = 0,
    input_size: int | None = None,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
) -> PlainModel:
    """Fine-tune ``backbone`` on a folder of class folders for ``seconds`` of wall time.

    Args:
        data: class folders of images.
        seconds: wall-time budget, counted from creating the model; training stops after the
            first step that ends past it.
        seed: seeds the new head and the shuffling.
        input_size: square side instead of the model's pretrained one (None keeps it).
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    classes, _ = find_classes(str(data))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = timm.create_model(backbone, num_classes=len(classes), **pretrained_arguments(backbone)).to(device)
    config = resolve_model_data_config(model)
    if input_size is not None:
        config["input_size"] = (3, input_size, input_size)
    dataset = ImageFolder(str(data), transform=create_transform(**config, is_training=True))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    loss_function = nn.CrossEntropyLoss()
    model.train()
    steps, epochs = 0, 0.0
    while time.perf_counter() - started < seconds:
        for done, (images, labels) in enumerate(loader, start=1):
            optimizer.zero_grad()
            loss_function(model(images.to(device)), labels.to(device)).backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - started >= seconds:
                epochs += done / len(loader)
                break
        else:
            epochs += 1
    elapsed = time.perf_counter() - started
    return PlainModel(model.eval(), create_transform(**config), dataset.classes, epochs, steps, elapsed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of class folders to train on")
    parser.add_argument("--seconds", type=float, default=120.0, help="wall-time budget (default 120)")
    parser.add_argument("--score", type=Path, help="folder of class folders to score on afterwards")
    parser.add_argument("--backbone", default=BACKBONE)
    parser.add_argument("--input-size", type=int)
    arguments = parser.parse_args()
    trained = fine_tune(arguments.data, arguments.seconds, backbone=arguments.backbone,
                        input_size=arguments.input_size)
    print(f"{arguments.backbone}: {trained.steps} steps, {trained.epochs:.1f} epochs in {trained.seconds:.1f} s")
    if arguments.score is not None:
        paths = sorted(arguments.score.glob("*/*"))
        targets = np.array([trained.classes.index(path.parent.name) for path in paths])
        probabilities = trained.predict_proba(paths)
        accuracy = float((probabilities.argmax(axis=1) == targets).mean())
        log_loss = float(-np.log(np.maximum(probabilities[np.arange(len(paths)), targets], 1e-12)).mean())
        print(f"scored on {len(paths)} photos: accuracy {accuracy:.3f}, log-loss {log_loss:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
