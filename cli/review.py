"""``main.py review``: the data doctor: label issues, near-duplicates and outliers of a dataset, as a CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.options import add_project_dir_option, open_project
from cli.parsing import EXIT_OK, Subparsers, add_command, refuse

DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # engine.review.features.DEFAULT_BACKBONE, named without importing torch


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "review",
                         "find mislabelled photos, near-duplicates and outliers from backbone features",
                         ["python main.py review photos/",
                          "python main.py review photos/ --csv findings.csv --json findings.json"])
    parser.add_argument("data", help="folder of class folders, folder of train/val/test folders, or a CSV")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE,
                        help=f"timm model whose features are compared (default {DEFAULT_BACKBONE})")
    parser.add_argument("--csv", metavar="FILE", help="where the findings go (default: the project's review.csv)")
    parser.add_argument("--json", metavar="FILE", help="also write the findings as JSON here")
    add_project_dir_option(parser)
    return parser


def run(arguments: argparse.Namespace) -> int:
    if not Path(arguments.data).exists():
        return refuse(f"data: {arguments.data} does not exist (expected a folder of class folders, or a CSV)")
    from engine.review.findings import review_dataset

    project_dir = open_project(arguments, arguments.data)
    csv_path = Path(arguments.csv) if arguments.csv else project_dir / "review.csv"
    report = review_dataset(arguments.data, arguments.backbone, project_dir=project_dir,
                            log=lambda line: print(line, file=sys.stderr))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    report.save_csv(csv_path)
    saved = [str(csv_path)]
    if arguments.json:
        report.save_json(arguments.json)
        saved.append(arguments.json)
    print(report.summary())
    print(f"\nfindings saved to {' and '.join(saved)}")
    return EXIT_OK
