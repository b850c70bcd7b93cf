"""``main.py train``: train a model, resume a run, or spread one run over processes and machines (torchrun)."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from cli.options import add_config_options, add_events_only_option, config_from_arguments
from cli.parsing import EXIT_OK, Subparsers, add_command, refuse

if TYPE_CHECKING:
    from engine.core.config import RunConfig
    from engine.training.distributed import LaunchOptions

SCALE_OUT = (
    "--nproc N trains data-parallel in N processes on this machine: one per GPU (NCCL), or on the\n"
    "CPU (Gloo), each with an equal share of the cores. A step then averages N x optim.batch_size\n"
    "images; set optim.reference_batch_size to scale the learning rate by the linear rule. On\n"
    "several machines, run the command on each with the options below (README: several machines).")


# Config options a resumed run takes from its own config.yaml instead.
_RESUME_REFUSES = ("backbone", "mode", "lr", "batch_size", "device", "project_dir")


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "train", "train a model (feature extraction or fine-tuning)",
        ["python main.py train resources/demo",
         "python main.py train photos/ --mode fine_tune --epochs 5 --lr 3e-4",
         "python main.py train photos/ --config my.yaml --set optim.batch_size=64",
         "python main.py train photos/ --mode fine_tune --nproc 4   # 4 GPUs, data-parallel",
         "python main.py train --resume photos/.transfer-studio/runs/20261124-101500-resnet18",
         "python main.py train --resume RUN_DIR --epochs 20   # train a finished run further"])
    parser.add_argument("data", nargs="?", help="the dataset (omit with --resume)")
    add_config_options(parser)
    parser.add_argument("--run-dir", metavar="DIR", help="run folder (default: new, in the project's runs folder)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a stopped or killed run from its last checkpoint (with --epochs N: to N in all)")
    add_events_only_option(parser)
    # Named like engine.training.distributed.LaunchOptions' fields, which reads them.
    scale_out = parser.add_argument_group("several processes and machines (through torchrun)", SCALE_OUT)
    scale_out.add_argument("--nproc", type=int, metavar="N", help="processes on this machine")
    scale_out.add_argument("--nnodes", metavar="N|MIN:MAX", help="machines taking part (default 1)")
    scale_out.add_argument("--node-rank", type=int, metavar="R",
                           help="this machine's rank; 0 writes the run folder (static rendezvous)")
    scale_out.add_argument("--master-addr", metavar="HOST", help="address of the node-rank-0 machine")
    scale_out.add_argument("--master-port", type=int, metavar="PORT", help="a free port on that machine")
    scale_out.add_argument("--rdzv-backend", metavar="NAME",
                           help="rendezvous backend, e.g. c10d (any machine may start first)")
    scale_out.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="where the machines meet (c10d)")
    scale_out.add_argument("--rdzv-id", metavar="ID", help="a job id, the same on every machine")
    scale_out.add_argument("--rdzv-conf", metavar="KEY=VALUE,...", help="more rendezvous settings")
    return parser


def run(arguments: argparse.Namespace) -> int:
    if arguments.resume and (arguments.data or arguments.config or arguments.set or arguments.run_dir
                             or any(getattr(arguments, name) is not None for name in _RESUME_REFUSES)):
        return refuse("--resume takes only the run folder (and --epochs to train further); "
                      "its own config.yaml is used")
    if not arguments.resume and not arguments.data:
        return refuse("train needs DATA (a folder or CSV), or --resume RUN_DIR")
    config = None if arguments.resume else config_from_arguments(arguments)  # bad settings fail before torch loads
    if arguments.resume:
        from engine.training.run_lock import check_unlocked

        check_unlocked(arguments.resume)  # a run another process writes is refused before torch loads, too
    from engine.training.distributed import LaunchOptions, is_main_process, launched_by_torchrun
    from engine.training.train import resume, train

    launch_options = LaunchOptions.from_namespace(arguments)
    if launch_options is not None and not launched_by_torchrun():
        return _launch(arguments, launch_options, config)
    echo = sys.stdout if arguments.events_only else None
    progress = not arguments.events_only and sys.stderr.isatty()
    if config is None:
        result = resume(arguments.resume, epochs=arguments.epochs, echo=echo, progress_bar=progress)
    else:
        result = train(config, arguments.run_dir, echo=echo, progress_bar=progress)
    if not arguments.events_only and is_main_process():  # under torchrun, rank 0 speaks for all
        best = f"; best checkpoint: {result.best_checkpoint}" if result.best_checkpoint else ""
        print(f"run {result.state}: {result.run_dir}{best}")
    return EXIT_OK


def _launch(arguments: argparse.Namespace, options: LaunchOptions, config: RunConfig | None) -> int:
    """Start this train command again in every process of a torchrun job, with one run folder for all."""
    from engine.core.paths import project_dir_for
    from engine.training.distributed import launch_training
    from engine.training.runfolder import new_run_dir

    run_dir = None  # --resume names its folder
    if config is not None:
        run_dir = arguments.run_dir or new_run_dir(project_dir_for(config.data.path), config.model.backbone)
    return launch_training(options, arguments.script, arguments.argv, run_dir=run_dir,
                           log=None if arguments.events_only else functools.partial(print, flush=True))
