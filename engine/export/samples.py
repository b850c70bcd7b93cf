"""Real images for formats that are not exact: training images to calibrate a quantized model with, and the
validation images (with their labels) it is judged on against the float model; the benchmark scores
every format on the same labelled images.

They come from the data the (first) model was trained on, split as its run split it: calibration is a
seeded choice spread evenly over the classes of the training split; judging uses the validation split
(the test split when there is no validation one), up to a cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from augment import create_eval_transform, eval_source_side
from engine.core.config import RunConfig
from engine.core.errors import CheckpointError, ConfigError, DatasetError
from engine.data.health import FileRecord
from engine.data.images import load_rgb
from engine.data.prepare import PreparedDataset, prepare_configured_dataset, prepare_dataset
from engine.data.settings import DataSettings
from engine.export.formats import ExportSamples

CALIBRATION_IMAGES = 300  # ONNX Runtime's guidance: a few hundred representative images
MOST_VALIDATION_IMAGES = 1000
DEFAULT_MAX_ACCURACY_DROP = 0.01


def export_samples(
    config: dict | None,
    classes: Sequence[str],
    settings: DataSettings,
    *,
    label: str,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    calibration_images: int = CALIBRATION_IMAGES,
    seed: int = 0,
) -> ExportSamples:
    """Calibration and validation images of the data a model was trained on.

    Args:
        config: the model's run config as saved in its checkpoint (its ``data`` section is used).
        classes: the model's classes, in output order; validation labels index them.
        settings: the model's preprocessing.
        label: names the model in errors.
        max_accuracy_drop: passed on to the formats' judgement (a fraction: 0.01 is one point).
        calibration_images: how many training images to calibrate with (fewer when there are fewer).
        seed: the calibration choice's seed.

    Raises:
        CheckpointError: the checkpoint names no data, or its data gives no training or no validation images.
    """
    dataset, data_path = _dataset_of(config, label)
    known = set(classes)
    train = [record for record in dataset.splits["train"] if record.label in known]
    if not train:
        raise CheckpointError(f"{label}: its data {data_path} has no training images of its classes, which a "
                              "quantized export is calibrated on")
    calibration, _ = _images(_spread_over_classes(train, calibration_images, seed), settings)
    validation = validation_images(config, classes, settings, label=label)
    return ExportSamples(
        calibration=calibration,
        validation=validation.images,
        labels=validation.labels,
        max_accuracy_drop=max_accuracy_drop,
        source=f"{len(calibration)} training and {validation.source}",
    )


@dataclass(frozen=True)
class LabelledImages:
    """Images ready for a model, with their classes.

    Attributes:
        images: ``(N, 3, H, W)`` float32, through the model's eval transform.
        labels: ``(N,)`` class indices, in the model's class order.
        source: which images, in words.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str


def validation_images(config: dict | None, classes: Sequence[str], settings: DataSettings, *,
                      label: str) -> LabelledImages:
    """The validation images of a model's own data (its test images when it has no validation split).

    Raises:
        CheckpointError: the checkpoint names no data, or its data has no validation or test images of its classes.
    """
    dataset, data_path = _dataset_of(config, label)
    split = "val" if dataset.splits["val"] else "test"
    return _labelled(dataset.splits[split], classes, settings,
                     words=f"{'validation' if split == 'val' else 'test'} images of {data_path}", label=label)


def folder_images(data: Path, classes: Sequence[str], settings: DataSettings) -> LabelledImages:
    """Every usable image of a labelled dataset (class folders or a CSV) whose class the model knows.

    Raises:
        DatasetError: the data cannot be used.
        CheckpointError: none of its images is of the model's classes.
    """
    dataset = prepare_dataset(data, val_fraction=0.0, test_fraction=0.0)
    records = [record for split in dataset.splits.values() for record in split]
    return _labelled(records, classes, settings, words=f"images of {data}", label=str(data))


def _labelled(records: Sequence[FileRecord], classes: Sequence[str], settings: DataSettings, *, words: str,
              label: str) -> LabelledImages:
    known = {name: index for index, name in enumerate(classes)}
    chosen = [record for record in records if record.label in known][:MOST_VALIDATION_IMAGES]
    if not chosen:
        raise CheckpointError(f"{label}: no {words} is of the model's classes ({', '.join(classes)})")
    images, kept = _images(chosen, settings)
    labels = np.array([known[chosen[index].label] for index in kept], dtype=np.int64)
    return LabelledImages(images, labels, f"{len(kept)} {words}")


def _dataset_of(config: dict | None, label: str) -> tuple[PreparedDataset, str]:
    """The model's data, split as its run split it."""
    try:
        data = RunConfig.from_dict(config or {}).data
    except ConfigError as error:
        raise CheckpointError(f"{label}: its saved config cannot be read to find its data ({error})") from error
    if not data.path:
        raise CheckpointError(f"{label}: its checkpoint names no training data to check it on")
    try:
        return prepare_configured_dataset(data), data.path
    except DatasetError as error:
        raise CheckpointError(f"{label}: its data cannot be used: {error}") from error


def _spread_over_classes(records: list[FileRecord], count: int, seed: int) -> list[FileRecord]:
    """Up to ``count`` records, seeded, taking from each class in turn so that every class is represented."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[FileRecord]] = {}
    for record in records:
        by_class.setdefault(record.label, []).append(record)
    queues = [[group[index] for index in rng.permutation(len(group))] for _, group in sorted(by_class.items())]
    chosen: list[FileRecord] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return chosen


def _images(records: list[FileRecord], settings: DataSettings) -> tuple[np.ndarray, list[int]]:
    """The records' images through the model's eval transform, ``(N, 3, H, W)`` float32, and which records
    they are (a file that changed since the scan and cannot be read any more is left out)."""
    transform = create_eval_transform(settings)
    side = eval_source_side(settings)
    tensors, kept = [], []
    for index, record in enumerate(records):
        try:
            tensors.append(transform(load_rgb(Path(record.path), min_side=side)))
        except (OSError, DatasetError):
            continue
        kept.append(index)
    if not tensors:
        raise CheckpointError(f"none of the {len(records)} images could be read (first: {records[0].path})")
    return torch.stack(tensors).numpy(), kept
