"""A write that fails half-way leaves the previous file whole and no temporary file behind.

The failure is real: a child process lowers its file-size limit (``RLIMIT_FSIZE``, with
``SIGXFSZ`` ignored) below the size of the new content, so the kernel refuses the write
part-way with ``EFBIG``, as a full disk refuses it with ``ENOSPC``. The previous version of
every file was written beforehand, here, under no limit; the child then overwrites it
through the product's own code. This file is also that child (``python THIS_FILE LIMIT
SITES_JSON``), so the sites below are defined once.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.core.atomic import atomic_write_bytes
from engine.core.config import RunConfig, load_config, save_config
from engine.data.health_report import HealthReport, load_report
from engine.evaluation.evaluate import evaluate_probabilities
from engine.evaluation.report import REPORT_FILES, write_report
from engine.models.checkpoint import load_checkpoint, save_checkpoint
from engine.models.features import FeatureCache
from engine.search.trial import SearchEvents
from engine.training.runfolder import RunFolder, read_events

REPO = Path(__file__).resolve().parents[1]
# The largest file the failing child may write; each site's new content is at least twice as
# large, so its overwrite stops half-way or earlier (the previous files are not written there).
LIMIT = 16 * 1024
BIG = "x" * (3 * LIMIT)
FEATURE_SPACE = "tf_efficientnet_lite0/imagenet/224-bicubic"
FILE_SHA = "ab" * 32


@dataclass(frozen=True)
class Site:
    """One place the product replaces files.

    Attributes:
        write_old: writes the previous version into a folder.
        write_new: overwrites it with a version larger than ``LIMIT`` (run in the child).
        reads_old: reads the folder back through the product: True if it is the previous
            version (the bytes are compared besides).
    """

    write_old: Callable[[Path], object]
    write_new: Callable[[Path], object]
    reads_old: Callable[[Path], bool]


def _report(folder: Path, title: str) -> Path:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    evaluation = evaluate_probabilities(probabilities, [0, 1, 1, 0], ("bag", "shoe"),
                                        [f"photo-{index}.png" for index in range(4)], top_losses=0)
    return write_report(evaluation, folder, title=title)


def _reads_old_report(folder: Path) -> bool:
    return (sorted(path.name for path in folder.iterdir()) == sorted(REPORT_FILES)
            and json.loads((folder / "report.json").read_text())["title"] == "old")


def _health(classes: int) -> HealthReport:
    names = tuple(f"class-{index:05d}" for index in range(classes))
    return HealthReport(root=Path("/photos"), layout="class_folders", classes=names,
                        class_counts=dict.fromkeys(names, 10), records=(), problems=(), imbalance_ratio=1.0)


def _reads_old_checkpoint(folder: Path) -> bool:
    checkpoint = load_checkpoint(folder / "last.safetensors")
    return (checkpoint.metadata["epoch"] == 1 and checkpoint.model_state["weight"].tolist() == [0.0] * 4
            and json.loads((folder / "last.json").read_text())["epoch"] == 1)


SITES: dict[str, Site] = {
    "atomic_write_bytes": Site(
        lambda folder: atomic_write_bytes(folder / "data.bin", b"old\n" * 100),
        lambda folder: atomic_write_bytes(folder / "data.bin", b"new\n" * LIMIT),
        lambda folder: (folder / "data.bin").read_bytes() == b"old\n" * 100,
    ),
    "checkpoint": Site(
        lambda folder: save_checkpoint(folder / "last.safetensors", model_state={"weight": torch.zeros(4)},
                                       metadata={"epoch": 1}),
        lambda folder: save_checkpoint(folder / "last.safetensors", model_state={"weight": torch.ones(LIMIT)},
                                       metadata={"epoch": 2}),
        _reads_old_checkpoint,
    ),
    "config": Site(
        lambda folder: save_config(RunConfig(), folder / "config.yaml"),
        lambda folder: save_config(RunConfig().with_changes(**{"data.path": BIG}), folder / "config.yaml"),
        lambda folder: load_config(folder / "config.yaml") == RunConfig(),
    ),
    "feature_cache": Site(
        lambda folder: FeatureCache(FEATURE_SPACE, folder).put(FILE_SHA, 0, np.zeros(8, dtype=np.float32)),
        lambda folder: _feature_cache_new(folder),
        lambda folder: np.array_equal(FeatureCache(FEATURE_SPACE, folder).get(FILE_SHA, 0), np.zeros(8)),
    ),
    "evaluation_report": Site(
        lambda folder: _report(folder, "old"),
        lambda folder: _report(folder, BIG),
        _reads_old_report,
    ),
    "health_report": Site(
        lambda folder: _health(2).save(folder),
        lambda folder: _health(2000).save(folder),
        lambda folder: load_report(folder) == _health(2),
    ),
    "metrics": Site(
        lambda folder: RunFolder(folder).write_metrics([{"epoch": 1, "val_loss": 0.5}]),
        lambda folder: RunFolder(folder).write_metrics([{"epoch": epoch, "val_loss": 1 / epoch}
                                                        for epoch in range(1, 2000)]),
        lambda folder: [row["val_loss"] for row in RunFolder(folder).read_metrics()] == [0.5],
    ),
    "status": Site(
        lambda folder: RunFolder(folder).write_status("running", epoch=1),
        lambda folder: RunFolder(folder).write_status("failed", message=BIG),
        lambda folder: RunFolder(folder).read_status()["state"] == "running",
    ),
}


def _events_old(folder: Path) -> None:
    run = RunFolder(folder)
    run.write_event("epoch_started", epoch=1, num_epochs=1, batches=1)
    run.write_event("epoch_finished", epoch=1, metrics={})


def _events_new(folder: Path) -> None:
    RunFolder(folder).write_event("image_skipped", epoch=2, split="train", path="a.png", reason=BIG)


def _feature_cache_new(folder: Path) -> None:
    cache = FeatureCache(FEATURE_SPACE, folder)
    cache.put(FILE_SHA, 0, np.ones(LIMIT, dtype=np.float32))
    if not cache.writable:  # a cache does not raise: it turns itself off (one warning) and the run goes on
        raise OSError("the feature cache turned itself off: File too large")


def _events_after(folder: Path) -> None:
    # What the child's top-level handler does next, once there is room again.
    RunFolder(folder).write_event("run_failed", error_type="OSError", message="disk full", traceback="")


def _search_events_old(folder: Path) -> None:
    SearchEvents(folder / "events.jsonl").write("trial_started", number=0, stage="coarse", params={}, run_dir="t0")


def _search_events_new(folder: Path) -> None:
    SearchEvents(folder / "events.jsonl").write("search_failed", error_type="OSError", message=BIG)


def _search_events_after(folder: Path) -> None:
    # Another worker's next event (several processes append to a search's events, so none may cut the file back).
    SearchEvents(folder / "events.jsonl").write("trial_started", number=1, stage="coarse", params={}, run_dir="t1")


APPEND_ONLY = {"events": (_events_old, _events_new, _events_after),
               "search_events": (_search_events_old, _search_events_new, _search_events_after)}


def overwrite_in_child(folders: dict[str, Path]) -> dict[str, str]:
    """Run ``write_new`` of each site in a child limited to ``LIMIT`` bytes per file; the error each raised."""
    completed = subprocess.run(
        [sys.executable, __file__, str(LIMIT), json.dumps({name: str(path) for name, path in folders.items()})],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def _child(limit: int, folders: dict[str, str]) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: EFBIG, not a dead process
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    writers = {name: site.write_new for name, site in SITES.items()} | {
        name: new for name, (_, new, _) in APPEND_ONLY.items()}
    errors = {}
    for name, folder in folders.items():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            writers[name](Path(folder))
            errors[name] = "no error"
        except Exception as error:  # noqa: BLE001  (reported to the parent, which judges it)
            errors[name] = f"{type(error).__name__}: {error}"
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
        if name in APPEND_ONLY:
            APPEND_ONLY[name][2](Path(folder))
    print(json.dumps(errors))


def _contents(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def failed_overwrites(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every site's previous version, then one child that fails to overwrite each of them."""
    root = tmp_path_factory.mktemp("atomic")
    folders = {name: root / name for name in [*SITES, *APPEND_ONLY]}
    before = {}
    for name, folder in folders.items():
        folder.mkdir()
        (SITES[name].write_old if name in SITES else APPEND_ONLY[name][0])(folder)
        before[name] = _contents(folder)
        assert before[name], name
    errors = overwrite_in_child(folders)
    return {"folders": folders, "before": before, "errors": errors}


