"""Label next: ranking unlabelled photos with a trained model (uncertain, spread out, never already labelled),
adding their labels to a dataset with undo, and the ``label-next`` command."""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from demo_photos import copy_demo
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from cli.commands import build_parser, run_command
from cli.parsing import EXIT_OK, EXIT_USAGE
from engine.core.errors import DatasetError
from engine.core.paths import project_dir_for
from engine.data.discovery import discover_dataset
from engine.data.labelling import add_labels, labels_log, undo_last_labels
from engine.evaluation.label_next import (
    LabelNextRanking,
    k_center_greedy,
    rank_unlabelled,
    uncertainty,
)
from engine.evaluation.predict import Predictor
from engine.evaluation.suggestions import CSV_COLUMNS, read_suggestions

COUNT = 4
CLASSES = 4  # demo_project's models know the first four demo classes


@dataclass
class Ranked:
    """A ranking of a folder holding near-copies of its least sure photo, a photo of the dataset and a broken one."""

    ranking: LabelNextRanking
    unlabelled: Path
    near_copies: list[Path]
    from_dataset: Path
    dataset_photo: Path
    broken: Path


@pytest.fixture(scope="module")
def model(demo_project: Path) -> Path:
    """A run folder of the demo project (its best checkpoint predicts)."""
    return sorted((project_dir_for(demo_project) / "runs").iterdir())[0]


@pytest.fixture(scope="module")
def ranked(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Ranked:
    """Demo photos the model never saw, plus near-copies of the least sure one, a dataset photo and a broken file."""
    root = tmp_path_factory.mktemp("label-next")
    data = copy_demo(root / "data", classes=CLASSES, per_class=5)
    unlabelled = copy_demo(root / "unlabelled", classes=CLASSES, per_class=4, skip=25)
    photos = sorted(unlabelled.rglob("*.png"))
    result = Predictor(model, device="cpu").predict_proba(photos)
    least_sure = photos[result.kept[int(uncertainty(result.probabilities)[0].argmin())]]
    # Byte-different near-copies: saved again losslessly (as an export or a sync tool would) and slightly resized.
    original = Image.open(least_sure)
    note = PngInfo()
    note.add_text("Comment", "saved again")
    variants = [(original, {"compress_level": 0}), (original, {"compress_level": 1}), (original, {"pnginfo": note}),
                (original.resize((original.width - 1, original.height - 1)), {}),
                (original.resize((original.width + 2, original.height + 2)), {})]
    near_copies = []
    for number, (image, options) in enumerate(variants):
        copy = unlabelled / "copies" / f"copy_{number}.png"
        copy.parent.mkdir(exist_ok=True)
        image.save(copy, **options)
        near_copies.append(copy)
    dataset_photo = sorted((data / "bag").glob("*.png"))[0]
    from_dataset = shutil.copyfile(dataset_photo, unlabelled / "from_dataset.png")
    broken = unlabelled / "broken.png"
    broken.write_bytes(dataset_photo.read_bytes()[:200])
    ranking = rank_unlabelled(data, unlabelled, model, count=COUNT, project_dir=root / "project", device="cpu")
    return Ranked(ranking, unlabelled, [least_sure, *near_copies], Path(from_dataset), dataset_photo, broken)


def test_the_batch_is_count_distinct_photos_none_already_labelled_listed_first(ranked: Ranked) -> None:
    picked = ranked.ranking.picked
    assert len(picked) == COUNT == len({suggestion.path for suggestion in picked})
    assert ranked.ranking.suggestions[:COUNT] == picked
    assert all(suggestion.already_labelled is None for suggestion in picked)


def test_the_batch_takes_at_most_two_near_copies_of_an_unsure_photo(ranked: Ranked) -> None:
    assert len({_sha256(path) for path in ranked.near_copies}) == 6
    by_margin = sorted((s for s in ranked.ranking.suggestions if s.already_labelled is None), key=lambda s: s.margin)
    # Uncertainty alone would fill the batch with them: they are the least sure photos.
    assert {suggestion.path for suggestion in by_margin[:COUNT]} <= set(ranked.near_copies)
    assert len({suggestion.path for suggestion in ranked.ranking.picked} & set(ranked.near_copies)) <= 2


def test_a_photo_the_dataset_holds_is_flagged_listed_last_and_never_picked(ranked: Ranked) -> None:
    flagged = [suggestion for suggestion in ranked.ranking.suggestions if suggestion.already_labelled is not None]
    assert [suggestion.path for suggestion in flagged] == [ranked.from_dataset]
    assert flagged[0].already_labelled == ranked.dataset_photo.resolve()
    assert not flagged[0].picked and ranked.ranking.suggestions[-1] == flagged[0]


def test_a_damaged_photo_is_named_and_skipped(ranked: Ranked) -> None:
    assert [path for path, _ in ranked.ranking.failed] == [ranked.broken]
    assert ranked.ranking.failed[0][1]
    assert ranked.broken not in {suggestion.path for suggestion in ranked.ranking.suggestions}
    every_photo = {path for path in ranked.unlabelled.rglob("*") if path.is_file()}
    assert {suggestion.path for suggestion in ranked.ranking.suggestions} == every_photo - {ranked.broken}


def test_margin_and_entropy_of_probability_rows() -> None:
    margins, entropies = uncertainty(np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]], dtype=np.float32))
    assert np.allclose(margins, [0.2, 1.0, 0.25])
    assert np.allclose(entropies, [-(0.2 * np.log(0.2) + 0.5 * np.log(0.5) + 0.3 * np.log(0.3)), 0.0, 1.5 * np.log(2)])


