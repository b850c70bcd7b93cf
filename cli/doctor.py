"""``main.py doctor --list``: the training doctor's checks and what each one watches."""

from __future__ import annotations

import argparse
import textwrap

from cli.parsing import EXIT_OK, Subparsers, add_command


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "doctor", "list the training doctor's checks and what each one watches",
                         ["python main.py doctor --list",
                          "python main.py train photos/ --set doctor.checks=[divergence,overfitting]"])
    parser.add_argument("--list", action="store_true", required=True, help="list every check")
    return parser


def run(arguments: argparse.Namespace) -> int:
    from engine.training.doctor import list_checks

    for check in list_checks():
        print(f"{check.name}  ({check.title})")
        print(textwrap.indent(textwrap.fill(check.description, 88), "    "))
    return EXIT_OK
