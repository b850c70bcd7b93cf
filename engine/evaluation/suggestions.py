"""The photos label-next suggests, as rows of a CSV: written by ``main.py label-next``, read back by the GUI.

Plain data (no torch), so the Review page's labelling view can read what its child process wrote.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import DatasetError

CSV_COLUMNS = ("rank", "path", "guess", "confidence", "margin", "entropy", "already_labelled", "picked", "label")


@dataclass(frozen=True)
class Suggestion:
    """One unlabelled photo, as the model sees it.

    Attributes:
        path: the photo.
        guess: the class the model finds most likely.
        confidence: the probability of ``guess``, in [0, 1].
        margin: top-1 minus top-2 probability, in [0, 1]; small means unsure.
        entropy: Shannon entropy of the probabilities, in nats (0: certain; ln C: uniform).
        already_labelled: the dataset's file with the same content, or None.
        picked: whether the photo is in the batch to label.
    """

    path: Path
    guess: str
    confidence: float
    margin: float
    entropy: float
    already_labelled: Path | None = None
    picked: bool = False


def suggestions_csv(suggestions: Sequence[Suggestion]) -> str:
    """Every suggestion as a row of ``CSV_COLUMNS``, in order, with a header; ``label`` is left to fill in."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, suggestion in enumerate(suggestions, start=1):
        writer.writerow([rank, suggestion.path, suggestion.guess, f"{suggestion.confidence:.6f}",
                         f"{suggestion.margin:.6f}", f"{suggestion.entropy:.6f}",
                         str(suggestion.already_labelled or ""), "yes" if suggestion.picked else "", ""])
    return buffer.getvalue()


def read_suggestions(file: str | Path) -> list[Suggestion]:
    """The suggestions of a label-next CSV, in its order.

    Raises:
        DatasetError: the file cannot be read or lacks a column (the message names the file).
    """
    file = Path(file)
    try:
        with file.open(encoding="utf-8", newline="") as handle:
            return [_suggestion(row) for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{file}: not a label-next list that can be read ({type(error).__name__}: {error})") \
            from error


def _suggestion(row: dict[str, str]) -> Suggestion:
    held = row["already_labelled"]
    return Suggestion(Path(row["path"]), row["guess"], float(row["confidence"]), float(row["margin"]),
                      float(row["entropy"]), Path(held) if held else None, row["picked"] == "yes")
