"""A recommended starting recipe for a training mode and a dataset's size (the GUI's "Recommended" button).

Rules of thumb, readable and testable on their own. ``recommended_recipe`` returns
dotted-path changes for ``RunConfig.with_changes`` (or the GUI's ``ConfigState.apply``);
``explain_recipe`` says in one sentence what they set and why; ``format_rate`` writes a
learning rate the way people do.
"""

from __future__ import annotations

import math
from typing import Any

from engine.core.config import MODES
from engine.data.health import HealthReport

# Usable images per class (averaged over the classes that have any) that separate
# small, medium and large datasets.
SMALL_BELOW = 100
LARGE_FROM = 1000
# Assumed before the first scan, so that the button already gives a middle-of-the-road recipe.
ASSUMED_IMAGES_PER_CLASS = 200
# Largest / smallest class at which rare classes get more weight in the loss.
WEIGHTED_LOSS_IMBALANCE = 3.0

# Epochs per data size. Feature extraction trains a head on cached features, so epochs
# are cheap and small datasets (few steps per epoch) need more of them.
_FEATURE_EPOCHS = {"small": 30, "medium": 20, "large": 10}
_FINE_TUNE_EPOCHS = {"small": 15, "medium": 10, "large": 6}
_HEAD_EPOCHS = 3  # two_stage: long enough for the new head to stop sending noise into the backbone


def images_per_class(report: HealthReport | None) -> float | None:
    """Mean usable images per non-empty class of a scanned dataset; None without a report or images."""
    if report is None:
        return None
    counts = [count for count in report.class_counts.values() if count > 0]
    return sum(counts) / len(counts) if counts else None


def data_size(report: HealthReport | None) -> str:
    """``small``, ``medium`` or ``large``, by usable images per class (medium before a scan)."""
    per_class = images_per_class(report)
    per_class = ASSUMED_IMAGES_PER_CLASS if per_class is None else per_class
    if per_class < SMALL_BELOW:
        return "small"
    return "large" if per_class >= LARGE_FROM else "medium"


def recommended_recipe(mode: str, report: HealthReport | None) -> dict[str, Any]:
    """Return the settings a careful practitioner would start from, as dotted-path changes.

    Feature extraction: a head on frozen features with AdamW at 3e-3, 10-30 epochs (more for
    less data), no EMA. Fine-tuning: 1e-3 for the head and a tenth of it for the top two
    backbone stages, a warm-up epoch, label smoothing 0.1, light augmentation for small data
    and standard for more, early stopping after 3 flat epochs. Two-stage: fine-tuning's
    recipe after 3 head-only epochs. Every mode: cosine decay, batch size 32, and a
    class-weighted loss when the largest class is at least 3 times the smallest.

    Args:
        mode: one of ``engine.core.config.MODES``.
        report: the dataset's health report, or None before a scan (a medium dataset is assumed).

    Raises:
        ValueError: ``mode`` is not a training mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
    size = data_size(report)
    imbalanced = report is not None and report.imbalance_ratio >= WEIGHTED_LOSS_IMBALANCE
    recipe: dict[str, Any] = {
        "model.mode": mode,
        "optim.batch_size": 32,
        "optim.schedule": "cosine",
        "optim.weight_decay": 0.01,
        "optim.ema": False,
        "optim.monitor": "val_top1",
        "optim.class_balance": "weighted_loss" if imbalanced else "none",
    }
    if mode == "feature_extraction":
        recipe.update({
            "optim.learning_rate": 3e-3,
            "optim.epochs": _FEATURE_EPOCHS[size],
            "optim.warmup_epochs": 0.0,
            "optim.label_smoothing": 0.0,
            "optim.early_stopping_patience": 5,
            # Cached features: cutmix would need pixels, and one unaugmented view is the honest start.
            "augment.cutmix_alpha": 0.0,
            "augment.feature_views": 1,
        })
        return recipe
    fine_tune_epochs = _FINE_TUNE_EPOCHS[size]
    recipe.update({
        "optim.learning_rate": 1e-3,
        "optim.epochs": fine_tune_epochs + (_HEAD_EPOCHS if mode == "two_stage" else 0),
        "optim.warmup_epochs": 1.0,
        "optim.label_smoothing": 0.1,
        "optim.early_stopping_patience": 3,
        "model.backbone_lr_scale": 0.1,
        "model.trainable_stages": 2,
        "model.unfreeze_every": 0,
        "model.layer_decay": None,
        "model.freeze_batchnorm": False,
        "model.drop_path_rate": 0.1 if size == "large" else 0.0,
        "augment.preset": "light" if size == "small" else "standard",
    })
    if mode == "two_stage":
        recipe["model.head_epochs"] = _HEAD_EPOCHS
    return recipe


def explain_recipe(recipe: dict[str, Any], report: HealthReport | None) -> str:
    """One or two plain sentences on what ``recipe`` (from ``recommended_recipe``) sets and why."""
    per_class = images_per_class(report)
    data = (f"~{per_class:,.0f} images per class ({data_size(report)} dataset)" if per_class is not None
            else "no scan yet, so a medium-sized dataset is assumed")
    mode = recipe["model.mode"]
    epochs = recipe["optim.epochs"]
    patience = recipe["optim.early_stopping_patience"]
    rate = f"rate {format_rate(recipe['optim.learning_rate'])}"
    if mode == "feature_extraction":
        what = f"Feature extraction, {data}: learning {rate}, {epochs} epochs (stop after {patience} flat epochs)"
    else:
        stages = recipe["model.trainable_stages"]
        head = f"{recipe['model.head_epochs']} head-only epochs, then " if mode == "two_stage" else ""
        what = (
            f"{'Two-stage' if mode == 'two_stage' else 'Fine-tuning'}, {data}: {head}the top {stages} stages train at "
            f"{recipe['model.backbone_lr_scale']:g}× the head's {rate}, {epochs} epochs in all (stop after "
            f"{patience} flat epochs), 1 warm-up epoch, label smoothing {recipe['optim.label_smoothing']:g}, "
            f"{recipe['augment.preset']} augmentation"
        )
    what += ", cosine decay, batch size 32."
    if recipe["optim.class_balance"] == "weighted_loss" and report is not None:
        what += f" The largest class is {report.imbalance_ratio:.1f}× the smallest, so rare classes weigh more."
    return what


def format_rate(rate: float) -> str:
    """A learning rate the way people write it: ``2e-3``, ``2.5e-4``, ``1e0``."""
    exponent = math.floor(math.log10(rate))
    mantissa = round(rate / 10**exponent, 1)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"
