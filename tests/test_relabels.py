"""Relabels: the overrides file the data doctor writes, honoured by dataset preparation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagefactory import make_class_folders

from engine.core.errors import DatasetError
from engine.data.prepare import prepare_dataset
from engine.data.relabels import load_relabels, relabels_file, save_relabels


def _dataset(root: Path, per_class: int = 6) -> Path:
    make_class_folders(root, {"cat": per_class, "dog": per_class, "fox": per_class})
    return root


def _labels(prepared) -> dict[str, str]:
    return {record.path.name: record.label for records in prepared.splits.values() for record in records}


def test_relabels_round_trip_and_give_the_new_class_without_moving_the_split(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "photos")
    project = tmp_path / "photos" / ".transfer-studio"
    before = prepare_dataset(data, project_dir=project)
    split_of = {record.path.name: split for split, records in before.splits.items() for record in records}
    target = data / "cat" / "cat_002.png"
    save_relabels(project, {target: "dog"})
    assert load_relabels(project) == {target.resolve(): "dog"}
    # Stored relative to the data folder, so the dataset can move as a whole.
    assert json.loads(relabels_file(project).read_text())["relabelled"] == {"cat/cat_002.png": "dog"}
    after = prepare_dataset(data, project_dir=project)
    assert _labels(after)["cat_002.png"] == "dog"
    assert after.relabelled_by_user == (target.resolve(),)
    assert {record.path.name: split for split, records in after.splits.items() for record in records} == split_of
    assert target.exists() and (data / "cat" / "cat_002.png").is_file()  # nothing moved on disk
    save_relabels(project, {})
    assert _labels(prepare_dataset(data, project_dir=project)) == _labels(before)


def test_a_relabel_to_an_unknown_class_names_the_file_and_the_class(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "photos")
    project = tmp_path / "project"
    save_relabels(project, {data / "cat" / "cat_000.png": "wolf"})
    with pytest.raises(DatasetError, match=r"relabels\.json: cat_000\.png is relabelled to 'wolf'"):
        prepare_dataset(data, project_dir=project)


@pytest.mark.parametrize("content", ["{", '{"relabelled": ["a"]}', '{"relabelled": {"a": ""}}'])
def test_a_damaged_relabels_file_is_named(tmp_path: Path, content: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    relabels_file(project).write_text(content)
    with pytest.raises(DatasetError, match="relabels.json"):
        load_relabels(project)
