"""``main.py cache``: show or clear a dataset's decoded-image cache (photos already decoded for fine-tuning)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.parsing import EXIT_OK, Subparsers, add_command, refuse

ACTIONS = ("info", "clear")


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "cache", "show or clear the decoded-image cache of a dataset",
                         ["python main.py cache info photos/", "python main.py cache clear photos/"])
    parser.add_argument("action", choices=ACTIONS, help="info: entries and size; clear: delete them")
    parser.add_argument("data", nargs="?", default=".",
                        help="the dataset (folder or CSV) whose project cache is meant (default: this folder)")
    return parser


def run(arguments: argparse.Namespace) -> int:
    if not Path(arguments.data).exists():
        return refuse(f"data: {arguments.data} does not exist (expected the dataset folder or CSV)")
    from engine.data.decoded_cache import DecodedCache, decoded_cache_dir

    cache = DecodedCache(decoded_cache_dir(arguments.data))
    if arguments.action == "clear":
        cleared = cache.clear()
        print(f"cleared {cleared.entries} decoded images ({cleared.size_bytes / 1e6:.1f} MB) from {cache.root}")
    else:
        usage = cache.usage()
        print(f"{cache.root}: {usage.entries} decoded images, {usage.size_bytes / 1e6:.1f} MB")
    return EXIT_OK
