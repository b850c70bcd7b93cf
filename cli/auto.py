"""``main.py auto``: the best model the data and a wall-clock budget allow, as a plan of ordinary runs.

The last line on stdout names the model to use (``recommended model: PATH``), a checkpoint or
an ensemble manifest that ``predict``, ``evaluate`` and ``export`` accept. A stop (SIGTERM,
Ctrl+C) keeps the best model so far, names it and exits 1; ``--resume AUTO_DIR`` goes on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cli.options import add_project_dir_option, open_project
from cli.parsing import EXIT_FAILED, EXIT_OK, Subparsers, add_command, refuse
from engine.auto.budget import parse_budget
from engine.core.config import DEVICES, RunConfig, load_config, parse_override
from engine.core.errors import ConfigError

DEFAULT_BUDGET = "10m"


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "auto", "train the best model a time budget allows (plan, runs, ensemble, report)",
        ["python main.py auto photos/ --budget 10m",
         "python main.py auto photos/ --budget 1h30m --backbone resnet50",
         "python main.py auto --resume photos/.transfer-studio/auto/20261124-101500"],
        description="Scans the data, trains a feature-extraction baseline, measures the device, fine-tunes as far as "
                    "the budget allows, ensembles the runs when that wins on validation, and writes a report. Every "
                    "step is an ordinary run in the project's runs folder.")
    parser.add_argument("data", nargs="?", help="the dataset (omit with --resume)")
    parser.add_argument("--budget", type=_budget, metavar="TIME",
                        help=f"wall-clock budget, e.g. 90s, 10m, 1h30m (default {DEFAULT_BUDGET}; with --resume: "
                             "what is left of it)")
    parser.add_argument("--resume", metavar="AUTO_DIR", help="go on with a stopped Auto folder's plan")
    parser.add_argument("--config", metavar="FILE", help="YAML config every step starts from")
    parser.add_argument("--backbone", help="timm model name (model.backbone)")
    parser.add_argument("--device", choices=DEVICES, help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda or mps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field every step starts from, e.g. --set data.num_workers=0 (repeatable)")
    add_project_dir_option(parser)
    return parser


def _budget(text: str) -> float:
    """``--budget``: argparse turns the ConfigError's ValueError into a one-line usage error, exit 2."""
    try:
        return parse_budget(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--budget: ")) from None


def run(arguments: argparse.Namespace) -> int:
    started = time.monotonic()  # the budget counts from here
    if arguments.resume:
        if arguments.data or arguments.config or arguments.set or arguments.backbone or arguments.device \
                or arguments.project_dir or arguments.budget is not None:
            return refuse("--resume takes only the Auto folder; its plan, settings and budget are used")
        from engine.auto.state import AutoFolder

        AutoFolder.open(arguments.resume)  # not an Auto folder: refused before torch loads
    elif not arguments.data:
        return refuse("auto needs DATA (a folder or CSV), or --resume AUTO_DIR")
    base = None if arguments.resume else _base_config(arguments)  # bad settings fail before torch loads, too
    from engine.auto.runner import DataRefused, resume_auto, start_auto

    try:
        if base is None:
            result = resume_auto(arguments.resume, started=started, log=_say)
        else:
            result = start_auto(base, arguments.budget or parse_budget(DEFAULT_BUDGET), started=started, log=_say)
    except DataRefused as refusal:  # the data doctor's verdict, not a usage error
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_FAILED
    resume = f"python main.py auto --resume {result.folder}"
    if result.recommended is None:
        print(f"no model: Auto {result.state} before any run saved one; to go on: {resume}", file=sys.stderr)
        return EXIT_FAILED
    if result.state == "stopped":
        print(f"stopped during {result.stopped_at}; to go on: {resume}", file=sys.stderr)
    print(f"recommended model: {result.recommended}", flush=True)
    return EXIT_FAILED if result.state == "stopped" else EXIT_OK


def _base_config(arguments: argparse.Namespace) -> RunConfig:
    """The settings every step starts from: the config file, the flags, ``--set``; checked before torch loads.

    Raises:
        ConfigError: a bad config file or value. DatasetError: DATA does not exist.
    """
    from engine.core.errors import DatasetError

    data = Path(arguments.data).expanduser().resolve()
    if not data.exists():
        raise DatasetError(f"data folder not found: {arguments.data}")
    open_project(arguments, data)
    changes = {"data.path": str(data)}
    flags = {"model.backbone": arguments.backbone, "device": arguments.device}
    changes.update({key: value for key, value in flags.items() if value is not None})
    changes.update(dict(parse_override(item) for item in arguments.set))
    config = load_config(arguments.config) if arguments.config else RunConfig()
    return config.with_changes(**changes)


def _say(line: str) -> None:
    print(line, flush=True)  # flushed: a stop (or the GUI reading the pipe) sees each step as it happens