@pytest.mark.parametrize("name", list(SITES))
def test_a_write_that_fails_half_way_leaves_the_previous_file_and_no_temporary_file(
    failed_overwrites: dict, name: str
) -> None:
    error = failed_overwrites["errors"][name]
    # The write really failed in the middle (EFBIG: "File too large"), as a full disk makes it fail.
    assert "File too large" in error or "requested and" in error, error
    folder = failed_overwrites["folders"][name]
    after = _contents(folder)
    leftovers = [path for path in after if path not in failed_overwrites["before"][name]]
    assert not leftovers, f"{name}: left behind {leftovers}"
    assert after == failed_overwrites["before"][name], f"{name}: the previous file changed"
    assert SITES[name].reads_old(folder), f"{name}: the product does not read back the previous version"


def test_a_checkpoint_that_cannot_be_written_says_which_file(failed_overwrites: dict) -> None:
    path = failed_overwrites["folders"]["checkpoint"] / "last.safetensors"
    assert failed_overwrites["errors"]["checkpoint"].startswith(f"CheckpointError: {path}: cannot write the "
                                                                "checkpoint (")


def test_an_event_append_that_fails_half_way_leaves_no_fragment_for_the_next_line(failed_overwrites: dict) -> None:
    assert failed_overwrites["errors"]["events"] == "OSError: [Errno 27] File too large"
    events_path = failed_overwrites["folders"]["events"] / "events.jsonl"
    old = failed_overwrites["before"]["events"]["events.jsonl"]
    data = events_path.read_bytes()
    # The old lines, untouched, then the next event as one whole line: nothing of the failed one.
    assert data.startswith(old) and data.endswith(b"\n") and data.count(b"\n") == old.count(b"\n") + 1
    assert [event["event"] for event in read_events(events_path)] == ["epoch_started", "epoch_finished", "run_failed"]
    assert not [path for path in events_path.parent.iterdir() if path.name != "events.jsonl"]


def test_a_search_event_cut_short_by_a_full_disk_does_not_swallow_the_next_one(failed_overwrites: dict) -> None:
    events_path = failed_overwrites["folders"]["search_events"] / "events.jsonl"
    assert failed_overwrites["errors"]["search_events"].startswith(f"OSError: [Errno 28] {events_path}: event "
                                                                   "'search_failed' was cut short")
    old = failed_overwrites["before"]["search_events"]["events.jsonl"]
    data = events_path.read_bytes()
    assert data.startswith(old)  # what was there stays; the fragment is its own line, skipped by readers
    assert [event["event"] for event in read_events(events_path)] == ["trial_started", "trial_started"]


if __name__ == "__main__":
    _child(int(sys.argv[1]), json.loads(sys.argv[2]))
