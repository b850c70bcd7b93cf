"""engine.data.exclusions on real folders: the saved list, and training splits that leave excluded images out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from demo_photos import copy_demo
from imagefactory import draw, make_class_folders

from engine.core.config import RunConfig
from engine.core.errors import DatasetError
from engine.core.paths import project_dir_for
from engine.data.exclusions import EXCLUSIONS_NAME, apply_exclusions, load_exclusions, save_exclusions
from engine.data.health import scan_dataset
from engine.data.prepare import prepare_dataset, split_records
from engine.training.callback import Callback, LoopState
from engine.training.runfolder import read_events
from engine.training.setup import prepare_run_data
from engine.training.train import train


def _every_path(prepared) -> set[Path]:
    return {record.path for records in prepared.splits.values() for record in records}


def test_exclusions_are_saved_relative_to_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = make_class_folders(data, {"cat": 3, "dog": 3})
    project = project_dir_for(data)
    outside = tmp_path / "elsewhere" / "stray.png"
    assert load_exclusions(project) == frozenset(), "no file: nothing excluded"

    saved = save_exclusions(project, [made["dog"][1], made["cat"][0], outside])

    assert saved == project / EXCLUSIONS_NAME
    payload = json.loads(saved.read_text())
    assert payload["excluded"] == [str(outside), "cat/cat_000.png", "dog/dog_001.png"]
    assert load_exclusions(project) == {made["cat"][0], made["dog"][1], outside}
    save_exclusions(project, [])
    assert load_exclusions(project) == frozenset()


def test_a_moved_dataset_keeps_its_exclusions(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path / "before", {"cat": 2, "dog": 2})
    save_exclusions(project_dir_for(tmp_path / "before"), [made["cat"][1]])

    (tmp_path / "before").rename(tmp_path / "after")

    assert load_exclusions(project_dir_for(tmp_path / "after")) == {tmp_path / "after" / "cat" / "cat_001.png"}


@pytest.mark.parametrize("content", ["{not json", '{"excluded": "cat/a.png"}', "[1, 2]"])
def test_a_damaged_exclusions_file_is_reported(tmp_path: Path, content: str) -> None:
    project = tmp_path / ".transfer-studio"
    project.mkdir()
    (project / EXCLUSIONS_NAME).write_text(content)

    with pytest.raises(DatasetError, match=EXCLUSIONS_NAME):
        load_exclusions(project)


def test_training_splits_skip_excluded_images_and_survive_a_rescan(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path, {"cat": 10, "dog": 10})
    excluded = {made["cat"][0], made["cat"][5], made["dog"][9]}
    before = prepare_dataset(tmp_path, val_fraction=0.2)
    assert excluded <= _every_path(before) and before.excluded_by_user == ()

    save_exclusions(project_dir_for(tmp_path), excluded)
    prepared = prepare_dataset(tmp_path, val_fraction=0.2)

    assert prepared.excluded_by_user == tuple(sorted(excluded))
    assert _every_path(prepared) == _every_path(before) - excluded
    assert len(prepared.splits["train"]) + len(prepared.splits["val"]) == 17
    # The health report itself still counts them: the exclusion is the user's, not a problem of the files.
    assert prepared.report.class_counts == {"cat": 10, "dog": 10}

    # New files and a rescan leave the list alone.
    draw(tmp_path / "dog" / "dog_new.png", seed=1234)
    rescanned = prepare_dataset(tmp_path, val_fraction=0.2)
    assert rescanned.report.class_counts["dog"] == 11
    assert rescanned.excluded_by_user == prepared.excluded_by_user
    assert not excluded & _every_path(rescanned)
    assert load_exclusions(project_dir_for(tmp_path)) == excluded


def test_excluding_a_whole_class_removes_it_from_training(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path, {"cat": 4, "dog": 4, "fish": 3})
    save_exclusions(project_dir_for(tmp_path), made["fish"])

    prepared = prepare_dataset(tmp_path, val_fraction=0.25)

    assert prepared.classes == ("cat", "dog")
    save_exclusions(project_dir_for(tmp_path), [*made["cat"], *made["dog"], *made["fish"]])
    with pytest.raises(DatasetError, match="11 excluded by the user"):
        prepare_dataset(tmp_path)


def test_presplit_class_without_training_images_is_left_out(tmp_path: Path) -> None:
    train = make_class_folders(tmp_path / "train", {"cat": 4, "dog": 4, "fish": 2})
    make_class_folders(tmp_path / "val", {"cat": 2, "dog": 2, "fish": 1})
    save_exclusions(project_dir_for(tmp_path), train["fish"])

    prepared = prepare_dataset(tmp_path)

    assert prepared.classes == ("cat", "dog")
    assert {record.label for records in prepared.splits.values() for record in records} == {"cat", "dog"}


def test_split_records_is_the_split_prepare_makes(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path, {"a": 9, "b": 7})
    save_exclusions(project_dir_for(tmp_path), [made["a"][2]])
    prepared = prepare_dataset(tmp_path, val_fraction=0.3, test_fraction=0.2, seed=3)

    report = scan_dataset(tmp_path)
    usable, dropped = apply_exclusions(report.usable_records(), load_exclusions(project_dir_for(tmp_path)))
    preview = split_records(usable, presplit=False, val_fraction=0.3, test_fraction=0.2, seed=3)

    assert dropped == (made["a"][2],)
    assert {split: [r.path for r in records] for split, records in preview.items()} == {
        split: [r.path for r in records] for split, records in prepared.splits.items()
    }


class ClassesSeen(Callback):
    """Counts the items of each class the loop trains and validates on (the first epoch only)."""

    def __init__(self) -> None:
        self.counts = {"train": torch.zeros(2, dtype=torch.long), "val": torch.zeros(2, dtype=torch.long)}

    def after_loss(self, state: LoopState) -> None:
        if state.epoch == 1:
            self.counts["train" if state.training else "val"] += torch.bincount(state.targets.cpu(), minlength=2)


def test_a_training_run_never_sees_an_excluded_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    copy_demo(data / "train", ["bag", "sneaker"], per_class=10)
    copy_demo(data / "val", ["bag", "sneaker"], per_class=5, skip=10)
    files = {(split, label): sorted((data / split / label).glob("*.png"))
             for split in ("train", "val") for label in ("bag", "sneaker")}
    excluded = {files["train", "bag"][0], files["train", "bag"][3], files["train", "sneaker"][7],
                files["val", "sneaker"][2]}
    save_exclusions(project_dir_for(data), excluded)
    config = RunConfig().with_changes(**{"data.path": str(data), "data.num_workers": 0, "data.input_size": 64,
                                         "optim.epochs": 1})
    seen = ClassesSeen()

    result = train(config, tmp_path / "run", callbacks=[seen])

    assert result.state == "finished"
    # By count: 10 - 2 bags and 10 - 1 sneakers trained on, 5 bags and 5 - 1 sneakers validated on.
    assert seen.counts["train"].tolist() == [8, 9] and seen.counts["val"].tolist() == [5, 4]
    events = read_events(tmp_path / "run")
    scanned = next(event for event in events if event["event"] == "dataset_scanned")
    assert scanned["counts"] == {"train": 17, "val": 9, "test": 0}
    extracted = {event["split"]: event["computed"] + event["reused"] for event in events
                 if event["event"] == "features_extracted"}
    assert extracted == {"train": 17, "val": 9}
    # By name: the splits the run trained on are the copied files less the excluded ones.
    dataset = prepare_run_data(config)
    for split in ("train", "val"):
        expected = sorted(path.name for label in ("bag", "sneaker") for path in files[split, label]
                          if path not in excluded)
        assert sorted(record.path.name for record in dataset.splits[split]) == expected
    assert dataset.excluded_by_user == tuple(sorted(excluded))
