"""What Auto trains, and why: the steps that the data and the time left justify, with settings and estimates.

Pure planning, no torch: facts about the data (``DataFacts``) and the device (``DeviceSpeed``,
measured by ``engine.auto.speed``) in; ``Step``s with their config changes, estimated
seconds and a reason in words out. The recipes are ``engine.training.recommended``'s, for the
dataset's size class; Auto decides which of them fit and how long they may train.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from engine.core.errors import DatasetError
from engine.data.health import HealthReport
from engine.data.prepare import PreparedDataset
from engine.training.recommended import data_size, images_per_class, recommended_recipe

MIN_FINE_TUNE_EPOCHS = 3
"""Fewer epochs of fine-tuning than this rarely beat the head on cached features: not worth the time."""
SAFETY = 1.25
"""Estimates are multiplied by this: a plan cut to the second overruns on a busy machine."""
SMALLEST_INPUT = 96
"""Fine-tuning is never planned below this input side: pretrained features fall apart on tinier inputs."""
FINISH_SECONDS = 3.0
"""Kept back from every step for the report and the process's exit."""
CHOICE_LOAD_SECONDS = 1.5
"""Loading one candidate checkpoint to score it on validation (measured: ~1 s for Lite0 on a CPU)."""
DEFAULT_DECODE_SECONDS = 0.003
"""Per photo, when the baseline read every feature vector from the cache and so timed no decoding."""
SECOND_MEMBER_SEED_OFFSET = 1


@dataclass(frozen=True)
class DataFacts:
    """What the plan needs to know of a scanned, split dataset.

    Attributes:
        classes: classes with usable images.
        train_images, val_images: images per split.
        images_per_class: usable images per class, on average.
        median_side: median shorter side of the usable photos, in pixels.
        size: ``small``, ``medium`` or ``large`` (``engine.training.recommended.data_size``).
    """

    classes: int
    train_images: int
    val_images: int
    images_per_class: float
    median_side: int
    size: str

    @classmethod
    def of(cls, dataset: PreparedDataset) -> DataFacts:
        """The facts of a prepared dataset (its health report gives the photos' sizes)."""
        usable = dataset.report.usable_records()
        sides = [min(record.width, record.height) for record in usable if record.width and record.height]
        return cls(
            classes=len(dataset.classes), train_images=len(dataset.splits["train"]),
            val_images=len(dataset.splits["val"]), images_per_class=images_per_class(dataset.report) or 0.0,
            median_side=int(statistics.median(sides)) if sides else 0, size=data_size(dataset.report),
        )

    def describe(self) -> str:
        """One line, e.g. ``10 classes, 400 train + 100 val images (~50 per class: small), photos ~64 px``."""
        return (f"{self.classes} classes, {self.train_images} train + {self.val_images} val images "
                f"(~{self.images_per_class:.0f} per class: {self.size}), photos ~{self.median_side} px")


