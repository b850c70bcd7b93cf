"""Transfer Studio: the desktop app (no arguments) and its headless commands (``python main.py COMMAND ...``).

Every command is a module of the ``cli`` package, a thin client of ``engine``; the GUI starts
training and other long jobs through this same command line in child processes. Bad input
gets one line on stderr and exit code 2, before torch loads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cli import build_parser, run_command

DEMO_PROJECT = Path(__file__).resolve().parent / "resources" / "demo"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app or a command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = build_parser().parse_args(argv)
    if arguments.command is None:
        from gui.app import run_app

        return run_app(DEMO_PROJECT)
    # train --nproc starts this script again, in each process, with these arguments.
    arguments.script, arguments.argv = Path(__file__).resolve(), argv
    return run_command(arguments)


if __name__ == "__main__":
    sys.exit(main())
