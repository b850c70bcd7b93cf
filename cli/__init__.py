"""The command line: one module per command, each with ``register(subparsers)`` and ``run(args)``.

``main.py`` is the entry point: it parses with ``build_parser`` and hands a command to
``run_command``; ``cli.commands`` lists the commands and says how to add one. Nothing here
imports torch until a command runs.
"""

from cli.commands import COMMANDS, build_parser, run_command

__all__ = ["COMMANDS", "build_parser", "run_command"]
