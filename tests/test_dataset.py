"""engine.data.discovery: discovering the three layouts on real folders, and the stratified split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from imagefactory import draw, make_class_folders, write_bytes

from engine.core.errors import ConfigError, DatasetError
from engine.data.discovery import Sample, discover_dataset, split_samples


def test_class_folders_list_every_file_and_ignore_hidden_and_loose_files(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path, {"dog": 2, "cat": 1, "empty": 0})
    notes = write_bytes(tmp_path / "cat" / "notes.txt", b"not an image")
    nested = draw(tmp_path / "dog" / "2019" / "old.png", seed=9)
    write_bytes(tmp_path / "README.txt", b"loose file in the root")
    write_bytes(tmp_path / "cat" / ".DS_Store", b"finder litter")
    write_bytes(tmp_path / "cat" / "Thumbs.db", b"windows litter")
    draw(tmp_path / ".transfer-studio" / "thumbs" / "a.png")
    draw(tmp_path / "dog" / ".hidden" / "b.png")

    source = discover_dataset(tmp_path)

    assert source.layout == "class_folders"
    assert source.root == tmp_path.resolve()
    assert source.classes == ("cat", "dog", "empty")
    assert set(source.files) == {
        Sample(made["cat"][0], "cat"),
        Sample(notes, "cat"),
        Sample(made["dog"][0], "dog"),
        Sample(made["dog"][1], "dog"),
        Sample(nested, "dog"),
    }
    assert all(sample.path.is_absolute() for sample in source.files)


def test_presplit_folders_give_splits_and_the_union_of_classes(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"cat": 2, "dog": 2})
    make_class_folders(tmp_path / "validation", {"cat": 1})
    make_class_folders(tmp_path / "test", {"bird": 1})

    source = discover_dataset(tmp_path)

    assert source.layout == "presplit"
    assert source.classes == ("bird", "cat", "dog")
    assert Counter(sample.split for sample in source.files) == {"train": 4, "val": 1, "test": 1}
    assert [sample.split for sample in source.files] == ["train"] * 4 + ["val", "test"]


def test_presplit_mixed_with_class_folders_is_refused(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"cat": 1})
    make_class_folders(tmp_path, {"dog": 1})

    with pytest.raises(DatasetError, match=r"mixes split folders \(train\) with other folders \(dog\)"):
        discover_dataset(tmp_path)


def test_two_folders_for_one_split_are_refused(tmp_path: Path) -> None:
    for split in ("train", "val", "valid"):
        make_class_folders(tmp_path / split, {"cat": 1})

    with pytest.raises(DatasetError, match="claim the val split"):
        discover_dataset(tmp_path)


def test_a_class_named_test_without_subfolders_is_a_class(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"test": 1, "prod": 1})

    assert discover_dataset(tmp_path).classes == ("prod", "test")


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data folder not found: .*nowhere"):
        discover_dataset(tmp_path / "nowhere")


def test_folder_without_class_folders_explains_the_layouts(tmp_path: Path) -> None:
    draw(tmp_path / "loose.png")

    with pytest.raises(DatasetError, match="no class folders found; expected one of") as caught:
        discover_dataset(tmp_path)

    assert "train/" in str(caught.value) and "path,label" in str(caught.value)


def test_a_file_that_is_not_a_csv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"a \.png file is not a dataset"):
        discover_dataset(draw(tmp_path / "picture.png"))


def test_csv_with_relative_absolute_and_missing_paths(tmp_path: Path) -> None:
    relative = draw(tmp_path / "images" / "a.png", seed=1)
    absolute = draw(tmp_path / "elsewhere" / "b.png", seed=2)
    csv_path = write_bytes(
        tmp_path / "labels.csv",
        f"\ufeffpath,label,notes\nimages/a.png,cat,first\n{absolute},dog,\n\nimages/gone.png,dog,deleted\n".encode(),
    )

    source = discover_dataset(csv_path)

    assert source.layout == "csv" and source.root == csv_path.resolve()
    assert source.classes == ("cat", "dog")
    assert set(source.files) == {
        Sample(relative, "cat"),
        Sample(absolute, "dog"),
        Sample(tmp_path / "images" / "gone.png", "dog"),
    }


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("file,class\na.png,cat\n", "line 1: expected a header with the columns path,label, got 'file,class'"),
        ("", "line 1: expected a header with the columns path,label, got 'an empty file'"),
        ("path,label\na.png,cat\nb.png\n", "line 3: expected 2 fields"),
        ("path,label\na.png,\n", "line 2: path and label must not be empty"),
        ("path,label\na.png,cat\n./a.png,dog\n", "line 3: ./a.png is already listed on line 2"),
        ('path,label\n"a.png,cat\n', "not valid CSV"),
        ("path,label\n", "the CSV lists no files"),
    ],
)
def test_malformed_csv_names_the_file_and_line(tmp_path: Path, content: str, expected: str) -> None:
    csv_path = write_bytes(tmp_path / "labels.csv", content.encode())

    with pytest.raises(DatasetError) as caught:
        discover_dataset(csv_path)

    assert str(caught.value).startswith(f"{csv_path}: ")
    assert expected in str(caught.value)


def _keys_and_labels(counts: dict[str, int]) -> tuple[list[str], list[str]]:
    keys = [f"{label}/{index:03d}.png" for label, count in counts.items() for index in range(count)]
    return keys, [key.split("/")[0] for key in keys]


def test_split_is_stratified_with_a_val_item_per_class() -> None:
    keys, labels = _keys_and_labels({"a": 20, "b": 10, "c": 2, "d": 1})

    split = split_samples(keys, labels, val_fraction=0.2, test_fraction=0.0, seed=0)

    val_counts = Counter(labels[index] for index in split["val"])
    assert val_counts == {"a": 4, "b": 2, "c": 1}
    assert "d" in {labels[index] for index in split["train"]}
    assert split["test"] == []
    assert sorted(split["train"] + split["val"]) == list(range(len(keys)))


def test_split_with_test_keeps_train_in_every_class() -> None:
    keys, labels = _keys_and_labels({"a": 10, "b": 3, "c": 2})

    split = split_samples(keys, labels, val_fraction=0.2, test_fraction=0.2, seed=3)

    per_split = {name: Counter(labels[index] for index in indices) for name, indices in split.items()}
    assert per_split["val"] == {"a": 2, "b": 1, "c": 1}
    assert per_split["test"] == {"a": 2, "b": 1}
    assert per_split["train"] == {"a": 6, "b": 1, "c": 1}


def test_split_is_reproducible_and_independent_of_input_order() -> None:
    keys, labels = _keys_and_labels({"a": 30, "b": 30})
    reordered = list(reversed(range(len(keys))))

    first = split_samples(keys, labels, val_fraction=0.3, seed=7)
    again = split_samples(keys, labels, val_fraction=0.3, seed=7)
    shuffled = split_samples([keys[i] for i in reordered], [labels[i] for i in reordered], val_fraction=0.3, seed=7)
    other_seed = split_samples(keys, labels, val_fraction=0.3, seed=8)

    assert first == again
    assert {keys[i] for i in first["val"]} == {keys[reordered[i]] for i in shuffled["val"]}
    assert first["val"] != other_seed["val"]


def test_split_of_one_class_ignores_the_other_classes() -> None:
    keys, labels = _keys_and_labels({"a": 30, "b": 30})
    only_a = [index for index, label in enumerate(labels) if label == "a"]

    together = split_samples(keys, labels, val_fraction=0.3, seed=1)
    alone = split_samples([keys[i] for i in only_a], ["a"] * len(only_a), val_fraction=0.3, seed=1)

    assert {keys[i] for i in together["val"] if labels[i] == "a"} == {keys[only_a[i]] for i in alone["val"]}


def test_split_keeps_groups_together() -> None:
    keys, labels = _keys_and_labels({"a": 40})
    groups = [f"hash{index // 4}" for index in range(len(keys))]  # ten groups of four

    split = split_samples(keys, labels, val_fraction=0.25, seed=0, groups=groups)

    for indices in split.values():
        for index in indices:
            assert {groups[other] for other in indices if groups[other] == groups[index]} == {groups[index]}
    val_groups, train_groups = {groups[i] for i in split["val"]}, {groups[i] for i in split["train"]}
    assert val_groups and not val_groups & train_groups
    assert len(split["val"]) == 12  # whole groups of four until at least 10 items


def test_split_of_a_single_group_stays_in_train() -> None:
    split = split_samples(["x1", "x2"], ["a", "a"], val_fraction=0.5, seed=0, groups=["same", "same"])

    assert split == {"train": [0, 1], "val": [], "test": []}


@pytest.mark.parametrize(
    ("val_fraction", "test_fraction", "message"),
    [(1.0, 0.0, "val_fraction: must be in"), (0.2, -0.1, "test_fraction: must be in"), (0.6, 0.4, "must be below 1")],
)
def test_split_refuses_bad_fractions(val_fraction: float, test_fraction: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_samples(["a"], ["x"], val_fraction=val_fraction, test_fraction=test_fraction, seed=0)
