"""Every event a run folder or a search folder records: its name, schema version and fields, declared once.

An event is one JSON object on one line of ``events.jsonl``: the envelope (``schema``,
``event``, ``time``, ``epoch``, ``step``) and the fields of its declaration, a frozen
dataclass registered by ``register_event``. A field without a default is in every line;
one with a default may be left out. ``engine.training.runfolder`` writes lines checked
by ``check_record`` (an undeclared event or field, or a missing one, is a programming
error) and reads back only declared events; ``parse_event`` gives a line's typed view.

The module is longer than most because it is the catalogue: one short declaration per
event, in the order a run writes them, searched in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard, TypeVar

ENVELOPE = ("schema", "event", "time", "epoch", "step")
"""Keys of every event line, whatever the event."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of the declarations: the envelope's typed part.

    Attributes:
        time: when the event was written, in seconds since the epoch.
        epoch: the training epoch it belongs to (from 1), if any.
        step: the optimizer step it belongs to, if any.
    """

    event: ClassVar[str] = ""  # the name in the line's ``event`` key: past-tense snake_case
    schema: ClassVar[int] = 1  # version of the fields; raised when a field changes meaning or goes

    time: float | None = None
    epoch: int | None = None
    step: int | None = None


EventType = TypeVar("EventType", bound=type[Event])
_declared: dict[str, type[Event]] = {}


def register_event(declaration: EventType) -> EventType:
    """Declare an event (usable as a class decorator, above ``@dataclass(frozen=True, kw_only=True)``).

    Raises:
        ValueError: the class has no ``event`` name, or another class has the same name.
    """
    name = declaration.event
    if not name:
        raise ValueError(f"event declaration {declaration.__qualname__} has no event name")
    existing = _declared.get(name)
    if existing is not None and existing is not declaration:
        raise ValueError(f"an event named '{name}' is already declared ({existing.__qualname__})")
    _declared[name] = declaration
    return declaration


def get_event_type(name: object) -> type[Event]:
    """The declaration of event ``name``.

    Raises:
        TypeError: no event has this name (the message suggests the closest one).
    """
    if not is_declared(name):
        close = difflib.get_close_matches(str(name), list(_declared), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise TypeError(f"event {name!r} is not declared in engine.core.events{hint}")
    return _declared[name]


def list_event_types() -> list[str]:
    """Names of every declared event, sorted."""
    return sorted(_declared)


def is_declared(name: object) -> TypeGuard[str]:
    """True for the name of a declared event (False for a newer run's, or for what is not a name)."""
    return isinstance(name, str) and name in _declared


def check_record(record: Mapping[str, Any]) -> None:
    """Check one event line against its declaration: envelope present, fields declared, none missing.

    Raises:
        TypeError: naming the event and the field that does not match.
    """
    name = record.get("event")
    declaration = get_event_type(name)
    for key in ENVELOPE:
        if key not in record:
            raise TypeError(f"event '{name}': the line has no '{key}' (every event carries {', '.join(ENVELOPE)})")
    declared = _payload_fields(declaration)
    for key in record:
        if key not in ENVELOPE and key not in declared:
            raise TypeError(f"event '{name}': field '{key}' is not declared; its fields are "
                            f"{', '.join(declared) or 'none'} ({declaration.__qualname__} in engine.core.events)")
    for key, field in declared.items():
        if _is_required(field) and key not in record:
            raise TypeError(f"event '{name}': missing field '{key}'")


def parse_event(record: Mapping[str, Any]) -> Event | None:
    """The typed view of an event object; None when it is undeclared or lacks a required field.

    Fields the declaration does not name (a newer version's) are left out.
    """
    name = record.get("event")
    if not is_declared(name):
        return None
    declaration = _declared[name]
    values = {field.name: record[field.name] for field in dataclasses.fields(declaration) if field.name in record}
    if any(_is_required(field) and field.name not in values for field in dataclasses.fields(declaration)):
        return None
    return declaration(**values)


def _payload_fields(declaration: type[Event]) -> dict[str, dataclasses.Field]:
    return {field.name: field for field in dataclasses.fields(declaration) if field.name not in ENVELOPE}


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


# --- training runs: train, lr-find and sanity folders ------------------------------------------------------


@register_event
@dataclass(frozen=True, kw_only=True)
class DatasetScanned(Event):
    """The dataset was scanned and split, before any model is built."""

    event: ClassVar[str] = "dataset_scanned"
    root: str  # the dataset folder or CSV
    classes: list[str]
    counts: dict[str, int]  # images per split
    problems: int  # files the health scan flagged
    excluded: int  # files left out by the project's exclusions


@register_event
@dataclass(frozen=True, kw_only=True)
class FeaturesProgressed(Event):
    """Feature extraction of a split got further."""

    event: ClassVar[str] = "features_progressed"
    split: str
    done: int  # images done
    total: int


@register_event
@dataclass(frozen=True, kw_only=True)
class FeaturesExtracted(Event):
    """The backbone's features of a split are ready (computed now or read from the cache)."""

    event: ClassVar[str] = "features_extracted"
    split: str
    computed: int
    reused: int
    failed: list[list[str]]  # [path, reason] of each image that did not decode
    seconds: float
    views: int  # augmented views per image (1: the evaluation view only)


@register_event
@dataclass(frozen=True, kw_only=True)
class ImageSkipped(Event):
    """An image failed to decode and is left out of the run (reported once per file)."""

    event: ClassVar[str] = "image_skipped"
    split: str
    path: str
    reason: str


@register_event
@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    """Training began (or resumed): what trains, on what, and how long."""

    event: ClassVar[str] = "run_started"
    config: dict[str, Any]  # RunConfig.to_dict()
    classes: list[str]
    backbone: str
    mode: str  # the config's model.mode
    stage: str  # feature_extraction or fine_tune: what this part of the run trains
    weights_source: str
    device: str
    data_settings: dict[str, Any]
    trainable_parameters: int
    train_images: int
    val_images: int
    batches_per_epoch: int
    last_epoch: int
    resumed_from: str | None  # the checkpoint resumed, if any
    # A distributed run adds its processes and the batch they make together.
    world_size: int | None = None
    backend: str | None = None
    effective_batch_size: int | None = None
    peak_learning_rate: float | None = None
    reference_batch_size: int | None = None
    batch_scale: str | None = None
    device_reason: str | None = None  # why this device, e.g. "CPU: no CUDA or MPS device found"
    batch_size: int | None = None  # images per forward pass, after optim.batch_size auto is resolved
    accumulate_steps: int | None = None  # forward passes whose gradients add up before each step


@register_event
@dataclass(frozen=True, kw_only=True)
class StageStarted(Event):
    """A stage began: the fine-tuning stage of a two_stage run, or a stage of a search.

    A training stage carries the fields of ``run_started``; a search stage its ``space``
    and, for the fine stage, ``notes`` and ``top_trials``. Only ``stage`` is in both,
    so the others are optional here (the two share the name from before this module).
    """

    event: ClassVar[str] = "stage_started"
    stage: str  # feature_extraction or fine_tune; coarse or fine for a search
    space: list[dict[str, Any]] | None = None  # search: the stage's parameters
    notes: list[str] | None = None  # search, fine stage: ranges that reached an edge
    top_trials: list[int] | None = None  # search, fine stage: the trials the ranges narrow around
    config: dict[str, Any] | None = None
    classes: list[str] | None = None
    backbone: str | None = None
    mode: str | None = None
    weights_source: str | None = None
    device: str | None = None
    data_settings: dict[str, Any] | None = None
    trainable_parameters: int | None = None
    train_images: int | None = None
    val_images: int | None = None
    batches_per_epoch: int | None = None
    last_epoch: int | None = None
    resumed_from: str | None = None
    world_size: int | None = None
    backend: str | None = None
    effective_batch_size: int | None = None
    peak_learning_rate: float | None = None
    reference_batch_size: int | None = None
    batch_scale: str | None = None
    device_reason: str | None = None
    batch_size: int | None = None
    accumulate_steps: int | None = None


@register_event
@dataclass(frozen=True, kw_only=True)
class EpochStarted(Event):
    """An epoch began."""

    event: ClassVar[str] = "epoch_started"
    num_epochs: int  # the last epoch of this stage
    batches: int  # batches in the epoch


@register_event
@dataclass(frozen=True, kw_only=True)
class BatchFinished(Event):
    """Training progress within an epoch (every tenth of it, and its last batch)."""

    event: ClassVar[str] = "batch_finished"
    batch: int  # batches of the epoch done
    batches: int
    train_loss: float  # mean since the last batch_finished
    learning_rate: float  # of the first parameter group


@register_event
@dataclass(frozen=True, kw_only=True)
class EpochFinished(Event):
    """An epoch ended; its metrics are its row of ``metrics.csv``."""

    event: ClassVar[str] = "epoch_finished"
    metrics: dict[str, Any]


@register_event
@dataclass(frozen=True, kw_only=True)
class CheckpointSaved(Event):
    """A checkpoint was written."""

    event: ClassVar[str] = "checkpoint_saved"
    name: str  # best, last or ema
    path: str
    metric: str  # what ``value`` measures
    value: float | None


@register_event
@dataclass(frozen=True, kw_only=True)
class BatchSizeChanged(Event):
    """The device ran out of memory, so each batch now goes through the model in smaller pieces.

    The gradients of the pieces add up before the step, so the effective batch and the
    learning rate stay the same; only memory use and speed change.
    """

    event: ClassVar[str] = "batch_size_changed"
    micro_batch_size: int  # images per forward pass from now on
    previous_micro_batch_size: int
    batch_size: int  # images per loaded batch (optim.batch_size), unchanged
    effective_batch_size: int  # images per optimizer step, unchanged
    reason: str  # e.g. "CUDA out of memory"
    message: str  # the plain-language line for logs and the doctor panel


@register_event
@dataclass(frozen=True, kw_only=True)
class StagesUnfrozen(Event):
    """Gradual unfreezing let more backbone stages train."""

    event: ClassVar[str] = "stages_unfrozen"
    trainable_stages: int
    trainable_parameters: int


@register_event
@dataclass(frozen=True, kw_only=True)
class DiagnosisRaised(Event):
    """A doctor check saw a failure pattern (``engine.training.doctor.Diagnosis.to_dict``)."""

    event: ClassVar[str] = "diagnosis_raised"
    check: str
    severity: str  # info, warning or error
    title: str
    message: str
    evidence: dict[str, Any]
    fix: dict[str, Any]  # dotted config changes


@register_event
@dataclass(frozen=True, kw_only=True)
class InitialLossMeasured(Event):
    """The doctor measured the loss before the first step, against chance's ln(C)."""

    event: ClassVar[str] = "initial_loss_measured"
    loss: float | str  # the strings "nan", "inf", "-inf" stand for those values
    expected: float
    num_classes: int
    output_classes: int  # width of the head's output


@register_event
@dataclass(frozen=True, kw_only=True)
class UpdateRatioMeasured(Event):
    """The doctor measured update/weight ratios per parameter group, for the GUI to plot."""

    event: ClassVar[str] = "update_ratio_measured"
    ratios: dict[str, float | str]
    learning_rates: dict[str, float | None]


@register_event
@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    """The run trained to its last epoch, or stopped early for lack of progress."""

    event: ClassVar[str] = "run_finished"
    best_checkpoint: str | None
    best_value: float | None
    best_epoch: int | None
    metric: str  # what best_value measures
    stopped_early: bool
    message: str | None


@register_event
@dataclass(frozen=True, kw_only=True)
class RunCancelled(Event):
    """The run (or lr-find, or sanity check) stopped before its end: a stop request, divergence, pruning."""

    event: ClassVar[str] = "run_cancelled"
    reason: str  # stopped, diverged, pruned...
    message: str | None
    checkpoint: str | None = None  # training: the last checkpoint, None when stopped before any


@register_event
@dataclass(frozen=True, kw_only=True)
class RunRestarted(Event):
    """A resumed run had no checkpoint to go on from, so it starts again from its own config in its folder."""

    event: ClassVar[str] = "run_restarted"
    message: str  # why, in a sentence


@register_event
@dataclass(frozen=True, kw_only=True)
class RunFailed(Event):
    """The run (or lr-find, or sanity check) failed; always its last event."""

    event: ClassVar[str] = "run_failed"
    error_type: str
    message: str
    traceback: str


@register_event
@dataclass(frozen=True, kw_only=True)
class LrFindStarted(Event):
    """The learning-rate range test began."""

    event: ClassVar[str] = "lr_find_started"
    start_lr: float
    end_lr: float
    num_steps: int
    classes: list[str]
    backbone: str
    mode: str
    stage: str  # the stage swept
    device: str
    train_images: int
    batches_per_epoch: int


@register_event
@dataclass(frozen=True, kw_only=True)
class LrFindStep(Event):
    """One step of the range test."""

    event: ClassVar[str] = "lr_find_step"
    learning_rate: float
    loss: float
    smoothed_loss: float


@register_event
@dataclass(frozen=True, kw_only=True)
class LrFindFinished(Event):
    """The range test ended, with its suggestion."""

    event: ClassVar[str] = "lr_find_finished"
    suggestion: float | None
    reason: str  # why this suggestion, or why none
    min_loss_rate: float | None
    learning_rate_setting: float | None  # the optim.learning_rate that gives the suggestion
    ended: str  # how the sweep ended
    csv: str
    plot: str


@register_event
@dataclass(frozen=True, kw_only=True)
class SanityStarted(Event):
    """The sanity check began to memorise a small sample."""

    event: ClassVar[str] = "sanity_started"
    num_images: int
    per_class: dict[str, int]
    max_steps: int
    target_loss: float
    learning_rate: float
    backbone: str
    mode: str
    device: str
    changes: dict[str, Any]  # what the check changed in the config


@register_event
@dataclass(frozen=True, kw_only=True)
class SanityProgressed(Event):
    """The sanity check measured the sample again."""

    event: ClassVar[str] = "sanity_progressed"
    train_accuracy: float
    loss: float | None


@register_event
@dataclass(frozen=True, kw_only=True)
class SanityFinished(Event):
    """The sanity check ended: passed or not, and why."""

    event: ClassVar[str] = "sanity_finished"
    passed: bool
    train_accuracy: float
    steps: int
    final_loss: float | None
    initial_loss: float | None
    num_images: int
    message: str
    likely_causes: list[str]


# --- searches: the search folder's own events.jsonl (each trial is a training run folder) ---------------------


@register_event
@dataclass(frozen=True, kw_only=True)
class SearchStarted(Event):
    """A search began or resumed."""

    event: ClassVar[str] = "search_started"
    study: str
    storage: str
    folder: str
    space: list[dict[str, Any]]  # the coarse space
    metric: str
    direction: str  # minimize or maximize
    jobs: int
    resumed: bool
    stages: dict[str, dict[str, int]]  # coarse and fine: trials, epochs (and the fine stage's top_k)


@register_event
@dataclass(frozen=True, kw_only=True)
class TrialStarted(Event):
    """A search trial began training."""

    event: ClassVar[str] = "trial_started"
    number: int
    stage: str
    params: dict[str, Any]  # the drawn values, by dotted config path
    run_dir: str


@register_event
@dataclass(frozen=True, kw_only=True)
class TrialFinished(Event):
    """A search trial ended."""

    event: ClassVar[str] = "trial_finished"
    number: int
    stage: str
    state: str  # complete, pruned or failed, as the study records it
    outcome: str  # the state, or interrupted (the trial runs again on resume)
    value: float | None
    reason: str | None
    seconds: float
    params: dict[str, Any]
    run_dir: str


@register_event
@dataclass(frozen=True, kw_only=True)
class SearchFinished(Event):
    """A search ended and wrote its report."""

    event: ClassVar[str] = "search_finished"
    state: str  # finished or stopped
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any] | None
    best_config_path: str | None
    report: str  # the summary file
    files: list[str]
    trials: dict[str, int]  # trials per state


@register_event
@dataclass(frozen=True, kw_only=True)
class SearchFailed(Event):
    """A search failed; its last event."""

    event: ClassVar[str] = "search_failed"
    error_type: str
    message: str
