"""How the command line reads, refuses and stops: exit codes, one-line usage errors, examples, stop signals.

Standard library only (and ``engine.core.stop_signals``, which is too), so that a bad command
line is refused before torch loads.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence

from engine.core.stop_signals import Stopped, stops_raised

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Subparsers = argparse._SubParsersAction  # what add_subparsers returns; argparse does not name it publicly


class CommandParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def examples(*lines: str) -> str:
    """A help epilog listing example command lines, one per line."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_command(subparsers: Subparsers, name: str, summary: str, example_lines: Sequence[str],
                description: str | None = None) -> argparse.ArgumentParser:
    """A command's parser: its one-line summary for the command list, and examples kept as written."""
    return subparsers.add_parser(name, help=summary, description=description, epilog=examples(*example_lines),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def refuse(message: str) -> int:
    """Print a usage error found after parsing (one line on stderr); return the usage exit code."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def stops_cleanly(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command's ``run`` that a stop signal (SIGTERM, SIGINT, SIGHUP) ends at once, with one line and EXIT_FAILED.

    The work must leave no half-written output when ``Stopped`` passes through it (atomic writes,
    staging folders; see ``engine.core.stop_signals``). The line, e.g. ``stopped: SIGTERM received``,
    goes to stderr.
    """

    @functools.wraps(run)
    def stoppable(arguments: argparse.Namespace) -> int:
        with stops_raised():
            try:
                return run(arguments)
            except Stopped as stop:
                print(f"stopped: {stop}", file=sys.stderr)
                return EXIT_FAILED

    return stoppable
