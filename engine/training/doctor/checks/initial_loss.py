"""The ``initial_loss`` check: the first training loss against ln(C), the loss of a model that knows nothing yet."""

from __future__ import annotations

import math
from typing import Any

from engine.core.events import InitialLossMeasured
from engine.training.callback import LoopState
from engine.training.doctor.check import DoctorCheck
from engine.training.doctor.registry import register_check


@register_check
class InitialLoss(DoctorCheck):
    """The first training batch's loss against ln(C), the loss of a model that knows nothing yet.

    A classifier that has not learnt anything should give every class the same
    probability 1/C, and the cross-entropy of that uniform prediction is ln C whatever the
    targets: for any target distribution q over the C classes (a one-hot label, a label
    smoothed to (1 - e) one-hot + e/C, a mixup blend of two labels) it is
    -sum_k q_k log(1/C) = ln C * sum_k q_k = ln C. A class-weighted mean of rows that each
    equal ln C is ln C too. Transfer Studio zeroes the head's output layer, so a correct
    set-up starts at exactly ln C.

    Only the first batch counts: it is the one computed before any update, so it measures
    the set-up alone. Later batches already carry the learning rate's effect (at rate 10
    the demo's first three batches read 2.20, 5.27 and 38.2; their mean would blame the
    set-up for what the rate did).
    """

    name = "initial_loss"
    default = True
    title = "Initial loss"
    description = (
        "Compares the first training loss with ln(C), the loss of a model that has learnt nothing yet. "
        "Far above it points to a head wired for another number of classes, labels that do not match, "
        "or a head initialised with large weights; far below it points to label leakage or a head that "
        "already knows the task."
    )

    # Above ln C by more than this many nats, or this share of ln C (whichever is larger): the start
    # is confidently wrong. 0.5 nats is the excess of random logits with a standard deviation of 1.
    HIGH_EXCESS_NATS = 0.5
    HIGH_EXCESS_SHARE = 0.25
    # At or above this multiple of ln C the set-up is broken rather than merely badly initialised.
    ERROR_RATIO = 2.0
    # Below this share of ln C the model predicts the labels before it has trained.
    LOW_RATIO = 0.5

    def before_fit(self, state: LoopState) -> None:
        # A resumed run or a second stage starts from trained weights: its first loss says nothing of the set-up.
        self._pending = state.step == 0
        self._width: int | None = None

    def after_loss(self, state: LoopState) -> None:
        if self._pending and state.training and state.step == 0 and self._width is None:
            outputs = state.outputs  # its shape is known on the host; its values wait for the sync
            self._width = int(outputs.shape[-1]) if outputs is not None and outputs.dim() >= 2 else None

    def after_sync(self, state: LoopState) -> None:
        if not self._pending or not state.losses or state.losses[0].step != 1:
            return
        self._pending = False
        classes = self.context.num_classes
        expected = math.log(classes) if classes >= 2 else 0.0
        loss = state.losses[0].loss
        width = self._width
        self.record(state, InitialLossMeasured.event, loss=loss, expected=expected, num_classes=classes,
                    output_classes=width)
        if classes < 2 or not math.isfinite(loss):
            return  # one class has no chance level; a non-finite loss is the divergence check's
        evidence: dict[str, Any] = {
            "initial_loss": loss, "expected_loss": expected, "num_classes": classes,
            "output_classes": width if width is not None else "unknown", "ratio": loss / expected,
        }
        seen = (f"The first training loss is {loss:.3f}; a model that knows nothing yet scores "
                f"ln({classes}) = {expected:.3f}.")
        if width is not None and width != classes:
            self.raise_diagnosis(state, self.diagnose(
                "error",
                f"The model outputs {width} scores per image, but the dataset has {classes} classes: its head "
                f"was built for another number of classes. {seen} Rebuild the head with {classes} outputs "
                "(a mis-set number of classes), and check that the labels are the dataset's class indices.",
                evidence=evidence, title="Head does not match the classes",
            ), kind="output_mismatch")
        elif loss >= self.ERROR_RATIO * expected:
            self.raise_diagnosis(state, self.diagnose(
                "error",
                f"{seen} Starting at {loss / expected:.1f}x that, the model is confidently wrong before it has "
                "seen a single update. Suspect the head's wiring (outputs that do not match the classes), labels "
                "that do not match the images (shuffled, or indices from another class list), or a last layer "
                "with large initial weights (zero it, as Transfer Studio's heads are).",
                evidence=evidence, title="Initial loss far too high",
            ), kind="too_high")
        elif loss > expected + max(self.HIGH_EXCESS_NATS, self.HIGH_EXCESS_SHARE * expected):
            self.raise_diagnosis(state, self.diagnose(
                "warning",
                f"{seen} The extra {loss - expected:.2f} nats mean the initial predictions are already confident, "
                "so the first epochs are spent undoing random logits. Initialise the last layer smaller or at zero, "
                "and check that the labels match the images.",
                evidence=evidence, title="Initial loss too high",
            ), kind="too_high")
        elif loss < self.LOW_RATIO * expected:
            self.raise_diagnosis(state, self.diagnose(
                "warning",
                f"{seen} Less than half of it means the model already predicts the labels before training. "
                "Suspect labels leaking into the inputs (the same images in training and validation, the label "
                "visible in the image or its name), a head that was not reset and already knows these classes, "
                "or a task that is trivial.",
                evidence=evidence, title="Initial loss suspiciously low",
            ), kind="too_low")
