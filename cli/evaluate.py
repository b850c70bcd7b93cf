"""``main.py evaluate``: score a checkpoint, an ensemble or an export on labelled images and write a report folder."""

from __future__ import annotations

import argparse

from cli.options import add_evaluation_options
from cli.parsing import EXIT_OK, Subparsers, add_command, stops_cleanly


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "evaluate", "score a checkpoint, an ensemble or an export on labelled images and write a report",
        ["python main.py evaluate photos/.transfer-studio/runs/20261124-101500-resnet18 photos/",
         "python main.py evaluate ensemble.json photos/ --split test",
         "python main.py evaluate RUN_DIR photos/ --fit-temperature",
         "python main.py evaluate exports/lite0/openvino photos/"])
    parser.add_argument("model", help="a .safetensors checkpoint, a run folder (its best), an ensemble manifest, or "
                                      "an export folder (e.g. OUT/onnx: the exported file, in its own runtime)")
    add_evaluation_options(parser)
    return parser


@stops_cleanly
def run(arguments: argparse.Namespace) -> int:
    return write_report(arguments.model, arguments)


def write_report(model: str, arguments: argparse.Namespace) -> int:
    """Evaluate ``model`` with the evaluation options and print what the report says."""
    from engine.evaluation.report import describe_report
    from engine.export.any_model import evaluate_any_model

    folder = evaluate_any_model(model, arguments.data, split=arguments.split, out_dir=arguments.out,
                                fit_temperature=arguments.fit_temperature, top_losses=arguments.top_losses,
                                tta=arguments.tta, device=arguments.device)
    print(describe_report(folder))
    return EXIT_OK
