"""TensorBoard event files in ``RUN_DIR/tensorboard/``, so that ``tensorboard --logdir PROJECT/runs`` compares runs.

Every numeric column of each epoch's row, each step's learning rate and training loss, the
doctor's update/weight ratios and diagnoses, and the config (as text and as hparams), all
against the optimizer step. TensorBoard is the optional ``logs`` extra: without it a run
trains as ever and says once that these logs are off.
"""

from __future__ import annotations

import json
import logging
import weakref
from pathlib import Path
from typing import Any

from engine.core.config import RunConfig, to_yaml
from engine.core.events import DiagnosisRaised, UpdateRatioMeasured
from engine.training.callback import EPOCH_METRICS, Callback, LoopState
from engine.training.callbacks.metrics import is_finite_number
from engine.training.runfolder import METRIC_COLUMNS, EventTail, RunFolder

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
"""The run folder's subfolder of event files; TensorBoard names the run ``<run folder>/tensorboard``."""

LOGS_OFF = "TensorBoard logs are off: install the logs extra (pip install tensorboard) to get them"

# Column prefixes of metrics.csv that name a split: ``val_loss`` is charted as ``loss/val``, beside ``loss/train``.
_SPLITS = ("train", "val", "ema_val")


def metric_tag(column: str) -> str:
    """The TensorBoard tag of a metrics row's column: ``val_loss`` -> ``loss/val``, ``seconds`` -> ``epoch/seconds``."""
    for split in _SPLITS:
        if column.startswith(f"{split}_"):
            return f"{column.removeprefix(f'{split}_')}/{split}"
    return "epoch" if column == "epoch" else f"epoch/{column}"


# The HParams dashboard shows, for each run, the last value of these tags: the run's final metrics.
_FINAL_METRICS = tuple(metric_tag(column) for column in METRIC_COLUMNS if column.endswith(("_loss", "_top1", "_top5")))


class TensorBoardWriter(Callback):
    """Writes a run's TensorBoard event files as it trains; one instance serves every stage of the run.

    Everything is logged against the optimizer step, epoch metrics at their epoch's last step: one
    axis, so that a resumed run can hide what a killed process logged past its checkpoint.
    Diagnoses and update/weight ratios are read back from the run's ``events.jsonl`` (those
    appended since this writer was made), so the doctor's checks need not know of TensorBoard.
    The files are flushed after every epoch and closed when the run ends, stopped or not (or, after
    a crash, when the process exits). Does nothing for a folder this process must not write (the
    other ranks of a distributed run).

    Args:
        run_folder: the run's folder.
        config: the run's settings, written as text and as hparams.
    """

    order = 55  # after the doctor (20) and the progress events (50), whose events of a step it reads back

    def __init__(self, run_folder: RunFolder, config: RunConfig) -> None:
        self.run_folder = run_folder
        self.config = config
        self.log_dir = run_folder.path / TENSORBOARD_DIR
        # A resumed run's earlier diagnoses are in its earlier event files already.
        self._events = EventTail(run_folder.events_path, _size(run_folder.events_path))
        self._off = not run_folder.writes
        self._writer: Any = None
        self._close: weakref.finalize | None = None
        self._session_end: Any = None
        self._opened = False
        self._logged_step = -1

    def before_fit(self, state: LoopState) -> None:
        if self._off or self._writer is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError:
            self._off = True
            log.warning(LOGS_OFF)  # once per run: the instance serves all its stages
            return
        # A resumed run goes on after its checkpoint's step; TensorBoard hides what a killed process logged
        # after that step. Only the process's first fit purges: a second stage follows straight on.
        purge_step = state.step + 1 if state.step and not self._opened else None
        self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        self._close = weakref.finalize(self, self._writer.close)  # a crash skips after_fit, not the exit
        if not self._opened:
            self._opened = True
            self._writer.add_text("config", f"```yaml\n{to_yaml(self.config, comments=False)}```", state.step)
            experiment, session_start, self._session_end = hparams(_flat_config(self.config),
                                                                   dict.fromkeys(_FINAL_METRICS, 0.0))
            self._writer.file_writer.add_summary(experiment, state.step)
            self._writer.file_writer.add_summary(session_start, state.step)
        self._read_events()

    def after_sync(self, state: LoopState) -> None:
        if self._writer is not None:
            self._write_steps(state)
            self._read_events()

    def after_epoch(self, state: LoopState) -> None:
        if self._writer is None:
            return
        for column, value in state.scratch.get(EPOCH_METRICS, {}).items():
            tag = metric_tag(column)
            if is_finite_number(value):
                self._writer.add_scalar(tag, value, state.step)
            elif isinstance(value, dict):  # per-class accuracies
                for name, number in value.items():
                    self._writer.add_scalar(f"{tag}/{name}", number, state.step)
        self._read_events()
        self._writer.flush()

    def after_fit(self, state: LoopState) -> None:
        if self._writer is None:
            return
        self._write_steps(state)  # a stop or a doctor's cancel at a sync point skips the after_sync after it
        self._read_events()
        ended = state.cancel_reason is not None or state.epoch >= self.config.optim.epochs
        if not ended:  # a two-stage run's head stage: the fine-tuning stage writes on
            self._writer.flush()
            return
        if state.cancel_reason in (None, "early_stop"):
            self._writer.file_writer.add_summary(self._session_end, state.step)  # the HParams status: success
        assert self._close is not None
        self._close()
        self._writer = None

    def _write_steps(self, state: LoopState) -> None:
        for entry in state.losses:
            if entry.step > self._logged_step:
                self._writer.add_scalar("step/learning_rate", entry.learning_rate, entry.step)
                self._writer.add_scalar("step/train_loss", entry.loss, entry.step)
                self._logged_step = entry.step

    def _read_events(self) -> None:
        for event in self._events.read_new():
            step = event.get("step") or 0
            if event["event"] == DiagnosisRaised.event:
                self._writer.add_text(f"doctor/{event['check']}", _diagnosis_text(event), step)
            elif event["event"] == UpdateRatioMeasured.event:
                for group, ratio in event["ratios"].items():
                    self._writer.add_scalar(f"update_ratio/{group}", float(ratio), step)  # "nan" and "inf" too


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _flat_config(config: RunConfig) -> dict[str, Any]:
    """The config as hparams: ``{"optim.learning_rate": 0.001, ...}``, lists as JSON, without unset values.

    The ``search`` section is left out: training ignores it.
    """
    flat: dict[str, Any] = {}

    def add(prefix: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                add(f"{prefix}{key}.", value)
            elif isinstance(value, list):
                flat[f"{prefix}{key}"] = json.dumps(value)
            elif value is not None:
                flat[f"{prefix}{key}"] = value

    add("", {key: value for key, value in config.to_dict().items() if key != "search"})
    return flat


def _diagnosis_text(event: dict[str, Any]) -> str:
    """A ``diagnosis_raised`` event as Markdown: severity and title, the message, the fix."""
    text = f"**{event['severity']}: {event['title']}**\n\n{event['message']}"
    if event.get("fix"):
        text += "\n\nFix: " + ", ".join(f"`{key}: {value}`" for key, value in event["fix"].items())
    return text

