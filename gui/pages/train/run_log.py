"""Run events in words: a sentence per important event, the progress line with its ETA, and the log view.

``describe_event`` turns an event into one sentence (or None for events that only feed
the curves); ``describe_device`` says where a run trains and why; ``RunProgress`` follows
the events to a status line and an ETA; ``RunLog`` shows the sentences, coloured by how
much they matter, between the child's own log lines.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any

from PySide6.QtGui import QFontDatabase, QPalette, QResizeEvent
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from engine.core.events import (
    BatchFinished,
    BatchSizeChanged,
    CheckpointSaved,
    DatasetScanned,
    DiagnosisRaised,
    EpochFinished,
    FeaturesExtracted,
    FeaturesProgressed,
    ImageSkipped,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    StageStarted,
    StagesUnfrozen,
)
from gui.style import ok_color, severity_color

MAX_LINES = 5000  # older lines scroll away; the run folder keeps everything


def describe_event(event: dict[str, Any]) -> tuple[str, str] | None:
    """One readable line for an event, and its tone (``info``, ``ok``, ``warning``, ``error``).

    Returns None for events that are only progress or plot data (batches, feature progress).
    """
    kind = event.get("event")
    if kind == DatasetScanned.event:
        counts = event.get("counts") or {}
        text = (f"Dataset: {len(event.get('classes') or [])} classes; {counts.get('train', 0)} training and "
                f"{counts.get('val', 0)} validation images")
        if event.get("excluded"):
            text += f"; {event['excluded']} files left out (see the Data page)"
        return text, "info"
    if kind == FeaturesExtracted.event:
        return (f"Features of the {event.get('split')} images: {event.get('computed', 0)} computed, "
                f"{event.get('reused', 0)} reused from the cache ({_number(event.get('seconds'))} s)"), "info"
    if kind == ImageSkipped.event:
        path = str(event.get("path"))
        reason = str(event.get("reason")).removeprefix(f"{path}: ")
        return f"Left out of the run ({event.get('split')} image, reported once): {path}: {reason}", "warning"
    if kind in (RunStarted.event, StageStarted.event):
        what = "Run started" if kind == RunStarted.event else f"Stage {event.get('stage')} started"
        resumed = f", resumed from {event['resumed_from']}" if event.get("resumed_from") else ""
        return (f"{what} on {event.get('device')}: {event.get('backbone')}, {event.get('stage')}, "
                f"{event.get('trainable_parameters', 0):,} trainable parameters, "
                f"{event.get('batches_per_epoch')} batches per epoch{resumed}"), "info"
    if kind == BatchSizeChanged.event:
        return describe_batch_change(event), "warning"
    if kind == EpochFinished.event:
        return _epoch_text(event.get("metrics") or {}, event.get("epoch")), "info"
    if kind == CheckpointSaved.event:
        if event.get("name") == "last":
            return None  # saved after every epoch: routine; a stop's "last" is named by run_cancelled
        value = _metric_text(event.get("metric"), event.get("value"))
        return f"Checkpoint '{event.get('name')}' saved (epoch {event.get('epoch')}{value})", "info"
    if kind == StagesUnfrozen.event:
        return (f"Unfrozen: {event.get('trainable_stages')} backbone stages now train "
                f"({event.get('trainable_parameters', 0):,} parameters)"), "info"
    if kind == DiagnosisRaised.event:
        # The doctor panel shows the whole diagnosis; the log keeps when it came.
        return f"Doctor: {event.get('title')} (see the training doctor)", str(event.get("severity", "info"))
    if kind == RunFinished.event:
        best = _metric_text(event.get("metric"), event.get("best_value"), separator=": best ")
        epoch = f" at epoch {event['best_epoch']}" if event.get("best_epoch") else ""
        early = " (stopped early: no better epoch for a while)" if event.get("stopped_early") else ""
        return f"Run finished{best}{epoch}{early}", "ok"
    if kind == RunCancelled.event:
        checkpoint = f" Last checkpoint: {event['checkpoint']}" if event.get("checkpoint") else ""
        if event.get("reason") == "stopped":
            return f"Run stopped ({event.get('message')}).{checkpoint}", "info"
        return f"Run stopped, {event.get('reason')}: {event.get('message')}{checkpoint}", "warning"
    if kind == RunFailed.event:
        return f"Run failed: {event.get('error_type')}: {event.get('message')}", "error"
    return None


def describe_device(event: dict[str, Any], *, micro_batch_size: int | None = None) -> str:
    """Where a run trains, why, and how many images go through the model at once.

    Args:
        event: a ``run_started`` or ``stage_started`` event (``device``, ``device_reason``,
            ``batch_size``, ``accumulate_steps``; runs of older versions lack the last three).
        micro_batch_size: images per forward pass since a ``batch_size_changed``, if any.
    """
    text = f"Device: {event.get('device') or 'unknown'}"
    if event.get("device_reason"):
        text += f" — {event['device_reason']}"
    batch, accumulate = event.get("batch_size"), event.get("accumulate_steps")
    if isinstance(batch, int):
        text += f". Batches of {batch} images"
        if isinstance(accumulate, int) and accumulate > 1:
            text += f", {accumulate} per optimizer step ({batch * accumulate} images)"
        if micro_batch_size is not None and micro_batch_size < batch:
            text += f", through the model {micro_batch_size} at a time to fit in memory"
    return text


def describe_batch_change(event: dict[str, Any]) -> str:
    """A ``batch_size_changed`` event in words: the run's own message, or one made from the numbers."""
    if event.get("message"):
        return str(event["message"])
    return (f"{event.get('reason') or 'Out of memory'}: each batch of {event.get('batch_size')} images now goes"
            f" through the model {event.get('micro_batch_size')} at a time (was"
            f" {event.get('previous_micro_batch_size')}); a step still averages"
            f" {event.get('effective_batch_size')} images, so only speed and memory change")


