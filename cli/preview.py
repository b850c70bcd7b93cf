"""``main.py preview``: a grid of augmented samples of your own images, as a PNG."""

from __future__ import annotations

import argparse

from cli.options import add_config_options, config_from_arguments
from cli.parsing import EXIT_OK, Subparsers, add_command


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "preview", "write a grid of augmented samples of your own images",
        ["python main.py preview resources/demo --out grid.png",
         "python main.py preview photos/ --set augment.preset=strong --set augment.mixup_alpha=0.2"])
    parser.add_argument("data", help="the dataset")
    add_config_options(parser)
    parser.add_argument("--out", metavar="FILE", default="augment-preview.png", help="PNG to write")
    parser.add_argument("--samples", type=int, default=16, help="augmented samples in the grid (default 16)")
    return parser


def run(arguments: argparse.Namespace) -> int:
    config = config_from_arguments(arguments)
    from augment import preview_dataset
    from engine.data.settings import resolve_data_settings
    from engine.models.backbones import create_model

    model = create_model(config.model.backbone, num_classes=2, weights="none").model
    settings = resolve_data_settings(model, config.data.input_size)
    grid = preview_dataset(config.data.path, config.augment, arguments.samples, settings=settings, seed=config.seed)
    grid.save(arguments.out)
    print(f"preview of preset '{config.augment.preset}' written to {arguments.out}")
    return EXIT_OK
