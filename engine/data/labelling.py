"""Add newly labelled photos to a dataset, with undo: a copy in the class folder, or a row appended to the CSV.

Each addition is written to ``labels_added.jsonl`` in the project folder *before* the photo is copied or the CSV
rewritten, so an interrupted batch can still be undone. Undo takes back the latest batch: it deletes each copy that
still holds the bytes that were copied (same SHA-256) and removes each appended row still in the CSV. A photo whose
content the dataset already holds is not added again, and no file is overwritten: a name taken in the class folder
gets a numbered one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.atomic import atomic_write_text
from engine.core.errors import DatasetError
from engine.data.discovery import DatasetSource, discover_dataset
from engine.data.health import scan_dataset
from engine.data.images import ImageFileError, inspect_bytes
from engine.data.prepare import SCAN_CACHE_NAME
from engine.data.undo_log import append_entry, free_name, read_entries, rewrite_entries

LABELS_LOG_NAME = "labels_added.jsonl"


@dataclass(frozen=True)
class LabelAdded:
    """One photo added to a dataset.

    Attributes:
        source: the photo as it was given.
        label: its class.
        target: its copy in the class folder; for a CSV dataset, the CSV file.
        sha256: hex digest of the bytes added (the copy holds exactly these).
        row: the line appended to the CSV, without its line ending; "" for a copy.
    """

    source: Path
    label: str
    target: Path
    sha256: str
    row: str = ""


@dataclass
class LabelsDone:
    """What adding labels, or undoing them, did.

    Attributes:
        added: the photos added (for an undo: the additions taken back).
        skipped: photos left as they were, each with the reason, in words.
    """

    added: list[LabelAdded] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def labels_log(project_dir: str | Path) -> Path:
    """The log of added labels in ``project_dir`` (which may not exist yet)."""
    return Path(project_dir) / LABELS_LOG_NAME


def labelled_hashes(data_path: str | Path, project_dir: str | Path) -> dict[str, Path]:
    """``{sha256: file}`` of every file the dataset lists, usable or not, from a scan that reuses the project's cache.

    Raises:
        DatasetError: the data path cannot be used.
    """
    report = scan_dataset(data_path, cache_file=Path(project_dir) / SCAN_CACHE_NAME)
    return {record.sha256: record.path for record in report.records if record.sha256}


def add_labels(data_path: str | Path, project_dir: str | Path, labels: Mapping[Path, str]) -> LabelsDone:
    """Add each photo of ``labels`` (``{photo: class}``) to the dataset, as one batch that one undo takes back.

    A folder dataset gets a copy of the photo in its class folder (``train/<class>/`` when the data is pre-split);
    a CSV dataset gets a row naming the photo where it is (relative to the CSV's folder when inside it). Photos
    that cannot be read, are not sound images, or whose content the dataset already holds are skipped.

    Raises:
        DatasetError: a class the dataset does not have (new classes need their folder, or a row, made by hand),
            or the data cannot be used.
        OSError: a copy or the CSV could not be written; the additions before it are logged and undoable.
    """
    source = discover_dataset(data_path)
    unknown = sorted({label for label in labels.values() if label not in source.classes})
    if unknown:
        raise DatasetError(f"{source.root}: no class {', '.join(map(repr, unknown))}; "
                           f"expected one of {', '.join(source.classes)}")
    project_dir = Path(project_dir)
    held = labelled_hashes(data_path, project_dir)
    listed = {sample.path for sample in source.files}
    batch = f"{time.time_ns()}"
    done = LabelsDone()
    rows: list[str] = []
    for given, label in sorted(labels.items(), key=lambda item: str(item[0])):
        photo = Path(os.path.abspath(given))
        content = _content_to_add(photo, listed, held, done.skipped)
        if content is None:
            continue
        digest = hashlib.sha256(content).hexdigest()
        held[digest] = photo  # the same photo twice in one batch is added once
        if source.layout == "csv":
            addition = LabelAdded(photo, label, source.root, digest, _csv_row(source.root, photo, label))
        else:
            addition = LabelAdded(photo, label, free_name(_class_folder(source, label) / photo.name), digest)
        append_entry(labels_log(project_dir), _as_json(batch, addition))
        if addition.row:
            rows.append(addition.row)
        else:
            _copy(content, addition.target)
        done.added.append(addition)
    if rows:
        _append_rows(source.root, rows)
    return done


def undo_last_labels(project_dir: str | Path) -> LabelsDone:
    """Take back the latest batch of added labels: delete its copies and remove its CSV rows.

    A copy whose bytes changed since is kept, and a row no longer in the CSV is left; both are reported
    in ``skipped``. The batch then leaves the log, so the next undo takes back the one before.

    Raises:
        DatasetError: there is nothing to undo, or the log is damaged.
        OSError: a copy could not be deleted or the CSV or the log rewritten.
    """
    project_dir = Path(project_dir)
    entries = read_entries(labels_log(project_dir), _parse, what="added label")
    if not entries:
        raise DatasetError(f"{labels_log(project_dir)}: no added labels to undo")
    batch = entries[-1][0]
    latest = [addition for entry_batch, addition in entries if entry_batch == batch]
    done = LabelsDone()
    for addition in reversed([addition for addition in latest if not addition.row]):
        _remove_copy(addition, done)
    rows = [addition for addition in latest if addition.row]
    if rows:
        _remove_rows(rows, done)
    rewrite_entries(labels_log(project_dir),
                    [_as_json(entry_batch, addition) for entry_batch, addition in entries if entry_batch != batch])
    return done


def _content_to_add(photo: Path, listed: set[Path], held: dict[str, Path], skipped: list[str]) -> bytes | None:
    """The photo's bytes when it may be added; else None, with the reason appended to ``skipped``."""
    if photo in listed:
        skipped.append(f"{photo}: already in the dataset; not added")
        return None
    try:
        content = photo.read_bytes()
        inspect_bytes(content, name=photo)
    except OSError as error:
        skipped.append(f"{photo}: cannot be read ({error.strerror or error}); not added")
        return None
    except ImageFileError as error:
        skipped.append(f"{photo}: {error.reason}; not added")
        return None
    copy = held.get(hashlib.sha256(content).hexdigest())
    if copy is not None:
        skipped.append(f"{photo}: already in the dataset as {copy}; not added")
        return None
    return content


def _class_folder(source: DatasetSource, label: str) -> Path:
    if source.layout == "presplit":
        # Discovery found a train folder (any case): new photos are for training, never for val or test.
        train = next(folder for folder in sorted(source.root.iterdir()) if folder.is_dir()
                     and folder.name.lower() == "train")
        return train / label
    return source.root / label


def _copy(content: bytes, target: Path) -> None:
    """Write a new file; exclusive creation, so a file that appeared meanwhile is never overwritten."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target.open("xb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except FileExistsError:
        raise  # another file took the name: it is not ours to delete
    except OSError:
        target.unlink(missing_ok=True)  # half a copy would be kept by undo, as it differs from the photo
        raise


def _csv_row(csv_path: Path, photo: Path, label: str) -> str:
    """The CSV line naming ``photo`` with ``label``, in the columns of the CSV's header (other columns empty)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        columns = [cell.strip().lower() for cell in next(csv.reader(handle))]
    try:
        value = photo.relative_to(csv_path.parent).as_posix()
    except ValueError:
        value = str(photo)
    cells = [""] * len(columns)
    cells[columns.index("path")] = value
    cells[columns.index("label")] = label
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()


def _append_rows(csv_path: Path, rows: list[str]) -> None:
    # Decoded by hand rather than read_text: universal newlines would turn the file's \r\n into \n.
    text = csv_path.read_bytes().decode("utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith(("\n", "\r")):
        text += newline
    atomic_write_text(csv_path, text + "".join(row + newline for row in rows))


def _remove_copy(addition: LabelAdded, done: LabelsDone) -> None:
    try:
        content = addition.target.read_bytes()
    except FileNotFoundError:
        return  # never copied (the batch stopped before it), or deleted since: nothing to take back
    if hashlib.sha256(content).hexdigest() != addition.sha256:
        done.skipped.append(f"{addition.target}: changed since it was added; kept")
        return
    addition.target.unlink()
    done.added.append(addition)


def _remove_rows(rows: list[LabelAdded], done: LabelsDone) -> None:
    """Remove the last occurrence of each appended row from its CSV, touching no other line."""
    csv_path = rows[0].target
    try:
        lines = csv_path.read_bytes().decode("utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        done.skipped.extend(f"{csv_path}: missing, so the row of {addition.source} cannot be removed"
                            for addition in rows)
        return
    removed = 0
    for addition in reversed(rows):
        found = [number for number, line in enumerate(lines) if line.rstrip("\r\n") == addition.row]
        if not found:
            done.skipped.append(f"{csv_path}: the row of {addition.source} is not there any more")
            continue
        del lines[found[-1]]
        removed += 1
        done.added.append(addition)
    if removed:
        atomic_write_text(csv_path, "".join(lines))


def _as_json(batch: str, addition: LabelAdded) -> dict[str, str]:
    return {"batch": batch, "source": str(addition.source), "label": addition.label, "target": str(addition.target),
            "sha256": addition.sha256, "row": addition.row}


def _parse(item: dict[str, Any]) -> tuple[str, LabelAdded]:
    return str(item["batch"]), LabelAdded(Path(item["source"]), str(item["label"]), Path(item["target"]),
                                          str(item["sha256"]), str(item["row"]))
