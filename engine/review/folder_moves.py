"""Apply the project's relabels to the data folder: move each relabelled photo into its new class folder, with undo.

Relabels are kept in ``relabels.json`` until the user asks for the folders to say the same. Each move
is written to ``folder_moves.jsonl`` *before* the file moves, so an interrupted apply can still be
undone: undo moves back every file of the latest apply whose new place holds it, and puts its
relabel entry back. A file is never overwritten: a name taken in the new folder gets a numbered one.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import DatasetError
from engine.data.discovery import discover_dataset
from engine.data.exclusions import load_exclusions, save_exclusions
from engine.data.relabels import load_relabels, save_relabels
from engine.data.undo_log import append_entry, free_name, read_entries, rewrite_entries

MOVES_LOG_NAME = "folder_moves.jsonl"


@dataclass(frozen=True)
class FolderMove:
    """One photo moved between class folders."""

    source: Path
    target: Path
    label_from: str
    label_to: str


@dataclass
class MovesDone:
    """What an apply or an undo did.

    Attributes:
        moved: the moves made (for an undo: target back to source).
        skipped: photos not moved, each with the reason, in words.
    """

    moved: list[FolderMove] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def moves_log(project_dir: str | Path) -> Path:
    """The log of folder moves in ``project_dir`` (which may not exist yet)."""
    return Path(project_dir) / MOVES_LOG_NAME


def apply_relabels_to_folders(data_path: str | Path, project_dir: str | Path) -> MovesDone:
    """Move every relabelled photo of a folder dataset into the folder of its new class.

    The photo keeps its name and its split folder (``train/cat/a.jpg`` relabelled ``dog`` goes to
    ``train/dog/a.jpg``); its relabel entry is removed and an exclusion follows it.

    Raises:
        DatasetError: the dataset is a CSV (its relabels stay in the project; export them as CSV), or
            the relabels file is damaged.
        OSError: a file could not be moved or the log written; the moves before it are logged and undoable.
    """
    source = discover_dataset(data_path)
    if source.layout == "csv":
        raise DatasetError(f"{source.root}: a CSV dataset has no class folders to move photos between; its relabels "
                           "stay in the project and apply to every run (export them as CSV to edit the file)")
    project_dir = Path(project_dir)
    relabels = load_relabels(project_dir)
    labels = {sample.path: sample.label for sample in source.files}
    depth = 1 if source.layout == "presplit" else 0  # where the class folder is, below the data folder
    batch = f"{time.time_ns()}"
    done = MovesDone()
    for path, label in sorted(relabels.items()):
        given = labels.get(path)
        if given is None:
            done.skipped.append(f"{path}: not in the data folder any more")
            continue
        if given == label:
            continue
        parts = path.relative_to(source.root).parts
        target = free_name(source.root.joinpath(*parts[:depth], label, *parts[depth + 1:]))
        move = FolderMove(path, target, given, label)
        append_entry(moves_log(project_dir), _as_json(batch, move))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        done.moved.append(move)
    _follow(project_dir, relabels, done.moved, forward=True)
    return done


def undo_last_apply(project_dir: str | Path) -> MovesDone:
    """Move the photos of the latest apply back to their old class folders, and restore their relabels.

    Raises:
        DatasetError: there is no apply to undo, or the log is damaged.
        OSError: a file could not be moved back or the log rewritten.
    """
    project_dir = Path(project_dir)
    entries = read_entries(moves_log(project_dir), _parse, what="folder move")
    if not entries:
        raise DatasetError(f"{moves_log(project_dir)}: no folder moves to undo")
    batch = entries[-1][0]
    done = MovesDone()
    for _, move in reversed([entry for entry in entries if entry[0] == batch]):
        if move.source.exists():
            if move.target.exists():
                done.skipped.append(f"{move.target}: not moved back, {move.source} exists again")
            continue  # the apply stopped before this move
        if not move.target.exists():
            done.skipped.append(f"{move.target}: not there any more, so {move.source.name} cannot be moved back")
            continue
        move.source.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(move.target, move.source)
        done.moved.append(move)
    _follow(project_dir, load_relabels(project_dir), done.moved, forward=False)
    rewrite_entries(moves_log(project_dir),
                    [_as_json(entry_batch, move) for entry_batch, move in entries if entry_batch != batch])
    return done


def _follow(project_dir: Path, relabels: dict[Path, str], moves: list[FolderMove], *, forward: bool) -> None:
    """Update the relabels and exclusions for files that moved (forward: apply; else undo)."""
    excluded = set(load_exclusions(project_dir))
    for move in moves:
        old, new = (move.source, move.target) if forward else (move.target, move.source)
        if forward:
            relabels.pop(move.source, None)
        else:
            relabels[move.source] = move.label_to
        if old in excluded:
            excluded.discard(old)
            excluded.add(new)
    save_relabels(project_dir, relabels)
    save_exclusions(project_dir, excluded)


def _as_json(batch: str, move: FolderMove) -> dict[str, str]:
    return {"batch": batch, "source": str(move.source), "target": str(move.target),
            "label_from": move.label_from, "label_to": move.label_to}


def _parse(item: dict[str, Any]) -> tuple[str, FolderMove]:
    return str(item["batch"]), FolderMove(Path(item["source"]), Path(item["target"]), str(item["label_from"]),
                                          str(item["label_to"]))
