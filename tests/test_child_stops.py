"""A stop signal (SIGTERM, SIGINT, SIGHUP) in the child commands other than train: one clean stop each.

``evaluate`` and ``export`` stop where the signal comes, say so in one line on stderr and exit
with ``EXIT_FAILED``, leaving no half-written output; ``lr-find`` and a search's trials stop at
the next batch, as training does. Most signals are raised in this process, at a chosen point
of the work (``signal.raise_signal``); one search is stopped from outside, through its process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_photos import copy_demo

import main
from cli.parsing import EXIT_FAILED, EXIT_OK
from engine.core.config import RunConfig
from engine.core.stop_signals import STOP_SIGNALS, Stopped, stop_received, stops_caught, stops_deferred, stops_raised
from engine.search.folders import searches_dir
from engine.search.run import run_search
from engine.training.callback import CancelFit
from engine.training.callbacks import StopWatcher
from engine.training.runfolder import RunFolder, read_events
from engine.training.train import train

ROOT = Path(__file__).resolve().parents[1]
# A small model from random weights, small inputs, decoding in the process: each stop is the point, not the model.
SMALL = {"data.num_workers": 0, "data.input_size": 48, "model.backbone": "mobilenetv3_small_050",
         "model.weights": "none"}


@pytest.fixture(autouse=True)
def handlers_back() -> Iterator[Callable[[], None]]:
    """Puts this process's stop-signal handlers back: after a stop it ignores SIGTERM and SIGHUP, as it should end."""
    saved = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def put_back() -> None:
        for number, handler in saved.items():
            signal.signal(number, handler)

    yield put_back
    put_back()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch run of a small random-weight model on 3 demo classes x 6 photos: its data and best checkpoint."""
    root = tmp_path_factory.mktemp("stops")
    data = copy_demo(root / "data", classes=3, per_class=6)
    config = RunConfig().with_changes(**{"data.path": str(data), "optim.epochs": 1, **SMALL})
    checkpoint = train(config, root / "run").best_checkpoint
    assert checkpoint is not None
    return data, checkpoint


def signal_on_call(module: Any, name: str, signal_number: int, call: int = 1) -> Callable[..., Any]:
    """Replace ``module.name`` by a wrapper that raises the signal in this process on its ``call``-th call."""
    original = getattr(module, name)
    calls = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal_number)
        return original(*args, **kwargs)

    return wrapper


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``folder`` (hidden ones too), with its size and change time."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


# --- the mechanism -------------------------------------------------------------------------------------------


def test_the_first_signal_raises_and_later_ones_cannot_cut_the_clean_up_short() -> None:
    cleaned = []
    with pytest.raises(Stopped, match="^SIGTERM received$"), stops_raised():
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            signal.raise_signal(signal.SIGINT)  # ignored: the stop is under way
            cleaned.append(True)
    assert cleaned
    signal.raise_signal(signal.SIGTERM)  # the process is ending: a late signal does not kill it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl+C again: KeyboardInterrupt


def test_a_signal_during_a_deferred_step_raises_once_the_step_is_done() -> None:
    done = []
    with pytest.raises(Stopped, match="SIGHUP"), stops_raised():
        with stops_deferred():
            signal.raise_signal(signal.SIGHUP)
            done.append("the step")
        done.append("what follows")
    assert done == ["the step"]


def test_inside_a_loop_the_signal_is_its_stop_and_a_later_one_leaves_its_clean_up_alone(tmp_path: Path) -> None:
    watcher = StopWatcher(RunFolder(tmp_path))  # lr-find: the sweep's StopWatcher inside the command's scope
    with stops_raised():
        with watcher.installed():
            signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # while run_cancelled is written
    assert watcher.message() == "SIGTERM received"


def test_a_run_that_starts_just_after_a_signal_stops_at_its_first_check(tmp_path: Path) -> None:
    with stops_caught():  # a search, between its check for a stop and the next trial
        signal.raise_signal(signal.SIGHUP)
        watcher = StopWatcher(RunFolder(tmp_path))
        with watcher.installed(), pytest.raises(CancelFit, match="SIGHUP received"):
            watcher.check()


def test_a_signal_ignored_from_the_start_stays_ignored() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts a process
    with stops_raised():
        signal.raise_signal(signal.SIGHUP)
        assert stop_received() is None


# --- evaluate and export -------------------------------------------------------------------------------------


def test_evaluate_stopped_while_predicting_writes_nothing_and_says_so_in_one_line(
    model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import engine.data.loading

    data, checkpoint = model
    monkeypatch.setattr(engine.data.loading, "load_rgb",
                        signal_on_call(engine.data.loading, "load_rgb", signal.SIGTERM, call=3))
    before = snapshot(checkpoint.parent)
    out = tmp_path / "reports" / "val"
    code = main.main(["evaluate", str(checkpoint), str(data), "--out", str(out), "--fit-temperature"])
    assert (code, capsys.readouterr().err) == (EXIT_FAILED, "stopped: SIGTERM received\n")
    assert not out.exists() and snapshot(checkpoint.parent) == before


def test_evaluate_stopped_while_writing_finishes_the_report_and_while_drawing_keeps_it(
    model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    handlers_back: Callable[[], None],
) -> None:
    import engine.evaluation.report as report

    data, checkpoint = model
    out = tmp_path / "report"
    arguments = ["evaluate", str(checkpoint), str(data), "--split", "all", "--out", str(out)]
    with monkeypatch.context() as patched:
        patched.setattr(report, "atomic_write_bytes", signal_on_call(report, "atomic_write_bytes", signal.SIGTERM))
        assert main.main(arguments) == EXIT_FAILED
    assert sorted(path.name for path in out.iterdir()) == sorted(report.REPORT_FILES)
    written = snapshot(out)
    handlers_back()

    monkeypatch.setattr(report, "draw_per_class", signal_on_call(report, "draw_per_class", signal.SIGHUP))
    assert main.main(arguments) == EXIT_FAILED
    assert snapshot(out) == written
    assert capsys.readouterr().err.splitlines() == ["stopped: SIGTERM received", "stopped: SIGHUP received"]


def test_export_stopped_while_publishing_completes_it_and_while_checking_keeps_it(
    model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    handlers_back: Callable[[], None],
) -> None:
    import engine.export.exporter as exporter

    _, checkpoint = model
    out = tmp_path / "exports"
    arguments = ["export", str(checkpoint), str(out), "--format", "torchscript"]
    with monkeypatch.context() as patched:
        patched.setattr(exporter, "_publish", signal_on_call(exporter, "_publish", signal.SIGINT))
        assert main.main(arguments) == EXIT_FAILED
    published = snapshot(out)
    assert sorted(published) == ["torchscript", "torchscript/metadata.json", "torchscript/model.torchscript.pt"]
    handlers_back()

    monkeypatch.setattr(exporter, "parity_difference", signal_on_call(exporter, "parity_difference", signal.SIGTERM))
    assert main.main(arguments) == EXIT_FAILED
    assert snapshot(out) == published  # no staging folder left, the older export as it was
    assert capsys.readouterr().err.splitlines() == ["stopped: SIGINT received", "stopped: SIGTERM received"]


# --- lr-find and search: a loop stops at its next batch ---------------------------------------------------------


class SignalAtStep:
    """An ``--events-only`` stdout that raises a signal in this process once it has seen a given sweep step."""

    def __init__(self, signal_number: int, step: int) -> None:
        self.signal_number, self.step = signal_number, step
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        event = json.loads(text)
        if event["event"] == "lr_find_step" and event["step"] == self.step:
            signal.raise_signal(self.signal_number)
        return len(text)

    def flush(self) -> None:
        pass


def test_lr_find_stopped_by_a_signal_records_it_and_writes_no_curve_files(
    model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = model
    out = tmp_path / "lr"
    stdout = SignalAtStep(signal.SIGHUP, step=3)
    monkeypatch.setattr(sys, "stdout", stdout)
    code = main.main(["lr-find", str(data), "--out", str(out), "--steps", "20", "--events-only",
                      *[item for key, value in SMALL.items() for item in ("--set", f"{key}={value}")]])
    assert code == EXIT_OK
    last = read_events(out)[-1]
    assert (last["event"], last["reason"], last["message"], last["step"]) == ("run_cancelled", "stopped",
                                                                             "SIGHUP received", 3)
    assert RunFolder(out).read_status()["state"] == "cancelled"
    assert not [path.name for path in out.iterdir() if path.name.startswith("lr_find") or path.suffix == ".tmp"]


def test_a_search_stopped_by_a_signal_during_a_trial_ends_it_interrupted_and_reports(
    model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import engine.search.trial as trial

    data, _ = model
    monkeypatch.setattr(trial.TrialReporter, "before_epoch",
                        signal_on_call(trial.TrialReporter, "before_epoch", signal.SIGHUP))
    config = RunConfig().with_changes(**{**SMALL, "search.coarse_trials": 2, "search.coarse_epochs": 1,
                                         "search.fine_trials": 0})
    result = run_search(data, config, study="stopped")

    assert result.state == "stopped"
    (record,) = result.trials
    assert (record.state, record.reason) == ("failed", "interrupted: SIGHUP received") and record.run_dir
    assert RunFolder(record.run_dir).read_status()["state"] == "cancelled"
    events = read_events(result.folder / "events.jsonl")
    assert events[-1]["event"] == "search_finished" and events[-1]["state"] == "stopped"
    assert (result.folder / "report.txt").is_file()
    assert not [path for path in result.folder.rglob("*") if path.name.endswith(".tmp") or path.name == "STOP"]


@pytest.mark.slow  # a search in a child process, with its trial's training
def test_a_stop_signal_to_a_searchs_process_group_ends_it_cleanly(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=3, per_class=6)
    child = subprocess.Popen(
        [sys.executable, "main.py", "search", str(data), "--study", "group", "--trials", "2", "--events-only",
         *[item for key, value in {**SMALL, "data.num_workers": 1, "search.coarse_epochs": 1}.items()
           for item in ("--set", f"{key}={value}")]],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if json.loads(line)["event"] == "trial_started":
            os.killpg(child.pid, signal.SIGHUP)  # the search, its trial's DataLoader workers
            break
    rest, errors = child.communicate(timeout=120)
    assert child.returncode == EXIT_OK, errors
    assert "Traceback" not in errors and "killed by signal" not in errors, errors
    finished = json.loads(rest.strip().splitlines()[-1])
    assert (finished["event"], finished["state"], finished["trials"]["failed"]) == ("search_finished", "stopped", 1)
    trial_finished = [event for event in read_events(searches_dir(data) / "group" / "events.jsonl")
                      if event["event"] == "trial_finished"]
    assert [event["outcome"] for event in trial_finished] == ["interrupted"]
