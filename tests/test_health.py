"""engine.data.health on real folders: each problem kind, the report formats, the cache and aborting."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from imagefactory import draw, make_class_folders, png_declaring_size, truncate, write_bytes

from engine.data.health import (
    PROBLEM_KINDS,
    HealthReport,
    ScanAborted,
    load_report,
    scan_dataset,
)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A class-folder dataset with one of every problem a scan can find."""
    root = tmp_path / "data"
    made = make_class_folders(root, {"cat": 12, "dog": 6, "bird": 2, "fish": 0})
    cat = root / "cat"
    truncate(draw(cat / "cut.jpg", size=(64, 64), seed=101))
    truncate(draw(cat / "cut.png", size=(64, 64), seed=102))
    write_bytes(cat / "noise.jpg", np.random.default_rng(3).bytes(400))
    write_bytes(cat / "empty.jpg", b"")
    write_bytes(cat / "notes.txt", b"remember to label more cats\n")
    png_declaring_size(cat / "bomb.png", 20_000, 20_000)
    shutil.copyfile(made["cat"][0], cat / "copy_of_first.png")
    draw(cat / "tiny.png", size=(8, 8), seed=103)
    draw(cat / "banner.png", size=(300, 40), seed=104)
    # The same picture filed as a dog and as a bird: no copy can be trusted.
    shutil.copyfile(draw(root / "dog" / "ambiguous.png", seed=105), root / "bird" / "ambiguous.png")
    return root


def _kinds(report: HealthReport) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for problem in report.problems:
        names = {path.name for path in problem.paths} or {problem.label or ""}
        found.setdefault(problem.kind, set()).update(names)
    return found


def test_scan_finds_every_problem(messy: Path) -> None:
    report = scan_dataset(messy, workers=4)

    assert _kinds(report) == {
        "truncated": {"cut.jpg", "cut.png"},
        "not_an_image": {"noise.jpg", "notes.txt"},
        "zero_byte": {"empty.jpg"},
        "decompression_bomb": {"bomb.png"},
        "conflicting_labels": {"ambiguous.png"},
        "duplicate_in_class": {"copy_of_first.png"},
        "empty_class": {"fish"},
        "few_images": {"bird"},
        "class_imbalance": {""},
        "too_small": {"tiny.png"},
        "extreme_aspect_ratio": {"banner.png"},
    }
    assert set(_kinds(report)) <= set(PROBLEM_KINDS)


def test_usable_records_leave_out_bad_files_duplicates_and_conflicts(messy: Path) -> None:
    report = scan_dataset(messy)

    usable = report.usable_records()
    names = {record.path.name for record in usable}

    # 12 good cats + tiny + banner (warnings are kept); 6 dogs; 2 birds; no fish.
    assert report.class_counts == {"bird": 2, "cat": 14, "dog": 6, "fish": 0}
    assert len(usable) == 22
    assert {"tiny.png", "banner.png", "cat_000.png"} <= names
    assert not names & {"cut.jpg", "noise.jpg", "empty.jpg", "notes.txt", "bomb.png", "copy_of_first.png"}
    assert "ambiguous.png" not in names
    assert report.excluded_paths() == {record.path for record in report.records} - {r.path for r in usable}
    assert report.imbalance_ratio == 7.0
    assert len(report.records) == 31 and report.files_read == 31 and report.files_reused == 0


def test_file_records_describe_each_file(messy: Path) -> None:
    report = scan_dataset(messy)
    by_name = {(record.label, record.path.name): record for record in report.records}

    good, bomb, empty = by_name["cat", "cat_000.png"], by_name["cat", "bomb.png"], by_name["cat", "empty.jpg"]

    assert (good.width, good.height, good.format, good.mode, good.problem) == (48, 40, "PNG", "RGB", None)
    assert good.size_bytes == good.path.stat().st_size and len(good.sha256 or "") == 64
    assert bomb.problem == "decompression_bomb" and bomb.width is None
    assert "400000000 pixels" in (bomb.reason or "") and "refused without decoding" in (bomb.reason or "")
    assert empty.problem == "zero_byte" and empty.sha256 is None
    assert by_name["cat", "cut.jpg"].reason.startswith("JPEG data does not end")


def test_problem_severities_and_exclusion(messy: Path) -> None:
    report = scan_dataset(messy)

    by_kind = {problem.kind: problem for problem in report.problems}

    assert by_kind["truncated"].severity == "error" and by_kind["truncated"].excluded
    assert by_kind["conflicting_labels"].excluded and len(by_kind["conflicting_labels"].paths) == 2
    assert by_kind["duplicate_in_class"].severity == "info"
    assert "cat_000.png, which is kept" in by_kind["duplicate_in_class"].message
    assert not by_kind["too_small"].excluded and by_kind["too_small"].severity == "warning"
    imbalance = by_kind["class_imbalance"].message
    assert "'cat' has 14" in imbalance and "'bird' has 2" in imbalance and "ratio 7.0" in imbalance
    assert by_kind["few_images"].label == "bird" and "only 2 usable images" in by_kind["few_images"].message


def test_thresholds_are_parameters(messy: Path) -> None:
    report = scan_dataset(messy, min_size=4, max_aspect_ratio=10.0, min_images_per_class=2)

    assert not {"too_small", "extreme_aspect_ratio", "few_images"} & set(_kinds(report))


