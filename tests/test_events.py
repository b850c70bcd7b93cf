"""Typed events: every line real runs and a real search write matches its declaration; readers skip the unknown.

The runs are tiny (three demo classes, 64-pixel images, a small backbone without
pretrained weights), but between them they write most declared events.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from demo_photos import copy_demo
from imagefactory import truncate

from engine.core.config import RunConfig
from engine.core.errors import DatasetError
from engine.core.events import (
    EpochFinished,
    Event,
    ImageSkipped,
    TrialFinished,
    check_record,
    get_event_type,
    list_event_types,
    parse_event,
    register_event,
)
from engine.core.paths import CACHE_ENV_VAR
from engine.search.run import run_search
from engine.search.trial import SearchEvents
from engine.training.callback import Callback, CancelFit, LoopState
from engine.training.lr_finder import find_learning_rate
from engine.training.runfolder import EventTail, RunFolder, read_events
from engine.training.sanity import run_sanity_check
from engine.training.train import train

ROOT = Path(__file__).resolve().parents[1]


def small_config(data: Path, **changes: object) -> RunConfig:
    """A quick config: the events are the point, not what the model learns."""
    base = {"data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "optim.batch_size": 8,
            "model.backbone": "mobilenetv3_small_050", "model.weights": "none"}
    return RunConfig().with_changes(**{**base, **changes})


def checked_names(events_path: Path) -> list[str]:
    """Check every line of an ``events.jsonl`` against its declaration; returns the event names in order."""
    names = []
    for number, line in enumerate(events_path.read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)  # not read_events: it would skip an undeclared event instead of failing
        try:
            check_record(record)
        except TypeError as error:
            pytest.fail(f"{events_path}:{number}: {error}")
        assert record["schema"] == get_event_type(record["event"]).schema
        assert isinstance(parse_event(record), get_event_type(record["event"]))
        names.append(record["event"])
    return names


class DamageBeforeFineTuning(Callback):
    """Cuts a training image short once the head stage is done, so the fine-tuning stage cannot decode it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fits = 0

    def before_fit(self, state: LoopState) -> None:
        self.fits += 1
        if self.fits == 2:
            truncate(self.path, keep=0.4)


class CancelAtOnce(Callback):
    def before_fit(self, state: LoopState) -> None:
        raise CancelFit("stopped", "cancelled by the test")


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_demo(tmp_path_factory.mktemp("events") / "data", classes=3, per_class=8)