class RunProgress:
    """Turns a run's events into a progress fraction, a status line and an ETA.

    The ETA comes from the child's own event times between ``batch_finished`` events,
    so validation and checkpointing time is counted once an epoch has passed.
    """

    def __init__(self) -> None:
        self.done, self.total = 0, 0  # 0 of 0: busy, length unknown
        self.text = "Starting the training process…"
        self._num_epochs = 0
        self._first: tuple[float, int] | None = None  # (time, position) of the first batch seen
        self._last_time = 0.0

    def add_event(self, event: dict[str, Any]) -> None:
        """Update from one event of the run."""
        kind = event.get("event")
        if kind == DatasetScanned.event:
            self.text = "Preparing the data…"
        elif kind == FeaturesProgressed.event:
            self.done, self.total = int(event.get("done", 0)), int(event.get("total", 0))
            self.text = f"Extracting features of the {event.get('split')} images {self.done}/{self.total}"
        elif kind == FeaturesExtracted.event:
            self.done, self.total = 0, 0
            self.text = "Building the model…"
        elif kind == RunStarted.event:
            optim = (event.get("config") or {}).get("optim") or {}
            self._num_epochs = int(optim.get("epochs") or event.get("last_epoch") or 0)
            self.text = "Training…"
        elif kind == BatchFinished.event:
            self._on_batch(event)
        elif kind == EpochFinished.event and self.total:
            self.text = f"Epoch {event.get('epoch')}/{self._num_epochs}: validated{self._eta_suffix()}"

    def _on_batch(self, event: dict[str, Any]) -> None:
        epoch, batch, batches = int(event["epoch"]), int(event["batch"]), max(int(event["batches"]), 1)
        num_epochs = max(self._num_epochs, epoch)
        self.done, self.total = (epoch - 1) * batches + batch, num_epochs * batches
        now = float(event.get("time") or 0.0)
        if self._first is None:
            self._first = (now, self.done)
        self._last_time = now
        self.text = f"Epoch {epoch}/{num_epochs}, batch {batch}/{batches}{self._eta_suffix()}"

    def _eta_suffix(self) -> str:
        if self._first is None or self.done <= self._first[1]:
            return ""
        seconds_per_batch = (self._last_time - self._first[0]) / (self.done - self._first[1])
        return f", ETA {format_duration(seconds_per_batch * (self.total - self.done))}"


