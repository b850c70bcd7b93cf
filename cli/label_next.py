"""``main.py label-next``: which unlabelled photos to label next, as a ranked CSV; then adding their labels, with undo.

Ranking needs DATA, UNLABELLED_DIR and ``--model``. ``--add-labels FILE`` adds the photos of a CSV with the
columns path,label (the ranked CSV once its label column is filled in) to DATA; ``--undo-labels`` takes back
the latest batch added.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from cli.options import add_device_option, add_project_dir_option, add_tta_option, open_project
from cli.parsing import EXIT_OK, Subparsers, add_command, refuse, stops_cleanly


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "label-next", "rank unlabelled photos for labelling: uncertain ones, no near-copies",
        ["python main.py label-next photos/ new_photos/ --model photos/.transfer-studio/runs/RUN --count 20",
         "python main.py label-next photos/ new_photos/ --model ensemble.json --csv next.csv",
         "python main.py label-next photos/ --add-labels next.csv      # after filling in its label column",
         "python main.py label-next photos/ --undo-labels"])
    parser.add_argument("data", help="folder of class folders, folder of train/val/test folders, or a CSV")
    parser.add_argument("unlabelled", nargs="?", metavar="UNLABELLED_DIR", help="folder of photos to rank")
    parser.add_argument("--model", help="a .safetensors checkpoint, a run folder (its best) or an ensemble manifest")
    parser.add_argument("--count", type=_positive, default=20, help="photos to pick for labelling (default 20)")
    parser.add_argument("--csv", metavar="FILE", help="where the ranking goes (default: the project's label_next.csv)")
    parser.add_argument("--add-labels", metavar="FILE",
                        help="add the photos of this CSV (columns path,label; rows without a label are skipped) "
                             "to DATA: copies into class folders, or rows of DATA's CSV")
    parser.add_argument("--undo-labels", action="store_true", help="take back the latest photos added to DATA")
    add_tta_option(parser)
    add_device_option(parser)
    add_project_dir_option(parser)
    return parser


@stops_cleanly
def run(arguments: argparse.Namespace) -> int:
    if not Path(arguments.data).exists():
        return refuse(f"data: {arguments.data} does not exist (expected a folder of class folders, or a CSV)")
    if arguments.undo_labels or arguments.add_labels:
        if arguments.unlabelled or arguments.model or (arguments.undo_labels and arguments.add_labels):
            return refuse("--add-labels and --undo-labels take DATA alone (no UNLABELLED_DIR, --model or each other)")
        return undo_added_photos(arguments) if arguments.undo_labels else add_labelled_photos(arguments)
    if not arguments.unlabelled or not arguments.model:
        return refuse("label-next needs DATA, UNLABELLED_DIR and --model (or --add-labels FILE, or --undo-labels)")
    from engine.evaluation.predictions import collect_image_paths

    collect_image_paths([arguments.unlabelled])  # no photo there is refused before torch loads
    return rank_photos(arguments)


def rank_photos(arguments: argparse.Namespace) -> int:
    """Rank the photos of UNLABELLED_DIR, write the CSV, print the batch and the photos skipped."""
    from engine.evaluation.label_next import rank_unlabelled

    project = open_project(arguments, arguments.data)
    csv_path = Path(arguments.csv) if arguments.csv else project / "label_next.csv"
    ranking = rank_unlabelled(arguments.data, arguments.unlabelled, arguments.model, count=arguments.count,
                              project_dir=project, device=arguments.device, tta=arguments.tta,
                              log=lambda line: print(line, file=sys.stderr))
    for path, reason in ranking.failed:
        print(f"{path}: {reason}; skipped", file=sys.stderr)
    ranking.save_csv(csv_path)
    print(ranking.summary())
    print(f"\nranking saved to {csv_path} (fill in its label column, then: --add-labels {csv_path})")
    return EXIT_OK


def add_labelled_photos(arguments: argparse.Namespace) -> int:
    """Add the labelled rows of ``--add-labels`` to DATA."""
    from engine.data.labelling import add_labels

    labels = _labels_from_csv(Path(arguments.add_labels))
    if labels is None:
        return refuse(f"--add-labels: {arguments.add_labels} is not a readable CSV with the columns path,label")
    done = add_labels(arguments.data, open_project(arguments, arguments.data), labels)
    for line in done.skipped:
        print(line, file=sys.stderr)
    for addition in done.added:
        print(f"{addition.source} -> {addition.label} ({addition.target})")
    print(f"added {len(done.added)} of {len(labels)} labelled photos (undo: --undo-labels)")
    return EXIT_OK


def undo_added_photos(arguments: argparse.Namespace) -> int:
    """Take back the latest batch added to DATA."""
    from engine.data.labelling import undo_last_labels

    done = undo_last_labels(open_project(arguments, arguments.data))
    for line in done.skipped:
        print(line, file=sys.stderr)
    print(f"took back {len(done.added)} added photos")
    return EXIT_OK


def _labels_from_csv(file: Path) -> dict[Path, str] | None:
    """``{photo: label}`` of the rows with a label (relative paths from the CSV's folder); None if unreadable."""
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not {"path", "label"} <= set(reader.fieldnames or ()):
        return None
    return {file.parent / row["path"].strip(): row["label"].strip() for row in rows
            if (row["label"] or "").strip() and (row["path"] or "").strip()}


def _positive(text: str) -> int:
    """``--count``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value