def test_every_line_of_real_runs_is_declared(three_classes: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A cache of its own: features another test cached would be reused, and their progress never reported.
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    data = copy_demo(tmp_path / "data", classes=3, per_class=6)  # a copy of its own: the run damages a file
    victim = sorted((data / sorted(path.name for path in data.iterdir())[0]).iterdir())[0]
    two_stage = small_config(data, **{
        "model.mode": "two_stage", "model.head_epochs": 1, "optim.epochs": 3, "model.trainable_stages": 0,
        "model.unfreeze_every": 1,
    })
    assert train(two_stage, tmp_path / "run", callbacks=[DamageBeforeFineTuning(victim)]).state == "finished"
    cancelled = train(small_config(three_classes), tmp_path / "cancelled", callbacks=[CancelAtOnce()])
    assert cancelled.state == "cancelled"
    with pytest.raises(DatasetError):
        train(small_config(tmp_path / "no-such-folder"), tmp_path / "failed")
    find_learning_rate(small_config(three_classes), tmp_path / "lr", num_steps=5)
    run_sanity_check(small_config(three_classes), num_images=6, max_steps=3, out_dir=tmp_path / "sanity")

    written = {name for folder in ("run", "cancelled", "failed", "lr", "sanity")
               for name in checked_names(tmp_path / folder / "events.jsonl")}
    assert written >= {
        "dataset_scanned", "features_progressed", "features_extracted", "image_skipped", "run_started",
        "stage_started", "epoch_started", "batch_finished", "epoch_finished", "checkpoint_saved", "stages_unfrozen",
        "initial_loss_measured", "run_finished", "run_cancelled", "run_failed",
        "lr_find_started", "lr_find_step", "lr_find_finished", "sanity_started", "sanity_progressed",
        "sanity_finished",
    }


def test_every_line_of_a_real_search_and_its_trials_is_declared(three_classes: Path) -> None:
    config = small_config(three_classes, **{
        "search.coarse_trials": 1, "search.coarse_epochs": 1, "search.fine_trials": 1, "search.fine_epochs": 1,
        "search.top_k": 1,
    })
    result = run_search(three_classes, config, study="events")
    assert result.state == "finished"
    names = checked_names(result.folder / "events.jsonl")
    assert names == ["search_started", "stage_started", "trial_started", "trial_finished", "stage_started",
                     "trial_started", "trial_finished", "search_finished"]
    for record in result.trials:
        assert checked_names(Path(record.run_dir) / "events.jsonl")[-1] == "run_finished"


def test_readers_skip_an_undeclared_event_and_keep_the_extra_fields_of_a_newer_version(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "run", RunConfig())
    folder.write_event(ImageSkipped.event, split="train", path=tmp_path / "a.png", reason="truncated")
    newer = {"schema": 2, "event": ImageSkipped.event, "time": 1.0, "epoch": None, "step": None,
             "split": "val", "path": "b.png", "reason": "gone", "retries": 3}
    foreign = [
        {"schema": 1, "event": "thumbnail_rendered", "time": 1.0, "epoch": None, "step": None, "size": 64},
        ["a", "list"], {"event": ["not", "a", "name"]}, {"no": "event"},
    ]
    with open(folder.events_path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in [foreign[0], newer, *foreign[1:]])
        handle.write("not json\n")

    records = EventTail(folder.events_path).read_new()
    assert [record["event"] for record in records] == [ImageSkipped.event, ImageSkipped.event]
    assert records[1] == newer  # the unknown field stays, for a reader that knows it
    assert parse_event(records[1]) == ImageSkipped(time=1.0, split="val", path="b.png", reason="gone")
    assert read_events(folder.path) == records
    assert parse_event(foreign[0]) is None and parse_event({"event": EpochFinished.event}) is None


def test_the_writers_refuse_an_undeclared_event_or_field_and_name_them(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "run", RunConfig())
    with pytest.raises(TypeError, match=r"^event 'epoch_finised' is not declared in engine.core.events; "
                                        r"did you mean 'epoch_finished'\?$"):
        folder.write_event("epoch_finised", epoch=1, metrics={})
    with pytest.raises(TypeError, match=r"^event 'epoch_finished': field 'loss' is not declared; its fields are "
                                        r"metrics \(EpochFinished in engine.core.events\)$"):
        folder.write_event(EpochFinished.event, epoch=1, metrics={}, loss=0.5)
    with pytest.raises(TypeError, match=r"^event 'epoch_finished': missing field 'metrics'$"):
        folder.write_event(EpochFinished.event, epoch=1)
    with pytest.raises(TypeError, match=r"^event 'epoch_finished': 'time' is part of every event's envelope"):
        folder.write_event(EpochFinished.event, metrics={}, time=0.0)
    with pytest.raises(TypeError, match=r"^event 'trial_finished': field 'message' is not declared"):
        SearchEvents(tmp_path / "events.jsonl").write(TrialFinished.event, message="out of memory")
    assert not folder.events_path.exists() and not (tmp_path / "events.jsonl").exists()


def test_a_name_is_declared_once() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Impostor(Event):
        event: ClassVar[str] = EpochFinished.event

    with pytest.raises(ValueError, match=r"^an event named 'epoch_finished' is already declared \(EpochFinished\)$"):
        register_event(Impostor)
    assert get_event_type(EpochFinished.event) is EpochFinished
    assert EpochFinished.event in list_event_types()


def test_the_declarations_load_without_torch_or_qt() -> None:
    code = "import sys, engine.core.events; print(sorted({'torch', 'PySide6'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