def test_presplit_leakage_keeps_the_train_copy(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path / "train", {"cat": 5, "dog": 5})
    make_class_folders(tmp_path / "val", {"cat": 2, "dog": 2})
    leaked = tmp_path / "val" / "cat" / "leaked.png"
    shutil.copyfile(made["cat"][0], leaked)
    make_class_folders(tmp_path / "test", {"owl": 2})  # nothing to train an owl on

    report = scan_dataset(tmp_path)

    leakage = report.problems_of("split_leakage")
    assert [problem.paths for problem in leakage] == [(leaked,)]
    assert "in train" in leakage[0].message and "in val" in leakage[0].message
    assert made["cat"][0] in {record.path for record in report.usable_records()}
    (owls,) = report.problems_of("empty_class")
    assert owls.label == "owl" and owls.excluded and len(owls.paths) == 2
    assert report.class_counts == {"cat": 7, "dog": 7, "owl": 0}


def test_csv_rows_for_missing_files_are_unreadable(tmp_path: Path) -> None:
    draw(tmp_path / "a.png", seed=1)
    draw(tmp_path / "b.png", seed=2)
    csv_path = write_bytes(tmp_path / "labels.csv", b"path,label\na.png,cat\nb.png,dog\ngone.png,dog\n")

    report = scan_dataset(csv_path)

    (missing,) = report.problems_of("unreadable")
    assert missing.paths == (tmp_path / "gone.png",) and missing.message == "file not found"
    assert report.class_counts == {"cat": 1, "dog": 1}
    assert "gone.png: file not found" in report.to_text()


def test_report_round_trips_through_json(messy: Path) -> None:
    report = scan_dataset(messy)

    payload = json.loads(json.dumps(report.to_dict()))

    assert payload["schema_version"] == 1
    assert HealthReport.from_dict(payload) == report


def test_text_report_reads_as_a_report(messy: Path) -> None:
    text = scan_dataset(messy).to_text()

    assert text.startswith(f"Dataset health report for {messy.resolve()}\n")
    assert "31 files, 22 usable images in 4 classes; 9 left out of training" in text
    assert "  cat   14\n" in text and "  fish  0\n" in text
    assert "Truncated images [error]: 2 files, left out of training\n" in text
    assert "  cat/cut.jpg: JPEG data does not end with its end-of-image marker" in text
    assert "Very small images [warning]: 1 file, kept for training\n" in text
    assert "  the same image is labelled 'bird' and 'dog'; no copy can be trusted\n    bird/ambiguous.png\n" in text
    assert "Classes without usable images [warning]: 1 class\n  fish: no usable images" in text
    assert "Class imbalance [warning]\n  'cat' has 14 usable images" in text
    assert text.index("Truncated images") < text.index("Class imbalance") < text.index("Very small images")


def test_save_writes_json_and_text_that_load_back(messy: Path, tmp_path: Path) -> None:
    report = scan_dataset(messy)

    json_path, text_path = report.save(tmp_path / "project")

    assert (json_path.name, text_path.name) == ("health.json", "health.txt")
    assert text_path.read_text(encoding="utf-8") == report.to_text()
    assert load_report(tmp_path / "project") == report
    assert not list((tmp_path / "project").glob("*.tmp"))


def test_cache_reuses_unchanged_files_without_reading_them(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3})
    cache_file = tmp_path / "project" / "scan_cache.json"
    first = scan_dataset(tmp_path / "data", cache_file=cache_file)
    # Same size, same mtime, different bytes: only a re-read could notice.
    target = made["cat"][0]
    status = target.stat()
    target.write_bytes(b"\x00" * status.st_size)
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))

    second = scan_dataset(tmp_path / "data", cache_file=cache_file)

    assert (first.files_read, first.files_reused) == (6, 0)
    assert (second.files_read, second.files_reused) == (0, 6)
    assert second.records == first.records


def test_cache_rereads_a_changed_file(tmp_path: Path) -> None:
    made = make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3})
    cache_file = tmp_path / "scan_cache.json"
    scan_dataset(tmp_path / "data", cache_file=cache_file)
    truncate(made["dog"][1])
    draw(tmp_path / "data" / "dog" / "new.png", seed=77)
    made["cat"][2].unlink()

    report = scan_dataset(tmp_path / "data", cache_file=cache_file)

    assert (report.files_read, report.files_reused) == (2, 4)
    assert [problem.paths for problem in report.problems_of("truncated")] == [(made["dog"][1],)]
    assert str(made["cat"][2]) not in json.loads(cache_file.read_text())["files"]


def test_a_damaged_cache_is_ignored(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data", {"cat": 2, "dog": 2})
    cache_file = write_bytes(tmp_path / "scan_cache.json", b"{not json")

    report = scan_dataset(tmp_path / "data", cache_file=cache_file)

    assert report.files_read == 4
    assert json.loads(cache_file.read_text())["schema_version"] == 1


def test_progress_reports_every_file(tmp_path: Path) -> None:
    make_class_folders(tmp_path, {"cat": 4, "dog": 3})
    calls: list[tuple[int, int]] = []

    scan_dataset(tmp_path, workers=2, progress=lambda done, total: calls.append((done, total)))

    assert calls == [(done, 7) for done in range(8)]


def test_abort_raises_and_keeps_finished_work_in_the_cache(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data", {"cat": 20, "dog": 20})
    cache_file = tmp_path / "scan_cache.json"
    done_so_far = [0]

    def progress(done: int, total: int) -> None:
        done_so_far[0] = done

    with pytest.raises(ScanAborted, match="aborted after"):
        scan_dataset(
            tmp_path / "data",
            cache_file=cache_file,
            workers=1,
            progress=progress,
            should_abort=lambda: done_so_far[0] >= 3,
        )
    rescan = scan_dataset(tmp_path / "data", cache_file=cache_file)

    assert 3 <= done_so_far[0] < 40
    assert rescan.files_reused == done_so_far[0] and rescan.files_read == 40 - done_so_far[0]
