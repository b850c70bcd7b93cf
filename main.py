"""Transfer Studio: the desktop app (``python main.py [PROJECT]``) and its headless commands (``main.py COMMAND ...``).

Every command is a module of the ``cli`` package, a thin client of ``engine``; the GUI starts
training and other long jobs through this same command line in child processes. Bad input
gets one line on stderr and exit code 2, before torch loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cli import build_parser, run_command
from cli.parsing import Subparsers, refuse


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app (on a project, as desktop apps open a file) or a command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) == 1 and not argv[0].startswith("-") and argv[0] not in _command_names(parser):
        return _open_app(Path(argv[0]))
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        return _open_app(None)
    # train --nproc starts this script again, in each process, with these arguments.
    arguments.script, arguments.argv = Path(__file__).resolve(), argv
    return run_command(arguments)


def _open_app(project: Path | None) -> int:
    """Start the app on ``project`` (None: the last project, else the demo) once it is known to be one."""
    if project is not None and not project.exists():
        # A bare word may have been meant as a command.
        hint = "" if len(project.parts) > 1 or project.suffix else " (nor a command: see --help)"
        return refuse(f"{project}: no such folder or file{hint}")
    if project is not None and project.is_file() and project.suffix.lower() != ".csv":
        return refuse(f"{project}: not a data folder or a CSV of labels")
    from gui.app import run_app

    return run_app(project)


def _command_names(parser: argparse.ArgumentParser) -> set[str]:
    # argparse keeps its table of commands only on the (private) action that add_subparsers returned.
    return {name for action in parser._actions if isinstance(action, Subparsers) for name in action.choices}


if __name__ == "__main__":
    sys.exit(main())
