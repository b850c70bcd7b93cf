"""The pooled backbone features of every usable labelled photo of a dataset, for the data doctor.

The photos are scanned and split as training does (same default fractions and seed, the project's
exclusions honoured) and their vectors come from the same on-disk cache, in the same unaugmented eval
space as feature-extraction training: a dataset trained on once is reviewed without a backbone pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augment import create_eval_transform, eval_source_side
from engine.core.config import DataConfig
from engine.core.device import plan_device
from engine.core.errors import DatasetError
from engine.data.prepare import prepare_dataset
from engine.models.backbones import create_model
from engine.models.features import FeatureCache, FeatureView, extract_features

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


@dataclass
class ReviewFeatures:
    """One feature vector per usable labelled photo.

    Attributes:
        paths: each photo's file, in the order of the rows of ``features``.
        labels: each photo's class index into ``classes``, ``(N,)`` int64.
        classes: class names, sorted (as training numbers them).
        splits: each photo's split, ``train``, ``val`` or ``test``.
        features: ``(N, D)`` float32 pooled backbone features (not normalised).
        failed: ``(path, reason)`` of photos whose features could not be computed; left out.
        notes: other photos left out, in words.
        backbone: the timm model the features come from.
    """

    paths: list[Path]
    labels: np.ndarray
    classes: tuple[str, ...]
    splits: list[str]
    features: np.ndarray
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    backbone: str = DEFAULT_BACKBONE


def review_features(
    data_path: str | Path,
    backbone: str = DEFAULT_BACKBONE,
    *,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> ReviewFeatures:
    """Compute, or read from the cache, the features of every usable labelled photo of ``data_path``.

    Args:
        data_path: a folder of class folders, of train/val/test folders, or a CSV of labels.
        backbone: timm model name; its offline or cached pretrained weights are used.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        log: receives progress lines.

    Raises:
        DatasetError: the data cannot be used, or no photo's features could be computed.
        BackboneUnavailable: the backbone or its weights cannot be had.
    """
    log = log or _ignore
    defaults = DataConfig()
    dataset = prepare_dataset(data_path, val_fraction=defaults.val_fraction, test_fraction=defaults.test_fraction,
                              seed=defaults.split_seed)
    class_index = {name: index for index, name in enumerate(dataset.classes)}
    records, splits = [], []
    # Files the scan left out (unreadable, damaged, exact copies...) are named, with the scan's reason.
    notes = [f"{path}: {problem.message}; skipped" for problem in dataset.report.problems if problem.excluded
             for path in problem.paths]
    for split, split_records in dataset.splits.items():
        for record in split_records:
            if record.label not in class_index:
                notes.append(f"{record.path}: class '{record.label}' has no training photo; skipped")
            elif record.sha256 is None:
                notes.append(f"{record.path}: could not be read to key its features; skipped")
            else:
                records.append(record)
                splits.append(split)
    # The head is irrelevant: only the pooled features before it are used.
    loaded = create_model(backbone, num_classes=0)
    plan = plan_device(device, images=True)
    settings = loaded.data_settings
    # The same space string as training's eval view, so both read and fill one cache.
    space = f"{loaded.backbone}|{loaded.weights_id}|eval|{settings.to_dict()}"
    view = FeatureView(FeatureCache(space), 0, create_eval_transform(settings), eval_source_side(settings))
    log(f"features of {len(records)} photos with {backbone} ({loaded.weights_source}) on {plan.device}")
    result = extract_features(
        plan.prepare_model(loaded.model), [record.path for record in records],
        [str(record.sha256) for record in records], views=[view], plan=plan, num_workers=defaults.num_workers,
    )
    log(f"features: {result.computed} computed, {result.reused} reused from the cache, "
        f"{len(result.failed)} failed, {result.seconds:.1f} s")
    if not result.kept:
        raise DatasetError(f"{data_path}: no photo's features could be computed")
    return ReviewFeatures(
        paths=[records[index].path for index in result.kept],
        labels=np.array([class_index[records[index].label] for index in result.kept], dtype=np.int64),
        classes=dataset.classes,
        splits=[splits[index] for index in result.kept],
        features=result.features[:, 0].numpy().astype(np.float32),
        failed=list(result.failed),
        notes=notes,
        backbone=backbone,
    )


def _ignore(_line: str) -> None:
    """A log that drops its lines."""
