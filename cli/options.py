"""The options several commands share, each defined once, and the RunConfig built from the config options.

Choices come from the engine's own torch-free tuples, so the parser offers exactly what
the engine accepts and refuses the rest before any heavy import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.core.config import DEVICES, MODES, RunConfig, load_config, parse_override
from engine.core.errors import DatasetError
from engine.evaluation.choices import SPLITS, TTA_MODES


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that builds a RunConfig takes (read by ``config_from_arguments``)."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (see: main.py config --default)")
    parser.add_argument("--backbone", help="timm model name (model.backbone)")
    parser.add_argument("--mode", choices=MODES, help="model.mode")
    parser.add_argument("--epochs", type=int, help="optim.epochs")
    parser.add_argument("--lr", type=float, help="optim.learning_rate")
    parser.add_argument("--batch-size", type=_batch_size, metavar="N|auto",
                        help="optim.batch_size: a number, or auto (the most that fits on a CUDA GPU)")
    parser.add_argument("--device", choices=DEVICES,
                        help="device: auto (CUDA, else Apple MPS, else CPU), cpu, cuda or mps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, e.g. --set model.trainable_stages=3 (repeatable)")
    add_project_dir_option(parser)


def add_project_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--project-dir``: where a dataset's runs, caches and reports go (read by ``open_project``)."""
    parser.add_argument("--project-dir", metavar="DIR",
                        help="the dataset's project folder (runs, caches, reports), remembered for the data folder; "
                             "default DATA/.transfer-studio, or a per-user folder when DATA cannot be written")


def open_project(arguments: argparse.Namespace, data: str | Path) -> Path:
    """The project folder of ``data``: ``--project-dir`` when given (and remembered); says where, when not in DATA.

    Raises:
        ConfigError: ``--project-dir`` is a file or cannot be written.
    """
    from engine.core.paths import choose_project_dir, project_dir_for, project_location_note

    chosen = getattr(arguments, "project_dir", None)
    project = choose_project_dir(data, chosen) if chosen else project_dir_for(data)
    if note := project_location_note(data):
        print(note, file=sys.stderr)
    return project


def _batch_size(text: str) -> int | str:
    """``--batch-size``: a whole number, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def config_from_arguments(arguments: argparse.Namespace) -> RunConfig:
    """The run configuration that DATA and the config options describe, checked before any command's work.

    Raises:
        ConfigError: a config file, ``--set`` item or value is invalid (the message names the field).
        DatasetError: DATA does not exist.
    """
    changes = {"data.path": str(Path(arguments.data).expanduser().resolve())}
    flags = {"model.backbone": arguments.backbone, "model.mode": arguments.mode, "optim.epochs": arguments.epochs,
             "optim.learning_rate": arguments.lr, "optim.batch_size": arguments.batch_size, "device": arguments.device}
    changes.update({key: value for key, value in flags.items() if value is not None})
    changes.update(dict(parse_override(item) for item in arguments.set))
    if not Path(changes["data.path"]).exists():
        raise DatasetError(f"data folder not found: {arguments.data}")
    open_project(arguments, changes["data.path"])
    # Last: building a config fills the registries it validates against, whose entries may import torch.
    config = load_config(arguments.config) if arguments.config else RunConfig()
    return config.with_changes(**changes)


def add_events_only_option(parser: argparse.ArgumentParser) -> None:
    """``--events-only``: the GUI reads the command's JSON events from stdout, and nothing else."""
    parser.add_argument("--events-only", action="store_true", help="print only JSON events on stdout (for the GUI)")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``: where a trained model runs."""
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where the model runs (default auto)")


def add_tta_option(parser: argparse.ArgumentParser) -> None:
    """``--tta``: the test-time augmentation of a prediction or an evaluation."""
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: average over flipped or cropped views")


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``predict`` and ``ensemble predict`` after the model (read by ``cli.predict``)."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    parser.add_argument("--csv", metavar="FILE", help="also write the predictions to this CSV")
    add_tta_option(parser)
    add_device_option(parser)


def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``evaluate`` and ``ensemble evaluate`` after the model (read by ``cli.evaluate``)."""
    parser.add_argument("data", help="the dataset (split with the model's own split settings)")
    parser.add_argument("--split", choices=SPLITS, default="val",
                        help="images to score (default val: those the model was validated on)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: beside the model, in evaluation/)")
    parser.add_argument("--fit-temperature", action="store_true",
                        help="fit temperature scaling on val; saved with a checkpoint when it helps")
    parser.add_argument("--top-losses", type=int, default=16, help="confidently wrong images shown (default 16)")
    add_tta_option(parser)
    add_device_option(parser)
