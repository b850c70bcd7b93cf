"""What the user decided about the data doctor's findings: relabel, exclude or keep, each undoable.

Every decision is written through at once to the project's files, so nothing is lost when the app
stops: a relabel to ``relabels.json`` and an exclusion to ``exclusions.json`` (both honoured by
dataset preparation), a dismissal ("keep: the label is right") to ``review_kept.json``, which the
review page reads to hide findings already looked at. Nothing in the data folder changes here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.core.atomic import atomic_write_json, atomic_write_text
from engine.core.errors import DatasetError
from engine.data.exclusions import load_exclusions, path_from_stored, save_exclusions, stored_path
from engine.data.relabels import load_relabels, save_relabels

KEPT_NAME = "review_kept.json"
SCHEMA_VERSION = 1
CHANGE_COLUMNS = ("path", "action", "given_label", "new_label")


@dataclass(frozen=True)
class _Before:
    """One photo's decisions before an action, which undo puts back."""

    path: Path
    kind: str
    relabel: str | None
    excluded: bool
    kept: bool


class ReviewDecisions:
    """The project's relabels, exclusions and kept findings, changed one photo at a time with undo.

    Args:
        project_dir: the dataset's project folder (created on the first decision).

    Raises:
        DatasetError: one of the three files exists but is damaged (named).
    """

    def __init__(self, project_dir: str | Path) -> None:
        self.project_dir = Path(project_dir)
        self._undo: list[list[_Before]] = []  # one entry per decision, which may cover several photos
        self.reload()

    def reload(self) -> None:
        """Read the three files again (another page or process may have changed them).

        Raises:
            DatasetError: a file is damaged.
        """
        self._relabels = load_relabels(self.project_dir)
        self._excluded = set(load_exclusions(self.project_dir))
        self._kept = _load_kept(self.project_dir)

    def relabel(self, path: Path, label: str) -> None:
        """Give ``path`` the class ``label`` from now on (its file stays where it is)."""
        self.relabel_all([path], label)

    def relabel_all(self, paths: Sequence[Path], label: str) -> None:
        """Give every photo of ``paths`` the class ``label``: one decision, one undo."""
        if not paths:
            return
        self._remember(paths, "")
        for path in paths:
            self._relabels[path] = label
            self._excluded.discard(path)
        self._save()

    def exclude(self, path: Path) -> None:
        """Leave ``path`` out of training and evaluation."""
        self.exclude_all([path])

    def exclude_all(self, paths: Sequence[Path]) -> None:
        """Leave every photo of ``paths`` out: one decision, one undo."""
        if not paths:
            return
        self._remember(paths, "")
        self._excluded.update(paths)
        self._save()

    def keep(self, path: Path, kind: str) -> None:
        """Dismiss the finding of ``kind`` on ``path``: its label is right, do not show it again."""
        self._remember([path], kind)
        self._kept.add((path, kind))
        self._save()

    def undo(self) -> Path | None:
        """Take back the latest decision; return its (first) photo, or None when there is nothing to undo."""
        if not self._undo:
            return None
        decision = self._undo.pop()
        self.reload()
        for before in decision:
            if before.relabel is None:
                self._relabels.pop(before.path, None)
            else:
                self._relabels[before.path] = before.relabel
            (self._excluded.add if before.excluded else self._excluded.discard)(before.path)
            if before.kind:
                (self._kept.add if before.kept else self._kept.discard)((before.path, before.kind))
        self._save()
        return decision[0].path

    @property
    def can_undo(self) -> bool:
        """Whether a decision of this session can be taken back."""
        return bool(self._undo)

    @property
    def undo_target(self) -> Path | None:
        """The photo whose decision ``undo`` takes back next, or None."""
        return self._undo[-1][0].path if self._undo else None

    def status(self, path: Path, kind: str) -> str:
        """The decision on a finding in words: ``relabelled to 'X'``, ``excluded``, ``kept``, or empty."""
        if path in self._excluded:
            return "excluded"
        if path in self._relabels:
            return f"relabelled to '{self._relabels[path]}'"
        return "kept" if (path, kind) in self._kept else ""

    def changes(self, given_labels: Mapping[Path, str]) -> list[dict[str, str]]:
        """Every relabel and exclusion of the project, as rows of ``CHANGE_COLUMNS``.

        Args:
            given_labels: the labels photos had when found (a review's findings); empty where unknown.
        """
        rows = [{"path": str(path), "action": "relabel", "given_label": given_labels.get(path, ""), "new_label": label}
                for path, label in sorted(self._relabels.items())]
        rows += [{"path": str(path), "action": "exclude", "given_label": given_labels.get(path, ""), "new_label": ""}
                 for path in sorted(self._excluded)]
        return rows

    def save_changes_csv(self, file: str | Path, given_labels: Mapping[Path, str]) -> Path:
        """Write ``changes`` as a CSV file (atomically) and return it."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CHANGE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.changes(given_labels))
        return atomic_write_text(file, buffer.getvalue())

    def _remember(self, paths: Sequence[Path], kind: str) -> None:
        self.reload()  # so a change made elsewhere since is kept, not overwritten
        self._undo.append([_Before(path, kind, self._relabels.get(path), path in self._excluded,
                                   (path, kind) in self._kept) for path in paths])

    def _save(self) -> None:
        save_relabels(self.project_dir, self._relabels)
        save_exclusions(self.project_dir, self._excluded)
        kept = sorted((stored_path(path, self.project_dir), kind) for path, kind in self._kept)
        atomic_write_json(self.project_dir / KEPT_NAME, {
            "schema": SCHEMA_VERSION, "kept": [{"path": path, "kind": kind} for path, kind in kept]})


def _load_kept(project_dir: Path) -> set[tuple[Path, str]]:
    file = project_dir / KEPT_NAME
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{file}: cannot read the findings kept as they are ({error})") from error
    entries = payload.get("kept") if isinstance(payload, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("kind"), str)
        for entry in entries
    ):
        raise DatasetError(f"{file}: expected an object with \"kept\": a list of {{\"path\", \"kind\"}} objects")
    return {(path_from_stored(entry["path"], project_dir), entry["kind"]) for entry in entries}
