"""``main.py lr-find``: the learning-rate range test; sweeps the rate and suggests one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.options import add_config_options, add_events_only_option, config_from_arguments
from cli.parsing import EXIT_OK, Subparsers, add_command, stops_cleanly


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "lr-find", "learning-rate range test: sweep the rate, suggest one",
                         ["python main.py lr-find resources/demo",
                          "python main.py lr-find photos/ --mode fine_tune --steps 150 --out lr-sweep"])
    parser.add_argument("data", help="the dataset")
    add_config_options(parser)
    parser.add_argument("--out", metavar="DIR", help="output folder (default: new, in DATA/.transfer-studio/lr-find)")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="first rate of the sweep (default 1e-7)")
    parser.add_argument("--end-lr", type=float, default=10.0, help="last rate of the sweep (default 10)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep (default 100)")
    add_events_only_option(parser)
    return parser


@stops_cleanly
def run(arguments: argparse.Namespace) -> int:
    config = config_from_arguments(arguments)
    from engine.core.paths import project_dir_for
    from engine.training.lr_finder import find_learning_rate
    from engine.training.runfolder import new_run_dir

    out = Path(arguments.out) if arguments.out else new_run_dir(project_dir_for(config.data.path),
                                                                config.model.backbone, kind="lr-find")
    echo = sys.stdout if arguments.events_only else None
    result = find_learning_rate(config, out, start_lr=arguments.start_lr, end_lr=arguments.end_lr,
                                num_steps=arguments.steps, echo=echo)
    if arguments.events_only:
        return EXIT_OK
    if result.state == "cancelled":
        print(f"lr-find cancelled: {result.out_dir}")
        return EXIT_OK
    print(result.reason)
    print(f"curve: {result.plot_path} and {result.csv_path}")
    if result.suggestion is not None:
        print(f"to train with it: python main.py train {arguments.data} --lr {result.learning_rate_setting:.1g}")
    return EXIT_OK
