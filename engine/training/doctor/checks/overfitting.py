"""The ``overfitting`` check: validation loss rising while the gap to the training loss widens, and the
regularisation it suggests."""

from __future__ import annotations

import math
from typing import Any

from engine.core.config import RunConfig
from engine.training.callback import EPOCH_METRICS, LoopState
from engine.training.doctor.check import DoctorCheck
from engine.training.doctor.registry import register_check


@register_check
class Overfitting(DoctorCheck):
    """Warns when validation loss rises while the gap to the training loss widens, ``PATIENCE`` epochs running.

    Both must hold in every one of those epochs, and validation loss must by then be 10 %
    above its best: healthy runs wobble and creep. The demo's healthy MLP head rose twice
    in a row (0.53, 0.65, 0.77, then back to 0.58), so two epochs would be a false alarm;
    at the end of the cosine decay, healthy runs crept 2-7 % above their best (rate 1e-2:
    0.415 to 0.425; MLP head with BatchNorm: 0.391 to 0.418) with steady accuracy.
    Memorisation at rate 3e-2 rose 27 % (0.649 to 0.827) in three epochs.
    """

    name = "overfitting"
    default = True
    title = "Overfitting"
    description = (
        "At the end of each epoch, warns when the validation loss has risen for 3 epochs in a row while the "
        "gap to the training loss widened: the model memorises the training images. Suggests more "
        "augmentation, dropout, or stopping earlier."
    )

    PATIENCE = 3
    MIN_RISE_ABOVE_BEST = 0.10

    def before_fit(self, state: LoopState) -> None:
        self._rows: list[tuple[int, float, float]] = []

    def after_epoch(self, state: LoopState) -> None:
        row = state.scratch.get(EPOCH_METRICS, {})
        train, val = row.get("train_loss"), row.get("val_loss")
        if train is None or val is None or not (math.isfinite(train) and math.isfinite(val)):
            return
        self._rows.append((state.epoch, float(train), float(val)))
        if len(self._rows) <= self.PATIENCE:
            return
        recent = self._rows[-(self.PATIENCE + 1):]
        pairs = list(zip(recent, recent[1:], strict=False))
        rising = all(after[2] > before[2] for before, after in pairs)
        widening = all(after[2] - after[1] > before[2] - before[1] for before, after in pairs)
        best_epoch, _, best = min(self._rows, key=lambda item: item[2])
        if not (rising and widening and recent[-1][2] >= (1 + self.MIN_RISE_ABOVE_BEST) * best):
            return
        fix = regularisation_fix(self.context.config)
        val_losses = " -> ".join(f"{item[2]:.3f}" for item in recent)
        message = (
            f"Validation loss rose {self.PATIENCE} epochs in a row ({val_losses}) while the gap to the training "
            f"loss widened from {recent[0][2] - recent[0][1]:.3f} to {recent[-1][2] - recent[-1][1]:.3f}: the model "
            f"is memorising the training images rather than learning what generalises. The best weights (epoch "
            f"{best_epoch}, validation loss {best:.3f}) are kept in the best checkpoint. {describe_fix(fix)}"
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"epochs": [item[0] for item in recent], "train_losses": [item[1] for item in recent],
                      "val_losses": [item[2] for item in recent], "best_epoch": best_epoch, "best_val_loss": best},
            fix=fix,
        ), kind="overfitting")


def regularisation_fix(config: RunConfig) -> dict[str, Any]:
    """Config changes that fight overfitting: more augmentation and dropout, else early stopping."""
    augment, model = config.augment, config.model
    fix: dict[str, Any] = {}
    if model.mode == "feature_extraction":
        # Cached features see augmentation only through extra views of each image.
        if augment.feature_views < 4:
            fix["augment.feature_views"] = 4
            if augment.preset == "none":
                fix["augment.preset"] = "light"
    elif augment.preset in ("none", "light"):
        fix["augment.preset"] = "standard"
    if model.head_dropout < 0.3:
        fix["model.head_dropout"] = 0.3
    if not fix and config.optim.early_stopping_patience == 0:
        fix["optim.early_stopping_patience"] = 3
    return fix


_FIX_WORDS = {
    "augment.feature_views": "more augmented views of each training image",
    "augment.preset": "stronger augmentation",
    "model.head_dropout": "dropout before the classifier",
    "optim.early_stopping_patience": "stop when validation stops improving",
}


def describe_fix(fix: dict[str, Any]) -> str:
    """One sentence naming the changes of a regularisation fix."""
    if not fix:
        return "Regularisation is already strong: stop earlier, or add training images."
    parts = [f"{_FIX_WORDS.get(key, key)} ({key}: {value})" for key, value in fix.items()]
    return "Try " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] + "."
