"""``main.py config``: print the commented default config, or check a config file."""

from __future__ import annotations

import argparse
import sys

from cli.parsing import EXIT_OK, Subparsers, add_command


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "config", "print the default config, or check a config file",
                         ["python main.py config --default > my.yaml", "python main.py config --check my.yaml"])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--default", action="store_true", help="print the commented default config")
    action.add_argument("--check", metavar="FILE", help="validate a config file")
    return parser


def run(arguments: argparse.Namespace) -> int:
    from engine.core.config import RunConfig, load_config, to_yaml

    if arguments.default:
        sys.stdout.write(to_yaml(RunConfig()))
    else:
        load_config(arguments.check)
        print(f"{arguments.check}: valid")
    return EXIT_OK
