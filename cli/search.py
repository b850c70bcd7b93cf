"""``main.py search``: coarse-to-fine random search of hyperparameters (Optuna); resumable and shareable."""

from __future__ import annotations

import argparse
import sys

from cli.options import add_config_options, add_events_only_option, config_from_arguments
from cli.parsing import EXIT_OK, Subparsers, add_command


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "search", "coarse-to-fine random search of hyperparameters (Optuna); resumable, shareable",
        ["python main.py search photos/ --trials 30 --jobs 2",
         "python main.py search photos/ --config search.yaml --study lr-wd",
         "python main.py search photos/ --study lr-wd            # resume it",
         "# two machines, one study, a journal file on a shared disk:",
         "python main.py search /shared/photos --study big --storage journal:/shared/big.log",
         "python main.py search /shared/photos --study big --storage journal:/shared/big.log --worker"],
        description="Each trial is a normal run folder under DATA/.transfer-studio/searches/STUDY/trials. The space, "
                    "the stage sizes and the metric are the config's search section (main.py config --default).")
    parser.add_argument("data", help="the dataset")
    add_config_options(parser)
    parser.add_argument("--study", metavar="NAME", help="study name (default: new); the same name resumes it")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage: default a SQLite file in the search folder; journal:FILE (shared disk), "
                             "postgresql://... or mysql://... for workers on several machines")
    parser.add_argument("--trials", type=int, metavar="N", help="total trials (split coarse:fine as in the config)")
    parser.add_argument("--jobs", type=int, default=1, metavar="J", help="trials at once on this machine (processes)")
    parser.add_argument("--worker", action="store_true",
                        help="join a running study as one more worker (another machine or terminal)")
    add_events_only_option(parser)
    return parser


def run(arguments: argparse.Namespace) -> int:
    given = any((arguments.config, arguments.set, arguments.backbone, arguments.mode, arguments.epochs, arguments.lr,
                 arguments.batch_size))
    # Without settings a rerun resumes the study with the config it was created with.
    config = config_from_arguments(arguments) if given or not arguments.study else None
    from engine.search.run import run_search

    result = run_search(arguments.data, config, study=arguments.study, storage=arguments.storage,
                        trials=arguments.trials, jobs=arguments.jobs, worker=arguments.worker,
                        echo=sys.stdout if arguments.events_only else None,
                        log=None if arguments.events_only else print)  # a line per trial as it happens
    if not arguments.events_only:
        print(result.report.read_text(encoding="utf-8") if result.report else f"search {result.state}: {result.folder}")
        print(f"resume or join: python main.py search {arguments.data} --study {result.study} "
              f"--storage {result.storage}")
    return EXIT_OK