def format_duration(seconds: float) -> str:
    """``0:42``, ``12:05`` or ``1:02:03``."""
    minutes, secs = divmod(max(int(round(seconds)), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunLog(QPlainTextEdit):
    """Read-only log of a run: event sentences in the palette's text colours, stderr lines muted."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setPlaceholderText("The log of the run appears here: what it did, and what the training process printed.")
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))

    def add_event(self, event: dict[str, Any]) -> None:
        """Append the event's sentence, if it has one."""
        described = describe_event(event)
        if described is not None:
            self.add_line(described[0], described[1], when=event.get("time"))

    def add_line(self, text: str, tone: str = "info", *, when: float | None = None) -> None:
        """Append a sentence, stamped with the time (epoch seconds) it happened, now by default."""
        stamp = time.strftime("%H:%M:%S", time.localtime(when if isinstance(when, (int, float)) else None))
        palette = self.palette()
        if tone == "ok":
            color = ok_color(palette).name()
        elif tone in ("warning", "error"):
            color = severity_color(tone, palette).name()
        else:
            color = palette.color(QPalette.ColorRole.Text).name()
        weight = "bold" if tone != "info" else "normal"
        self._append(f'<span style="color:{color}; font-weight:{weight}">{stamp}  {html.escape(text)}</span>')

    def add_output(self, line: str) -> None:
        """Append a line the training process printed on stderr."""
        color = self.palette().color(QPalette.ColorRole.PlaceholderText).name()
        self._append(f'<span style="color:{color}">{html.escape(line)}</span>')

    def text(self) -> str:
        """Everything in the log, as plain text."""
        return self.toPlainText()

    def resizeEvent(self, event: QResizeEvent) -> None:
        # A resize keeps the first visible line; a reader following the end should keep the end.
        following = self._at_end()
        super().resizeEvent(event)
        if following:
            self._scroll_to_end()

    def _append(self, markup: str) -> None:
        # Follow the end while the reader is there; leave them alone once they scroll up.
        following = self._at_end()
        self.appendHtml(markup)
        if following:
            self._scroll_to_end()

    def _at_end(self) -> bool:
        scroll_bar = self.verticalScrollBar()
        return scroll_bar.value() >= scroll_bar.maximum() - 1

    def _scroll_to_end(self) -> None:
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())


def _epoch_text(metrics: dict[str, Any], epoch: Any) -> str:
    parts = [f"Epoch {metrics.get('epoch', epoch)}:"]
    labels = (("train_loss", "train loss"), ("val_loss", "val loss"), ("val_top1", "val accuracy"),
              ("ema_val_top1", "EMA val accuracy"))
    for key, label in labels:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{label} {value:.1%}," if key.endswith("top1") else f"{label} {value:.4g},")
    skipped = sum(value for key in ("train_skipped", "val_skipped")
                  if isinstance(value := metrics.get(key), int))
    if skipped:
        parts.append(f"{skipped} unreadable image{'s' if skipped != 1 else ''} left out,")
    seconds = metrics.get("seconds")
    if isinstance(seconds, (int, float)):
        parts.append(f"{seconds:.1f} s" if seconds >= 0.1 else "under 0.1 s")
    return " ".join(parts).rstrip(",")


def _metric_text(metric: Any, value: Any, *, separator: str = ", ") -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    if metric == "val_loss":
        return f"{separator}val loss {-value:.4g}"  # scores are higher-is-better: minus the loss
    label = "val accuracy" if metric == "val_top1" else str(metric)
    return f"{separator}{label} {value:.1%}" if metric == "val_top1" else f"{separator}{label} {value:.4g}"


def _number(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "?"
