"""The data doctor's decisions: relabel, exclude, keep and undo through the project files, and moves between folders."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from imagefactory import make_class_folders

from engine.core.errors import DatasetError
from engine.data.exclusions import load_exclusions
from engine.data.prepare import prepare_dataset
from engine.data.relabels import load_relabels
from engine.review.decisions import ReviewDecisions
from engine.review.folder_moves import apply_relabels_to_folders, moves_log, undo_last_apply


def _labels(data: Path, project: Path) -> dict[Path, str]:
    prepared = prepare_dataset(data, project_dir=project)
    return {record.path: record.label for records in prepared.splits.values() for record in records}


def _contents(root: Path) -> dict[str, str]:
    """Every file under ``root`` outside the project folder, by content: what must never be lost."""
    return {hashlib.sha256(path.read_bytes()).hexdigest(): path.relative_to(root).as_posix()
            for path in root.rglob("*") if path.is_file() and ".transfer-studio" not in path.parts}


def test_relabel_exclude_keep_and_undo_round_trip_through_the_files_and_preparation(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    made = make_class_folders(data, {"cat": 5, "dog": 5})
    project = data / ".transfer-studio"
    cat, dog = made["cat"][1].resolve(), made["dog"][2].resolve()
    decisions = ReviewDecisions(project)

    decisions.relabel(cat, "dog")
    decisions.exclude(dog)
    decisions.keep(made["cat"][0].resolve(), "outlier")

    labels = _labels(data, project)
    assert labels[cat] == "dog" and dog not in labels
    assert decisions.status(cat, "label_issue") == "relabelled to 'dog'"
    assert decisions.status(dog, "outlier") == "excluded"
    assert ReviewDecisions(project).status(made["cat"][0].resolve(), "outlier") == "kept", "kept survives a restart"
    assert ReviewDecisions(project).status(made["cat"][0].resolve(), "label_issue") == "", "kept is per finding kind"

    assert decisions.undo() == made["cat"][0].resolve()
    assert decisions.undo() == dog
    assert decisions.undo() == cat
    assert decisions.undo() is None and not decisions.can_undo
    assert load_relabels(project) == {} and load_exclusions(project) == frozenset()
    assert _labels(data, project)[cat] == "cat"

    decisions.relabel(cat, "dog")
    changes = tmp_path / "changes.csv"
    decisions.save_changes_csv(changes, {cat: "cat"})
    assert changes.read_text().splitlines() == ["path,action,given_label,new_label", f"{cat},relabel,cat,dog"]


@pytest.mark.parametrize("presplit", [False, True])
def test_apply_to_folders_moves_relabelled_photos_and_undo_moves_them_back(tmp_path: Path, presplit: bool) -> None:
    data = tmp_path / "photos"
    made = make_class_folders(data / "train" if presplit else data, {"cat": 4, "dog": 4})
    if presplit:
        make_class_folders(data / "val", {"cat": 2, "dog": 2})
    project = data / ".transfer-studio"
    # A photo named like one already in the new folder keeps both: the moved one is renumbered.
    clash = made["cat"][0].resolve()
    shutil.copy(made["dog"][0], made["dog"][0].with_name(clash.name))
    before_files = _contents(data)
    decisions = ReviewDecisions(project)
    decisions.relabel(clash, "dog")
    decisions.relabel(made["cat"][1].resolve(), "dog")
    decisions.exclude(made["cat"][1].resolve())
    decisions.relabel(made["dog"][3].resolve(), "cat")
    relabelled = _labels(data, project)

    done = apply_relabels_to_folders(data, project)

    split = "train/" if presplit else ""
    assert sorted(move.target.relative_to(data).as_posix() for move in done.moved) == [
        f"{split}cat/dog_003.png", f"{split}dog/cat_000_1.png", f"{split}dog/cat_001.png"]
    assert load_relabels(project) == {}, "the folders now say what the relabels said"
    assert load_exclusions(project) == {(data / f"{split}dog/cat_001.png").resolve()}, "the exclusion follows the file"
    after = _labels(data, project)
    assert sorted(after.values()) == sorted(relabelled.values())
    assert sorted(_contents(data)) == sorted(before_files), "no file lost or duplicated"

    undone = undo_last_apply(project)

    assert len(undone.moved) == 3 and not undone.skipped
    assert _contents(data) == before_files, "every file back where it was"
    assert _labels(data, project) == relabelled, "the relabels are back too"
    assert moves_log(project).read_text() == ""
    with pytest.raises(DatasetError, match="no folder moves to undo"):
        undo_last_apply(project)


def test_an_apply_that_fails_half_way_is_undone_from_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "photos"
    made = make_class_folders(data, {"cat": 3, "dog": 3})
    project = data / ".transfer-studio"
    before = _contents(data)
    decisions = ReviewDecisions(project)
    for path in made["cat"]:
        decisions.relabel(path.resolve(), "dog")
    real_move, calls = shutil.move, []

    def move_twice_then_fail(source: object, target: object) -> object:
        calls.append(source)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_move(source, target)

    monkeypatch.setattr(shutil, "move", move_twice_then_fail)
    with pytest.raises(OSError, match="No space"):
        apply_relabels_to_folders(data, project)
    monkeypatch.setattr(shutil, "move", real_move)

    undone = undo_last_apply(project)
    assert len(undone.moved) == 2
    assert _contents(data) == before


def test_a_csv_dataset_keeps_its_relabels_in_the_project(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path / "images", {"cat": 3, "dog": 3})
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n" + "".join(f"{path.relative_to(tmp_path).as_posix()},{label}\n"
                                              for label, paths in made.items() for path in paths))
    with pytest.raises(DatasetError, match="labels.csv: a CSV dataset has no class folders"):
        apply_relabels_to_folders(table, tmp_path / "project")
