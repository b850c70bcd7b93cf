"""``main.py scan``: check a dataset and write its health report."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.options import add_project_dir_option, open_project
from cli.parsing import EXIT_OK, Subparsers, add_command, refuse


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "scan", "check a dataset and write its health report",
                         ["python main.py scan photos/", "python main.py scan labels.csv --json report.json"])
    parser.add_argument("data", help="folder of class folders, folder of train/val/test folders, or a CSV")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON here")
    parser.add_argument("--workers", type=int, default=8, help="threads reading files (default 8)")
    add_project_dir_option(parser)
    return parser


def run(arguments: argparse.Namespace) -> int:
    from engine.data.health import scan_dataset

    if not Path(arguments.data).exists():
        return refuse(f"data: {arguments.data} does not exist (expected a folder of class folders, or a CSV)")
    project = open_project(arguments, arguments.data)
    project.mkdir(parents=True, exist_ok=True)
    report = scan_dataset(arguments.data, cache_file=project / "scan_cache.json", workers=arguments.workers)
    json_path, text_path = report.save(project)
    if arguments.json:
        from engine.core.atomic import atomic_write_json

        atomic_write_json(arguments.json, report.to_dict())
    print(report.to_text())
    print(f"\nreport saved to {text_path} and {json_path}")
    return EXIT_OK