def test_k_center_greedy_starts_at_the_first_row_and_takes_copies_only_when_nothing_else_is_left() -> None:
    features = np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [0.1, 0.0], [0.0, 5.0]])
    assert k_center_greedy(features, 3) == [0, 2, 4]
    assert k_center_greedy(features, 5) == [0, 2, 4, 3, 1]
    assert k_center_greedy(features[:2], 2) == [0, 1]


def run_label_next(*arguments: str) -> int:
    """``main.py label-next ARGUMENTS`` in this process, through the whole command line's parser."""
    return run_command(build_parser().parse_args(["label-next", *arguments]))


def test_the_command_ranks_with_an_ensemble_into_a_csv_then_adds_its_labels_and_undoes_them(
    demo_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ensemble = project_dir_for(demo_project) / "ensembles" / "pair.json"
    data = copy_demo(tmp_path / "data", classes=CLASSES, per_class=3)
    unlabelled = copy_demo(tmp_path / "unlabelled", classes=["bag", "coat"], per_class=3, skip=40)
    ranking = tmp_path / "next.csv"
    before = _hashes(data)
    project = ["--project-dir", str(tmp_path / "project")]

    assert run_label_next(str(data), str(unlabelled), "--model", str(ensemble), "--count", "2", "--csv", str(ranking),
                          "--device", "cpu", *project) == EXIT_OK
    with ranking.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 6
    assert [row["picked"] for row in rows] == ["yes", "yes", "", "", "", ""]
    assert [row["rank"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    read_back = read_suggestions(ranking)
    assert [str(item.path) for item in read_back] == [row["path"] for row in rows]
    assert [item.picked for item in read_back] == [True, True, False, False, False, False]
    assert "2 of 6 photos to label next" in capsys.readouterr().out

    for row in rows[:2]:
        row["label"] = Path(row["path"]).parent.name
    with ranking.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert run_label_next(str(data), "--add-labels", str(ranking), *project) == EXIT_OK
    added = set(_hashes(data).items()) - set(before.items())
    assert {name.split("/")[0] for name, _ in added} == {Path(row["path"]).parent.name for row in rows[:2]}
    assert {digest for _, digest in added} == {_sha256(Path(row["path"])) for row in rows[:2]}

    assert run_label_next(str(data), "--undo-labels", *project) == EXIT_OK
    assert _hashes(data) == before


def test_an_empty_unlabelled_folder_is_refused_in_one_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_demo(tmp_path / "data", classes=2, per_class=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    assert run_label_next(str(data), str(tmp_path / "empty"), "--model", str(model)) == EXIT_USAGE
    assert capsys.readouterr().err == f"error: no images found in {tmp_path / 'empty'}\n"


@pytest.mark.parametrize(("name", "content"), [("model.safetensors", b"not a checkpoint"),
                                               ("ensemble.json", b'{"kind": "ensem')])
def test_a_model_file_that_cannot_be_read_is_refused_naming_it(
    name: str, content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_demo(tmp_path / "data", classes=2, per_class=2)
    unlabelled = copy_demo(tmp_path / "unlabelled", classes=1, per_class=1, skip=30)
    damaged = tmp_path / name
    damaged.write_bytes(content)
    assert run_label_next(str(data), str(unlabelled), "--model", str(damaged)) == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith(f"error: {damaged}: ") and error.count("\n") == 1


def test_labels_are_copied_into_class_folders_never_overwriting_and_undo_removes_only_them(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=["bag", "coat"], per_class=3)
    new = copy_demo(tmp_path / "new", classes=["bag", "coat"], per_class=2, skip=30)
    # A new photo under a name the coat folder already has; rotated, so its content is new too.
    taken = new / "coat" / sorted((data / "coat").glob("*.png"))[0].name
    Image.open(sorted((new / "coat").glob("*.png"))[0]).rotate(90).save(taken)
    labelled = sorted((data / "bag").glob("*.png"))[0]
    already = Path(shutil.copyfile(labelled, new / "bag" / "again.png"))
    photos = {path: path.parent.name for path in sorted(new.rglob("*.png"))}
    before = _hashes(data)

    done = add_labels(data, tmp_path / "project", photos)

    assert len(done.added) == len(photos) - 1
    assert done.skipped == [f"{already}: already in the dataset as {labelled.resolve()}; not added"]
    assert all(addition.target.parent == data.resolve() / addition.label for addition in done.added)
    assert [addition.target.name for addition in done.added if addition.source == taken] == [f"{taken.stem}_1.png"]
    assert _hashes(data).items() >= before.items()  # nothing overwritten
    assert labels_log(tmp_path / "project").is_file()

    undone = undo_last_labels(tmp_path / "project")
    assert len(undone.added) == len(done.added) and not undone.skipped
    assert _hashes(data) == before
    with pytest.raises(DatasetError, match="no added labels to undo"):
        undo_last_labels(tmp_path / "project")


def test_undo_keeps_a_copy_changed_since_and_presplit_data_gets_training_photos(tmp_path: Path) -> None:
    for split, skip in (("train", 0), ("val", 10)):
        copy_demo(tmp_path / "data" / split, classes=["bag", "coat"], per_class=2, skip=skip)
    new = copy_demo(tmp_path / "new", classes=["bag"], per_class=2, skip=30)
    done = add_labels(tmp_path / "data", tmp_path / "project", {path: "bag" for path in new.rglob("*.png")})
    assert {addition.target.parent for addition in done.added} == {(tmp_path / "data" / "train" / "bag").resolve()}
    edited = done.added[0].target
    edited.write_bytes(edited.read_bytes() + b"edited")

    undone = undo_last_labels(tmp_path / "project")
    assert [addition.target for addition in undone.added] == [done.added[1].target]
    assert undone.skipped == [f"{edited}: changed since it was added; kept"] and edited.exists()


def test_a_csv_dataset_gets_rows_appended_and_undo_removes_exactly_them(tmp_path: Path) -> None:
    photos = copy_demo(tmp_path / "dataset" / "photos", classes=["bag", "coat"], per_class=3)
    listing = tmp_path / "dataset" / "labels.csv"
    rows = [f"photos/{path.parent.name}/{path.name},{path.parent.name}" for path in sorted(photos.rglob("*.png"))]
    listing.write_bytes(("path,label\r\n" + "\r\n".join(rows) + "\r\n").encode())
    before = listing.read_bytes()
    elsewhere = copy_demo(tmp_path / "elsewhere", classes=["bag", "coat"], per_class=1, skip=30)
    inside = photos / "bag" / "new_bag.png"  # in the CSV's folder, but not listed
    Image.open(next((elsewhere / "bag").glob("*.png"))).rotate(90).save(inside)
    outside = next((elsewhere / "coat").glob("*.png"))

    done = add_labels(listing, tmp_path / "project", {inside: "bag", outside: "coat"})

    assert len(done.added) == 2
    labels = {sample.path: sample.label for sample in discover_dataset(listing).files}
    assert labels[inside] == "bag" and labels[outside] == "coat"
    assert listing.read_bytes() == before + f"photos/bag/new_bag.png,bag\r\n{outside},coat\r\n".encode()
    assert len(undo_last_labels(tmp_path / "project").added) == 2 and listing.read_bytes() == before


def test_a_class_the_dataset_lacks_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=["bag", "coat"], per_class=2)
    photo = next(copy_demo(tmp_path / "new", classes=["bag"], per_class=1, skip=30).rglob("*.png"))
    before = _hashes(data)
    with pytest.raises(DatasetError, match="no class 'bga'; expected one of bag, coat"):
        add_labels(data, tmp_path / "project", {photo: "bga"})
    assert _hashes(data) == before and not labels_log(tmp_path / "project").exists()


def _hashes(folder: Path) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): _sha256(path) for path in folder.rglob("*") if path.is_file()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
