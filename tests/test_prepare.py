"""engine.data.prepare on real folders: bad files left out, reports saved, splits honoured and reproducible."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from imagefactory import draw, make_class_folders, truncate, write_bytes

from engine.core.errors import DatasetError
from engine.core.paths import PROJECT_FOLDER_NAME
from engine.data.health import HealthReport
from engine.data.prepare import PreparedDataset, prepare_dataset


def _names(prepared: PreparedDataset, split: str) -> set[str]:
    return {f"{record.label}/{record.path.name}" for record in prepared.splits[split]}


def test_prepare_leaves_out_bad_files_and_saves_the_report(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path, {"cat": 10, "dog": 5, "fish": 0})
    truncate(draw(tmp_path / "cat" / "cut.jpg", size=(64, 64), seed=50))
    write_bytes(tmp_path / "dog" / "notes.txt", b"not an image")
    shutil.copyfile(made["cat"][1], tmp_path / "cat" / "zz_copy.png")  # sorts after the original: left out

    prepared = prepare_dataset(tmp_path, val_fraction=0.2, seed=0)

    project = tmp_path / PROJECT_FOLDER_NAME
    assert prepared.classes == ("cat", "dog")  # fish has no usable image
    assert prepared.root == tmp_path.resolve()
    every = set().union(*(_names(prepared, split) for split in prepared.splits))
    assert len(every) == 15 and not every & {"cat/cut.jpg", "dog/notes.txt", "cat/zz_copy.png"}
    assert [len(prepared.splits[split]) for split in ("train", "val", "test")] == [12, 3, 0]
    assert {record.label for record in prepared.splits["val"]} == {"cat", "dog"}
    assert prepared.targets("val") == [prepared.class_index(r.label) for r in prepared.splits["val"]]
    saved = HealthReport.from_dict(json.loads((project / "health.json").read_text()))
    assert saved == prepared.report
    assert "left out of training" in (project / "health.txt").read_text()
    assert (project / "scan_cache.json").is_file()


def test_prepare_is_reproducible_and_reuses_the_cache(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data", {"a": 8, "b": 8, "c": 8})

    first = prepare_dataset(tmp_path / "data", seed=4, test_fraction=0.25)
    second = prepare_dataset(tmp_path / "data", seed=4, test_fraction=0.25)
    other = prepare_dataset(tmp_path / "data", seed=5, test_fraction=0.25)

    assert first.splits == second.splits
    assert _names(first, "val") != _names(other, "val")
    assert all(len(records) > 0 for records in first.splits.values())
    # The project folder inside the data folder is hidden from the second scan, and its files reused.
    assert len(second.report.records) == 24 and second.report.files_reused == 24


def test_presplit_folders_are_honoured(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"cat": 6, "dog": 6})
    make_class_folders(tmp_path / "valid", {"cat": 2, "dog": 2})
    make_class_folders(tmp_path / "test", {"cat": 1, "dog": 1})

    prepared = prepare_dataset(tmp_path, val_fraction=0.5, project_dir=tmp_path / "elsewhere")

    assert {split: len(records) for split, records in prepared.splits.items()} == {"train": 12, "val": 4, "test": 2}
    assert all(record.split == split for split, records in prepared.splits.items() for record in records)
    assert (tmp_path / "elsewhere" / "health.txt").is_file()


def test_presplit_without_val_takes_val_from_train(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"cat": 10, "dog": 10})
    make_class_folders(tmp_path / "test", {"cat": 2, "dog": 2})

    prepared = prepare_dataset(tmp_path, val_fraction=0.2, test_fraction=0.3)

    assert {split: len(records) for split, records in prepared.splits.items()} == {"train": 16, "val": 4, "test": 4}
    assert {record.split for record in prepared.splits["val"]} == {"train"}  # carved from the train folder
    assert {record.split for record in prepared.splits["test"]} == {"test"}  # the folder wins over the fraction


def test_csv_dataset_keeps_its_project_beside_the_csv(tmp_path: Path) -> None:
    rows = [f"img/{label}{index}.png,{label}" for label in ("x", "y") for index in range(3)]
    for index, row in enumerate(rows):
        draw(tmp_path / row.split(",")[0], seed=index)
    csv_path = write_bytes(tmp_path / "labels.csv", ("path,label\n" + "\n".join(rows) + "\nimg/gone.png,x\n").encode())

    prepared = prepare_dataset(csv_path, val_fraction=0.34)

    assert prepared.classes == ("x", "y")
    assert sum(len(records) for records in prepared.splits.values()) == 6
    assert "img/gone.png: file not found" in (tmp_path / PROJECT_FOLDER_NAME / "health.txt").read_text()


def test_one_usable_class_is_refused_with_what_was_found(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"cat": 3})
    write_bytes(tmp_path / "dog" / "empty.jpg", b"")

    with pytest.raises(DatasetError) as caught:
        prepare_dataset(tmp_path)

    message = str(caught.value)
    assert message.startswith(f"{tmp_path.resolve()}: at least 2 classes with usable images are needed, found 1")
    assert "cat: 3 images" in message and "without usable images: dog" in message and "health.txt" in message


def test_no_usable_image_is_refused(tmp_path: Path) -> None:
    write_bytes(tmp_path / "cat" / "a.jpg", b"")
    write_bytes(tmp_path / "dog" / "b.txt", b"text")

    with pytest.raises(DatasetError, match=r"no usable images among 2 files \(1 not_an_image, 1 zero_byte\)"):
        prepare_dataset(tmp_path)


def test_missing_folder_is_refused_without_creating_anything(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data folder not found"):
        prepare_dataset(tmp_path / "nowhere")

    assert list(tmp_path.iterdir()) == []
