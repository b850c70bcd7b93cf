"""The table of commands, the ``main.py`` parser built from it, and the dispatch to a command's ``run``.

A command is a module of this package with ``register(subparsers)``, which adds its parser
and returns it, and ``run(arguments)``, which does the work and returns the exit code. Adding
one is a new module plus its entry in ``COMMANDS``. Modules import torch, timm and the heavy
engine only inside ``run``, after their arguments were parsed and checked, so a bad command
line is refused in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from cli import (
    auto,
    backbones,
    benchmark,
    cache,
    cam,
    config,
    doctor,
    ensemble,
    evaluate,
    export,
    label_next,
    lr_find,
    predict,
    preview,
    review,
    sanity,
    scan,
    search,
    train,
)
from cli.parsing import EXIT_FAILED, EXIT_USAGE, CommandParser, examples
from engine.core.errors import TransferStudioError

# In the order ``main.py --help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (
    scan, review, label_next, train, auto, lr_find, sanity, preview, predict, evaluate, export, benchmark, ensemble,
    cam, search, config, doctor, backbones, cache,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``main.py`` command line: no command opens the app; each command's ``run`` is its ``handler``.

    ``main.py PROJECT`` (one argument that is no command) is handled before this parser.
    """
    parser = CommandParser(
        prog="main.py", description="Transfer Studio: transfer learning on your own labelled photos.",
        epilog=examples("python main.py                       # open the app on the last project (at first, the demo)",
                        "python main.py photos/               # open the app on a data folder (or a CSV of labels)",
                        "python main.py scan resources/demo",
                        "python main.py train resources/demo --epochs 5"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        command.register(subparsers).set_defaults(handler=command.run)
    return parser


def run_command(arguments: argparse.Namespace) -> int:
    """Run the parsed command; an engine error becomes one line on stderr and exit code 2."""
    try:
        return arguments.handler(arguments)
    except TransferStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
