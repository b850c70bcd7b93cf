"""The doctor's built-in checks: each watches a run for one known failure and explains it with numbers.

Every threshold here was chosen against healthy runs of this project (AdamW, a zero-initialised
head on pooled features, warmup then cosine decay; the demo's 10 classes x 50 images, batch
sizes 8 to 128, linear and MLP heads, fine-tuning at 64 px) so that they raise nothing, and
against broken ones (learning rate 10 and 1e-7, a head with the wrong number of classes,
too-small initialisation, memorisation, imbalanced classes) so that each is caught. The
constants of each check say what they are for; the config's ``doctor`` section holds the
thresholds a user may want to change.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from typing import Any

import torch

from engine.core.config import RunConfig
from engine.data.health import IMBALANCE_WARNING_RATIO
from engine.training.callbacks import EPOCH_METRICS
from engine.training.doctor import DoctorCheck, DoctorContext
from engine.training.loop import CancelFit, LoopState


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

    def after_loss(self, state: LoopState) -> None:
        if not self._pending or not state.training or state.loss is None:
            return
        self._pending = False
        classes = self.context.num_classes
        expected = math.log(classes) if classes >= 2 else 0.0
        loss = float(state.loss.detach())
        outputs = state.outputs
        width = int(outputs.shape[-1]) if outputs is not None and outputs.dim() >= 2 else None
        self.record(state, "initial_loss_measured", loss=loss, expected=expected, num_classes=classes,
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


class Divergence(DoctorCheck):
    """Stops the run when the loss is not finite or has grown ``divergence_factor`` times its start.

    The start is the first batch's loss, but never less than ln C: a run that starts below
    chance (resumed, or a second stage) must not be stopped for noise around a small value.
    The current loss is the median of the last three batches, so one bad batch of a healthy
    run cannot trip it, while a real divergence stops within two batches of crossing the
    limit. It raises the diagnosis, then ``CancelFit("diverged")``; the run saves ``last``.
    """

    name = "divergence"
    title = "Training diverged"
    description = (
        "Stops the run, with a 'last' checkpoint, when the loss becomes NaN or infinite or grows to "
        "doctor.divergence_factor times its starting value, and suggests a learning rate ten times lower."
    )

    SMOOTHING_BATCHES = 3

    def before_fit(self, state: LoopState) -> None:
        self._baseline: float | None = None
        self._recent: deque[float] = deque(maxlen=self.SMOOTHING_BATCHES)

    def after_loss(self, state: LoopState) -> None:
        if not state.training or state.loss is None:
            return
        loss = float(state.loss.detach())
        chance = math.log(max(self.context.num_classes, 2))
        if self._baseline is None:
            self._baseline = max(loss, chance) if math.isfinite(loss) else chance
        if not math.isfinite(loss):
            self._stop(state, loss, loss)
        self._recent.append(loss)
        smoothed = statistics.median(self._recent)
        if smoothed > self.settings.divergence_factor * self._baseline:
            self._stop(state, loss, smoothed)

    def _stop(self, state: LoopState, loss: float, smoothed: float) -> None:
        rate = self.context.config.optim.learning_rate
        lower = nice_rate(rate / 10)
        baseline = self._baseline or 0.0
        stopped = (f"so the run was stopped after {state.step} steps (its last weights are in the 'last' "
                   "checkpoint)")
        if math.isfinite(loss):
            seen = (f"The training loss reached {smoothed:.4g} (median of the last {len(self._recent)} batches), "
                    f"{smoothed / baseline:.0f}x its starting value of {baseline:.3g} and past the limit of "
                    f"{self.settings.divergence_factor:g}x: training has diverged, {stopped}.")
        else:
            seen = f"The training loss became {loss} at step {state.step}: the weights have blown up, {stopped}."
        message = (f"{seen} The usual cause is a learning rate too high for this model: lower it from "
                   f"{format_rate(rate)} to {format_rate(lower)}.")
        self.raise_diagnosis(state, self.diagnose(
            "error", message,
            evidence={"loss": loss, "smoothed_loss": smoothed, "initial_loss": baseline,
                      "divergence_factor": self.settings.divergence_factor, "steps": state.step,
                      "learning_rate": float(state.optimizer.param_groups[0]["lr"])},
            fix={"optim.learning_rate": lower},
        ), kind="diverged")
        raise CancelFit("diverged", message)


class LearningRateTooLow(DoctorCheck):
    """Warns when the loss has not moved from its start after ``flat_window`` steps.

    The window starts with the run, so a loss that fell and then levelled off (a model
    that has learnt) is never called flat. The start and end levels are the means of the
    window's first and last quarters; the loss counts as flat when it fell by less than
    5 %, and still would with the quarters' noise (two standard errors) in its favour.
    Healthy demo runs fall by 60-95 % over their first 100 steps; rate 1e-5 falls 2 %,
    1e-7 not at all.

    While the schedule is still warming up the rate is low on purpose, so the decision
    waits for the warmup to end. A run shorter than the window is judged over all its
    steps at its last step, if it has at least ``MIN_STEPS``.
    """

    name = "learning_rate_too_low"
    title = "Learning rate too low"
    description = (
        "Warns when the loss has stayed flat for doctor.flat_window steps from the start of training "
        "(or the whole run, if shorter): the weights barely move, so the learning rate is too low. "
        "Suggests a rate 10-30x higher, or the LR finder's suggestion."
    )

    MIN_STEPS = 20
    MAX_RELATIVE_CHANGE = 0.05
    NOISE_STANDARD_ERRORS = 2.0
    # No movement at all (< 1 %) calls for a bigger jump than a little movement.
    STILL_RELATIVE_CHANGE = 0.01

    def before_fit(self, state: LoopState) -> None:
        planned = (state.num_epochs - state.start_epoch + 1) * state.batches_per_epoch
        self._window = min(self.settings.flat_window, planned)
        self._last_step = state.step + planned
        self._active = state.step == 0 and self._window >= self.MIN_STEPS
        self._losses: list[float] = []
        self._rates = RateWatch()

    def before_step(self, state: LoopState) -> None:
        if self._active:
            self._rates.observe(state.optimizer)

    def after_step(self, state: LoopState) -> None:
        if not self._active or state.loss is None:
            return
        loss = float(state.loss.detach())
        if not math.isfinite(loss):
            self._active = False
            return
        self._losses.append(loss)
        if len(self._losses) < self._window:
            return
        if self._rates.rising() and state.step < self._last_step:
            return  # still warming up: the rate is low on purpose
        self._active = False
        self._judge(state)

    def _judge(self, state: LoopState) -> None:
        losses = self._losses
        quarter = max(3, self._window // 4)
        start, end = losses[:quarter], losses[-quarter:]
        start_level, end_level = statistics.fmean(start), statistics.fmean(end)
        if start_level <= 0:
            return
        change = (start_level - end_level) / start_level
        noise = math.sqrt(statistics.pvariance(start) / len(start) + statistics.pvariance(end) / len(end))
        noise /= start_level
        flat = -self.MAX_RELATIVE_CHANGE < change < self.MAX_RELATIVE_CHANGE - self.NOISE_STANDARD_ERRORS * noise
        if not flat:
            return
        rate = self.context.config.optim.learning_rate
        factor = 30 if change < self.STILL_RELATIVE_CHANGE else 10
        finder = self.context.suggested_learning_rate
        if finder is not None and finder > rate:
            suggestion, how = finder, "the LR finder's suggestion"
        else:
            suggestion, how = nice_rate(rate * factor), f"{factor}x higher"
        message = (
            f"The loss stayed flat for {len(losses)} steps: {start_level:.3f} at the start, {end_level:.3f} now "
            f"({change:.1%} lower; a learning run falls far more in that time). At the learning rate "
            f"{format_rate(rate)} each step moves the weights too little. Try {format_rate(suggestion)} ({how})"
            + ("." if finder is not None and finder > rate else ", or let the LR finder suggest one.")
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"steps": len(losses), "start_loss": start_level, "end_loss": end_level,
                      "relative_change": change, "noise": noise, "learning_rate": rate,
                      "suggested_learning_rate": suggestion},
            fix={"optim.learning_rate": suggestion},
        ), kind="flat")


class LearningRateCollapsed(DoctorCheck):
    """Warns when the learning rate has collapsed to a sliver of its peak with much of the run still to go.

    A schedule should spend the run decaying towards its end. One that reaches the bottom
    early (a step schedule stepping too often or too deep, a decay counted over too few
    updates) leaves every later update too small to change the weights: the run goes on but
    has stalled, and ends about where it was when the rate fell. The loss-based checks miss
    it, because the loss had already fallen before the stall.

    The rate (of the fastest group, the head) counts as collapsed below ``COLLAPSED_SHARE``
    of its peak. It must stay there for ``max(one epoch, WINDOW_SHARE of the run, MIN_STEPS)``
    updates in a row while at least ``MIN_REMAINING_SHARE`` of the run is still ahead. Healthy
    schedules never do: cosine is below 0.5 % of its peak only in its last 4.5 % of updates;
    the default step schedule (x0.1 every 3 epochs) holds 1 % from epoch 7 and 0.1 % only in
    the last epoch of 10; warmup starts at 1 %; ``cosine_restarts`` touches its floor for 4.5 %
    of each cycle, never a whole window. On the demo (130 steps), a cosine decay that reaches its
    floor of 1e-6 (0.03 % of the peak) ten updates after warmup is caught at step 36 with 94 steps
    to go, and a step schedule that steps every epoch at step 65 with 65 to go.
    """

    name = "learning_rate_collapsed"
    title = "Learning rate collapsed"
    description = (
        "Warns when the learning rate has stayed below 0.5% of its peak for an epoch (or 5% of the run) while "
        "a quarter of the run or more is still ahead: the schedule decayed far too early, so the weights barely "
        "move and the rest of the run is wasted. Suggests a schedule that decays over the whole run."
    )

    COLLAPSED_SHARE = 0.005
    MIN_REMAINING_SHARE = 0.25
    WINDOW_SHARE = 0.05
    MIN_STEPS = 10

    def before_fit(self, state: LoopState) -> None:
        per_epoch = state.batches_per_epoch
        self._total = state.num_epochs * per_epoch
        self._last_step = state.step + (state.num_epochs - state.start_epoch + 1) * per_epoch
        self._window = max(per_epoch, math.ceil(self.WINDOW_SHARE * self._total), self.MIN_STEPS)
        self._rates = RateWatch()
        self._collapsed_since: int | None = None
        self._before: deque[float] = deque(maxlen=self._window)  # losses of the steps before the collapse
        self._losses: list[float] = []  # and since

    def before_step(self, state: LoopState) -> None:
        self._rates.observe(state.optimizer)

    def after_step(self, state: LoopState) -> None:
        if self.diagnoses or not self._rates.peak or state.loss is None:  # raised once per run, whatever the stage
            return
        fastest = max(self._rates.peak, key=self._rates.peak.__getitem__)
        rate, peak = self._rates.current.get(fastest, 0.0), self._rates.peak[fastest]
        loss = float(state.loss.detach())
        if peak <= 0 or rate >= self.COLLAPSED_SHARE * peak:
            self._collapsed_since, self._losses = None, []
            self._before.append(loss)
            return
        if self._collapsed_since is None:
            self._collapsed_since = state.step
        self._losses.append(loss)
        remaining = self._last_step - state.step
        if len(self._losses) >= self._window and remaining >= self.MIN_REMAINING_SHARE * self._total:
            self._raise(state, rate, peak, remaining)

    def _raise(self, state: LoopState, rate: float, peak: float, remaining: int) -> None:
        optim = self.context.config.optim
        now = statistics.fmean(self._losses)
        before = statistics.fmean(self._before) if self._before else now
        if optim.schedule == "step":
            every = f"{optim.step_epochs:g} epoch{'' if optim.step_epochs == 1 else 's'}"
            cause = (f"The step schedule multiplies the rate by {optim.step_factor:g} every {every}, which brings "
                     f"it to the bottom long before the {optim.epochs}-epoch run ends.")
        else:
            cause = (f"The {optim.schedule} schedule should take the whole run to decay, but reached its bottom "
                     f"with {remaining} updates still to go.")
        schedule = "linear" if optim.schedule == "cosine" else "cosine"
        message = (
            f"The learning rate fell to {format_rate(rate)} at step {self._collapsed_since}, "
            f"{100 * rate / peak:.2g} % of its peak of {format_rate(peak)}, and has stayed there for "
            f"{len(self._losses)} steps, with {remaining} of the run's {self._total} steps still ahead. At this rate "
            f"the weights barely move, so the run has stalled: the training loss averaged {now:.3f} over those "
            f"steps ({before:.3f} over as many before), and the remaining epochs will change little. {cause} Use a "
            f"schedule that decays over the whole run (optim.schedule: {schedule})."
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"learning_rate": rate, "peak_learning_rate": peak, "share_of_peak": rate / peak,
                      "collapsed_at_step": self._collapsed_since, "steps_collapsed": len(self._losses),
                      "steps_remaining": remaining, "total_steps": self._total, "loss_before": before,
                      "loss_now": now, "schedule": optim.schedule},
            fix={"optim.schedule": schedule},
        ), kind="collapsed")


class UpdateRatio(DoctorCheck):
    """Measures how much each step changes the weights, relative to their size, per parameter group.

    Every ``update_ratio_every`` steps the weights are copied before the step and compared
    after it; a group's ratio is the median over its tensors of ||dw|| / ||w||, recorded as
    an ``update_ratio_measured`` event. A tensor that started the run at zero (the head's
    output layer) has no size of its own: under Adam its norm grows in proportion to the
    learning rate, so ||dw|| / ||w|| hardly depends on the rate (measured at step 40 on the
    demo: 0.027 at rate 1e-7, 0.013 at 3e-3, 0.10 at 10). Its updates are measured against
    the size a standard initialisation would give it instead, sqrt(fan_out) (entries of rms
    1/sqrt(fan_in)), about the size the trained head reaches (4.4 against 3.2 on the demo).
    Vectors that started at zero (biases) have no such size and are left out.

    Only weight matrices and kernels are judged; biases and normalisation scales are
    recorded but not judged (a norm scale near 1 moves by about the rate itself under
    Adam, which is small for any sane rate). A group is flagged when it is outside
    [``update_ratio_low``, ``update_ratio_high``] for ``PERSISTENCE`` measurements in a
    row taken near the peak of the schedule (not in warmup, not below half the peak).
    Healthy runs here measured 0.01-0.05 for a new head and 1e-3-2e-3 for a fine-tuned
    backbone; rate 10 gave 30-50 and rate 1e-7 gave 2e-6.
    """

    name = "update_ratio"
    title = "Update size"
    description = (
        "Every doctor.update_ratio_every steps, measures how much one step changes each parameter "
        "group's weights relative to their size (CS231n's update/weight ratio), and warns when it stays "
        "outside [doctor.update_ratio_low, doctor.update_ratio_high] near the peak learning rate."
    )

    PERSISTENCE = 3
    # A group whose rate is below this share of the fastest group's was slowed on purpose.
    SLOWED_SHARE = 0.05
    # A tensor whose entries have an rms below this counts as started at zero.
    ZERO_RMS = 1e-6

    def __init__(self, context: DoctorContext) -> None:
        super().__init__(context)
        # id(parameter) -> the size its updates are measured against: a fixed size for tensors that
        # started at zero, 0.0 for "its own norm at each measurement", None for "not measured".
        self._references: dict[int, float | None] = {}

    def before_fit(self, state: LoopState) -> None:
        self._rates = RateWatch()
        self._streaks: dict[str, tuple[str, list[float]]] = {}
        self._snapshot: list[tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]] | None = None
        for group in state.optimizer.param_groups:
            for parameter in group["params"]:
                self._reference(parameter)

    def before_step(self, state: LoopState) -> None:
        self._rates.observe(state.optimizer)
        if (state.step + 1) % self.settings.update_ratio_every:
            return
        self._snapshot = []
        for index, group in enumerate(state.optimizer.param_groups):
            kept = [(parameter, parameter.detach().clone()) for parameter in group["params"]
                    if parameter.requires_grad and self._reference(parameter) is not None]
            if kept:
                self._snapshot.append((group_name(group, index), kept))

    def after_step(self, state: LoopState) -> None:
        if self._snapshot is None:
            return
        snapshot, self._snapshot = self._snapshot, None
        ratios: dict[str, float] = {}
        judged: dict[str, float] = {}
        moved = False
        for name, pairs in snapshot:
            values, matrix_values = [], []
            for parameter, before in pairs:
                delta = float((parameter.detach().float() - before.float()).norm())
                moved = moved or delta > 0
                size = self._references[id(parameter)] or float(before.float().norm())
                if size <= 0:
                    continue
                values.append(delta / size)
                if parameter.dim() >= 2:
                    matrix_values.append(delta / size)
            if values:
                ratios[name] = statistics.median(values)
            if matrix_values:
                judged[name] = statistics.median(matrix_values)
        if not moved:
            return  # a skipped step (fp16 loss scaling met an overflow): nothing to measure
        self.record(state, "update_ratio_measured", ratios=ratios,
                    learning_rates={name: self._rates.current.get(name) for name in ratios})
        self._judge(state, judged)

    def _reference(self, parameter: torch.Tensor) -> float | None:
        key = id(parameter)
        if key not in self._references:
            rms = float(parameter.detach().float().norm()) / math.sqrt(max(parameter.numel(), 1))
            if rms > self.ZERO_RMS:
                self._references[key] = 0.0
            elif parameter.dim() >= 2:
                self._references[key] = math.sqrt(parameter.shape[0])
            else:
                self._references[key] = None
        return self._references[key]

    def _judge(self, state: LoopState, judged: dict[str, float]) -> None:
        low, high = self.settings.update_ratio_low, self.settings.update_ratio_high
        fastest = max(self._rates.current.values(), default=0.0)
        for name, value in judged.items():
            if not self._rates.near_peak(name):
                continue
            # Groups slowed on purpose (the lower layers under layer decay) are only judged for too-large steps.
            slowed = self._rates.current[name] < self.SLOWED_SHARE * fastest
            direction = "too_high" if value > high else "too_low" if value < low and not slowed else None
            if direction is None:
                self._streaks.pop(name, None)
                continue
            previous, values = self._streaks.get(name, (direction, []))
            self._streaks[name] = (direction, [*values, value] if previous == direction else [value])
        for direction in ("too_high", "too_low"):
            flagged = {name: values for name, (kind, values) in self._streaks.items()
                       if kind == direction and len(values) >= self.PERSISTENCE}
            if flagged:
                self._flag(state, direction, flagged)

    def _flag(self, state: LoopState, direction: str, flagged: dict[str, list[float]]) -> None:
        config = self.context.config
        low, high = self.settings.update_ratio_low, self.settings.update_ratio_high
        heads = [name for name in flagged if not name.startswith("backbone")]
        primary = heads[0] if heads else next(iter(flagged))
        ratio = flagged[primary][-1]
        # Adam's step is proportional to the rate: this factor brings the ratio to the band's geometric middle.
        factor = math.sqrt(low * high) / ratio
        rate = config.optim.learning_rate
        scale = config.model.backbone_lr_scale
        new_scale = min(1.0, nice_rate(scale * factor))
        if heads or new_scale == scale:
            fix = {"optim.learning_rate": nice_rate(rate * factor)}
            action = (f"{'Lower' if direction == 'too_high' else 'Raise'} the learning rate from {format_rate(rate)} "
                      f"to {format_rate(fix['optim.learning_rate'])}.")
        else:
            fix = {"model.backbone_lr_scale": new_scale}
            action = (f"{'Lower' if direction == 'too_high' else 'Raise'} the backbone's share of the rate "
                      f"(model.backbone_lr_scale) from {scale:g} to {new_scale:g}.")
        groups = ", ".join(f"{name} {values[-1]:.2g}" for name, values in flagged.items())
        effect = ("steps this large keep overwriting what the weights have learnt, and the loss jumps around"
                  if direction == "too_high" else "at this pace the weights barely move during the run")
        message = (
            f"Each step changes the weights by {'only ' if direction == 'too_low' else ''}{ratio:.2g} of their size "
            f"({groups}; {len(flagged[primary])} measurements in a row near the peak rate). Healthy runs stay between "
            f"{low:g} and {high:g}: {effect}. {action}"
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"group": primary, "ratio": ratio, "ratios": flagged[primary], "low": low, "high": high,
                      "learning_rate": self._rates.current.get(primary, rate),
                      "groups": sorted(flagged)},
            fix=fix, title="Updates too large" if direction == "too_high" else "Updates too small",
        ), kind=f"{direction}:{primary}")


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


class BadStart(DoctorCheck):
    """Warns when the loss sat at its starting level for a while, then fell suddenly (a hockey stick).

    The plateau ends when the 5-batch mean falls 5 % below the start (the median of the
    first 5 losses); it must have lasted at least ``MIN_PLATEAU`` steps (healthy demo runs:
    4-8 steps; rate 1e-4, a slow but steady learner, about 20). The fall is sudden when,
    within half the plateau's length after it, the loss is 25 % below the start: at least
    ten times the plateau's pace. If the rate was still warming up when the loss began to
    fall, the warmup's low start is the suspect and the diagnosis is ``info`` (the run is
    sound, it wastes steps); otherwise the initialisation is, and it is a ``warning``.
    """

    name = "bad_start"
    title = "Slow start"
    description = (
        "Warns when the loss stayed flat for a while and then fell suddenly: a sign of a poor "
        "initialisation (weights too small, units saturated) or of a warmup that starts too low."
    )

    SMOOTHING = 5
    START_DROP = 0.05
    MIN_PLATEAU = 20
    FALL = 0.25

    def before_fit(self, state: LoopState) -> None:
        self._active = state.step == 0
        self._losses: list[float] = []
        self._rates = RateWatch()
        self._plateau: int | None = None
        self._warming_up_at_fall = False
        self._rate_at_fall = 0.0

    def before_step(self, state: LoopState) -> None:
        if self._active:
            self._rates.observe(state.optimizer)

    def after_step(self, state: LoopState) -> None:
        if not self._active or state.loss is None:
            return
        loss = float(state.loss.detach())
        if not math.isfinite(loss):
            self._active = False
            return
        self._losses.append(loss)
        count = len(self._losses)
        if count < self.SMOOTHING:
            return
        start = statistics.median(self._losses[: self.SMOOTHING])
        level = statistics.fmean(self._losses[-self.SMOOTHING:])
        if self._plateau is None:
            if level < (1 - self.START_DROP) * start:
                self._plateau = count
                self._active = count >= self.MIN_PLATEAU
                self._warming_up_at_fall = self._rates.rising()
                self._rate_at_fall = max(self._rates.current.values(), default=0.0)
            return
        if count < self._plateau + max(self.SMOOTHING, self._plateau // 2):
            return
        self._active = False
        if level <= (1 - self.FALL) * start:
            self._raise(state, start, level, count - self._plateau)

    def _raise(self, state: LoopState, start: float, level: float, fall_steps: int) -> None:
        optim = self.context.config.optim
        seen = (f"The loss sat near {start:.3f} for {self._plateau} steps, then fell to {level:.3f} within "
                f"{fall_steps} steps.")
        severity = "warning"
        if self._warming_up_at_fall and optim.warmup_epochs > 0:
            severity = "info"
            shorter = round(optim.warmup_epochs / 2, 2)
            fix: dict[str, Any] = {"optim.warmup_epochs": shorter}
            message = (f"{seen} It only started to fall as the warming-up learning rate reached "
                       f"{format_rate(self._rate_at_fall)}: the warmup starts too low for this run and wastes its "
                       f"first steps. Shorten it (optim.warmup_epochs: {optim.warmup_epochs:g} -> {shorter:g}), "
                       "and if the flat start remains, check the initialisation of any layer you added.")
        else:
            fix = {}
            message = (f"{seen} A long flat start followed by a sudden fall is the mark of a poor initialisation: "
                       "layers initialised too small (or saturated) pass on tiny gradients until their weights "
                       "grow. Check the initialisation of any layer you added (Kaiming for ReLU layers, a zero "
                       "output layer) and that inputs are normalised.")
        self.raise_diagnosis(state, self.diagnose(
            severity, message,
            evidence={"plateau_steps": self._plateau or 0, "start_loss": start, "loss_after_fall": level,
                      "fall_steps": fall_steps, "learning_rate_at_fall": self._rate_at_fall,
                      "in_warmup": self._warming_up_at_fall},
            fix=fix,
        ), kind="bad_start")


class ClassImbalance(DoctorCheck):
    """Before training, warns when the largest class has ``IMBALANCE_WARNING_RATIO`` (3) times the smallest's images
    and nothing balances them (``optim.class_balance`` is ``none``)."""

    name = "class_imbalance"
    title = "Imbalanced classes"
    description = (
        "Before training, warns when the largest class has at least 3x the images of the smallest and "
        "optim.class_balance is none, and suggests weighting the loss by class."
    )

    def before_fit(self, state: LoopState) -> None:
        health = self.context.health
        if health is None or self.context.config.optim.class_balance != "none":
            return
        if health.imbalance_ratio < IMBALANCE_WARNING_RATIO:
            return
        counts = {label: count for label, count in health.class_counts.items() if count > 0}
        largest = max(counts, key=counts.__getitem__)
        smallest = min(counts, key=counts.__getitem__)
        message = (
            f"Class '{largest}' has {counts[largest]} images and '{smallest}' only {counts[smallest]} "
            f"({health.imbalance_ratio:.1f} to 1). Trained as they are, the model learns to favour the large "
            "classes and gets few of the rare ones right, while overall accuracy hides it. Weigh the loss by "
            "class (optim.class_balance: weighted_loss), or draw rare classes more often (balanced_sampler)."
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"imbalance_ratio": health.imbalance_ratio, "largest_class": largest,
                      "largest_count": counts[largest], "smallest_class": smallest,
                      "smallest_count": counts[smallest], "classes": list(health.class_counts),
                      "counts": list(health.class_counts.values())},
            fix={"optim.class_balance": "weighted_loss"},
        ), kind="imbalance")


BUILTIN_CHECKS: tuple[type[DoctorCheck], ...] = (
    InitialLoss, Divergence, LearningRateTooLow, LearningRateCollapsed, UpdateRatio, Overfitting, BadStart,
    ClassImbalance,
)
"""The checks ``engine.training.doctor`` registers, in the order ``doctor.checks`` lists them by default."""


class RateWatch:
    """Per parameter group: the learning rate of the step being taken, whether the schedule is rising, and its peak.

    Call ``observe`` in ``before_step``: the rates are then the ones that step uses.
    """

    # A group counts as near its peak at or above this share of it.
    NEAR_PEAK = 0.5

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.previous: dict[str, float] = {}
        self.peak: dict[str, float] = {}

    def observe(self, optimizer: torch.optim.Optimizer) -> None:
        """Record the rate each group uses for the coming step."""
        self.previous, self.current = self.current, {}
        for index, group in enumerate(optimizer.param_groups):
            if not group["params"]:
                continue
            name = group_name(group, index)
            rate = float(group["lr"])
            # timm's schedulers keep the fastest group's peak in initial_lr and each group's share in lr_scale.
            planned = float(group.get("initial_lr", 0.0)) * float(group.get("lr_scale", 1.0))
            self.current[name] = rate
            self.peak[name] = max(self.peak.get(name, 0.0), planned, rate)

    def rising(self, name: str | None = None) -> bool:
        """Whether the rate went up since the last step (warmup), for one group or any."""
        names: Iterable[str] = [name] if name is not None else list(self.current)
        return any(
            item in self.previous and self.current.get(item, 0.0) > self.previous[item] * (1 + 1e-6)
            for item in names
        )

    def near_peak(self, name: str) -> bool:
        """Whether the group's rate is at its plateau: not warming up, not deep into the decay."""
        if name not in self.current:
            return False
        return not self.rising(name) and self.current[name] >= self.NEAR_PEAK * self.peak[name]


def group_name(group: dict[str, Any], index: int) -> str:
    """A parameter group's ``name`` (``head``, ``backbone_no_decay``...), or ``group_<index>``."""
    return str(group.get("name") or f"group_{index}")


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


def nice_rate(value: float) -> float:
    """``value`` rounded, in log space, to 1, 2, 3 or 5 times a power of ten (3.7e-4 -> 3e-4)."""
    if value <= 0 or not math.isfinite(value):
        return value
    exponent = math.floor(math.log10(value))
    mantissa = value / 10**exponent
    best = min((1, 2, 3, 5, 10), key=lambda choice: abs(math.log(mantissa / choice)))
    return float(f"{best * 10.0**exponent:.1e}")


def format_rate(value: float) -> str:
    """A learning rate as people write it: ``3e-4``, ``0.01``, ``10``."""
    text = f"{value:.2e}" if 0 < abs(value) < 0.01 or abs(value) >= 1000 else f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{float(mantissa):g}e{int(exponent)}"
    return text