@dataclass(frozen=True)
class DeviceSpeed:
    """How fast this machine trains the backbone, measured at the start of Auto.

    Attributes:
        device: the device in words (``cpu, fp32``).
        input_size: the input side, in pixels, the times were measured at.
        resizable: whether the backbone accepts other input sizes (a ViT often does not).
        train_seconds: per image, a fine-tuning step's forward and backward pass.
        eval_seconds: per image, a forward pass without gradients.
        decode_seconds: per image, reading and resizing a photo (from the baseline's feature extraction).
        startup_seconds: a run's fixed cost before its first epoch (scan, model, loaders), from the baseline.
    """

    device: str
    input_size: int
    resizable: bool
    train_seconds: float
    eval_seconds: float
    decode_seconds: float
    startup_seconds: float

    def scaled(self, seconds: float, side: int) -> float:
        """``seconds`` measured at ``input_size``, at another side: the work grows with the pixels."""
        return seconds * (side / self.input_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DeviceSpeed:
        """Rebuild from ``to_dict``."""
        return cls(**values)


@dataclass(frozen=True)
class Step:
    """One training run of the plan.

    Attributes:
        name: unique in the plan, e.g. ``baseline``, ``two_stage``, ``fine_tune_seed1``.
        title: in words, for the report.
        changes: dotted-path config changes over the base config (``RunConfig.with_changes``).
        reason: why the plan has this step, in a sentence.
        seconds: estimated wall time of the whole run (0: not estimated, the baseline's).
        epoch_seconds: estimated seconds of one fine-tuning epoch (0 for feature extraction).
        fixed_seconds: estimated seconds of the run outside its fine-tuning epochs.
    """

    name: str
    title: str
    changes: dict[str, Any]
    reason: str
    seconds: float = 0.0
    epoch_seconds: float = 0.0
    fixed_seconds: float = 0.0

    @property
    def fine_tune_epochs(self) -> int:
        """Epochs that fine-tune the backbone (a ``two_stage`` run's head epochs left out)."""
        if self.changes.get("model.mode", "feature_extraction") == "feature_extraction":
            return 0
        head = self.changes.get("model.head_epochs", 0) if self.changes["model.mode"] == "two_stage" else 0
        return int(self.changes["optim.epochs"]) - int(head)

    def with_fine_tune_epochs(self, epochs: int) -> Step:
        """The same step with this many fine-tuning epochs (and its estimate to match)."""
        head = int(self.changes.get("model.head_epochs", 0)) if self.changes["model.mode"] == "two_stage" else 0
        return Step(self.name, self.title, {**self.changes, "optim.epochs": head + epochs}, self.reason,
                    self.fixed_seconds + epochs * self.epoch_seconds, self.epoch_seconds, self.fixed_seconds)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, for ``plan.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Step:
        """Rebuild from ``to_dict``."""
        return cls(**values)


def refusal(dataset: PreparedDataset) -> str | None:
    """The data doctor's reason not to train at all, or None: a class with a single usable photo.

    Such a class cannot be both learnt and checked (a class with none is already left out, and
    fewer than two classes are refused by ``engine.data.prepare`` itself).
    """
    counts = Counter(record.label for records in dataset.splits.values() for record in records)
    lonely = sorted(label for label in dataset.classes if counts[label] < 2)
    if not lonely:
        return None
    label = lonely[0]
    found = [problem.message for problem in dataset.report.problems_of("few_images") if problem.label == label]
    why = found[0] if found else f"only {counts[label]} usable image"
    more = f" (and {len(lonely) - 1} more such classes)" if len(lonely) > 1 else ""
    return (f"{dataset.root}: class '{label}': {why}{more}; add photos of it or remove its folder, "
            f"then run Auto again")


def check_usable(dataset: PreparedDataset) -> None:
    """Raise ``DatasetError`` with ``refusal``'s message when the data cannot be trained on."""
    if (message := refusal(dataset)) is not None:
        raise DatasetError(message)


def baseline_step(report: HealthReport) -> Step:
    """The feature-extraction baseline: the Recommended recipe on cached features, always run first."""
    return Step(
        "baseline", "feature extraction (head on cached features)", recommended_recipe("feature_extraction", report),
        "always first: the fastest model, a reference the later steps must beat, and the device's speed measured",
    )


def fine_tune_sides(speed: DeviceSpeed, facts: DataFacts, chosen: int | None) -> list[int]:
    """Input sides to try for fine-tuning, preferred first.

    The backbone's own side first. When the photos are much smaller than it (tiny images),
    a smaller side, twice the photos' own and at least ``SMALLEST_INPUT``, costs far less for
    the same detail. A side the user chose (``data.input_size``) is kept as it is.
    """
    if chosen is not None or not speed.resizable or not facts.median_side:
        return [speed.input_size]
    smaller = max(SMALLEST_INPUT, 32 * math.ceil(2 * facts.median_side / 32))
    return [speed.input_size, smaller] if smaller < speed.input_size else [speed.input_size]


def epoch_seconds(facts: DataFacts, speed: DeviceSpeed, side: int, *, ema: bool) -> float:
    """Estimated seconds of one fine-tuning epoch: train steps, then validation (twice with EMA)."""
    train = facts.train_images * speed.scaled(speed.train_seconds, side)
    validate = facts.val_images * speed.scaled(speed.eval_seconds, side) * (2 if ema else 1)
    return SAFETY * (train + validate)


def fixed_seconds(facts: DataFacts, speed: DeviceSpeed, side: int, *, head_epochs: int) -> float:
    """Estimated seconds of a fine-tuning run outside its fine-tuning epochs.

    Its start-up, the first epoch's decoding of every photo (later epochs read the decoded
    cache) and, for ``two_stage``, the head epochs, whose features are cached already when the
    side is the baseline's and are computed once otherwise.
    """
    images = facts.train_images + facts.val_images
    head = images * (speed.scaled(speed.eval_seconds, side) + speed.decode_seconds) if head_epochs else 0.0
    if side == speed.input_size:
        head = 0.0  # the baseline cached these features
    return SAFETY * (speed.startup_seconds + images * speed.decode_seconds + head) + head_epochs * 0.2


def ema_decay(facts: DataFacts, batch_size: int) -> float:
    """An EMA decay that averages over about the last two epochs.

    timm's default 0.9998 averages over ~5000 steps: on a few hundred photos that is more
    steps than the whole run, and the average would still hold the starting weights.
    """
    steps_per_epoch = max(1, math.ceil(facts.train_images / batch_size))
    return round(min(0.9998, max(0.9, 1.0 - 1.0 / (2 * steps_per_epoch))), 4)


def choice_seconds(facts: DataFacts, speed: DeviceSpeed | None, candidates: int) -> float:
    """Time kept back to score ``candidates`` checkpoints on validation and write the report."""
    if candidates <= 1 or speed is None:
        return FINISH_SECONDS  # one model is chosen without predicting
    per_image = speed.eval_seconds + speed.decode_seconds
    return FINISH_SECONDS + candidates * (CHOICE_LOAD_SECONDS + SAFETY * facts.val_images * per_image)


def plan_fine_tuning(
    facts: DataFacts, speed: DeviceSpeed, seconds_left: float, report: HealthReport, *,
    chosen_side: int | None = None, seed: int = 0, budget_seconds: float | None = None,
) -> tuple[list[Step], list[str]]:
    """The fine-tuning steps that fit in ``seconds_left``, and notes on what was left out and why.

    The first is ``two_stage`` with EMA (its head epochs reuse the baseline's cached features,
    so the head is trained before the backbone unfreezes at almost no cost), for as many of the
    Recommended recipe's epochs as fit. Time left after it buys a second, different member for
    the ensemble: plain ``fine_tune`` with another seed. A step that cannot get
    ``MIN_FINE_TUNE_EPOCHS`` is left out, with the reason.

    Args:
        facts: the data.
        speed: the device, measured.
        seconds_left: wall time the steps may take together.
        report: the dataset's health report (the recipe's size class and class balance).
        chosen_side: ``data.input_size`` when the user set it.
        seed: the base config's seed (the second member takes the next one).
        budget_seconds: the whole budget, to say which budget would allow fine-tuning when it does not fit.
    """
    recipe = recommended_recipe("two_stage", report)
    head_epochs = int(recipe["model.head_epochs"])
    wanted = int(recipe["optim.epochs"]) - head_epochs
    sides = fine_tune_sides(speed, facts, chosen_side)
    notes: list[str] = []
    for side in sides:
        per_epoch = epoch_seconds(facts, speed, side, ema=True)
        fixed = fixed_seconds(facts, speed, side, head_epochs=head_epochs)
        fit = math.floor((seconds_left - fixed) / per_epoch)
        if fit >= MIN_FINE_TUNE_EPOCHS:
            break
    else:
        needed = fixed + MIN_FINE_TUNE_EPOCHS * per_epoch
        enough = ""
        if budget_seconds is not None:
            minutes = math.ceil((budget_seconds + needed - max(0.0, seconds_left)) / 60)
            enough = f" (a budget of ~{minutes}m would allow it)"
        return [], [f"fine-tuning skipped: {MIN_FINE_TUNE_EPOCHS} epochs at {side} px need ~{needed:.0f}s on "
                    f"{speed.device} (~{per_epoch:.1f}s per epoch), and {max(0.0, seconds_left):.0f}s are left; "
                    f"the feature-extraction baseline is the best this budget allows{enough}"]
    if side != speed.input_size:
        notes.append(f"fine-tuning at {side} px instead of {speed.input_size}: the photos are ~{facts.median_side} px,"
                     f" and at {speed.input_size} px {MIN_FINE_TUNE_EPOCHS} epochs would not fit")
    changes = {
        **recipe, "optim.ema": True, "optim.ema_decay": ema_decay(facts, int(recipe["optim.batch_size"])),
        **({"data.input_size": side} if side != speed.input_size else {}),
    }
    first = Step(
        "two_stage", f"two-stage fine-tuning with EMA at {side} px", changes,
        f"fine-tuning the top {recipe['model.trainable_stages']} stages beats a head on frozen features when"
        f" {MIN_FINE_TUNE_EPOCHS}+ epochs fit; the head trains first on the cached features",
        epoch_seconds=per_epoch, fixed_seconds=fixed,
    ).with_fine_tune_epochs(min(wanted, fit))
    if fit < wanted:
        notes.append(f"two_stage: {fit} of the recipe's {wanted} fine-tuning epochs fit in the time left")
    steps = [first]
    left = seconds_left - first.seconds
    second_fixed = fixed_seconds(facts, speed, side, head_epochs=0)
    second_fit = math.floor((left - second_fixed) / per_epoch)
    if second_fit >= MIN_FINE_TUNE_EPOCHS:
        second_changes = {key: value for key, value in changes.items() if key != "model.head_epochs"}
        second_changes.update({"model.mode": "fine_tune", "seed": seed + SECOND_MEMBER_SEED_OFFSET})
        second = Step(
            f"fine_tune_seed{seed + SECOND_MEMBER_SEED_OFFSET}", f"fine-tuning with EMA at {side} px, another seed",
            second_changes,
            "the time left buys a second member for the ensemble, unlike the first in mode and seed (diverse"
            " members help an ensemble more than near-copies)",
            epoch_seconds=per_epoch, fixed_seconds=second_fixed,
        )
        steps.append(second.with_fine_tune_epochs(min(wanted, second_fit)))
    elif fit >= wanted:
        notes.append(f"no second fine-tuned member: {MIN_FINE_TUNE_EPOCHS} more epochs would need "
                     f"~{second_fixed + MIN_FINE_TUNE_EPOCHS * per_epoch:.0f}s, {max(0.0, left):.0f}s are left")
    return steps, notes
