"""``main.py sanity``: check that the model can memorise a small sample; exit code 1 when it cannot."""

from __future__ import annotations

import argparse
import sys

from cli.options import add_config_options, add_events_only_option, config_from_arguments
from cli.parsing import EXIT_FAILED, EXIT_OK, Subparsers, add_command


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "sanity", "check that the model can memorise a small sample (it must reach 100%%)",
                         ["python main.py sanity resources/demo", "python main.py sanity photos/ --images 40"])
    parser.add_argument("data", help="the dataset")
    add_config_options(parser)
    parser.add_argument("--out", metavar="DIR", help="also write events into this new folder")
    parser.add_argument("--images", type=int, default=20, help="sample size (default 20)")
    parser.add_argument("--max-steps", type=int, default=300, help="give up after this many steps (default 300)")
    add_events_only_option(parser)
    return parser


def run(arguments: argparse.Namespace) -> int:
    config = config_from_arguments(arguments)
    from engine.training.sanity import run_sanity_check

    echo = sys.stdout if arguments.events_only else None
    result = run_sanity_check(config, num_images=arguments.images, max_steps=arguments.max_steps,
                              out_dir=arguments.out, echo=echo)
    if not arguments.events_only:
        print(result.message)
        for number, cause in enumerate(result.likely_causes, start=1):
            print(f"  {number}. {cause}")
    return EXIT_OK if result.passed else EXIT_FAILED
