"""``main.py predict``: the top labels of images by a checkpoint, an ensemble or an export, printed and optionally as
CSV."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cli.options import add_prediction_options
from cli.parsing import EXIT_OK, Subparsers, add_command

if TYPE_CHECKING:
    from engine.evaluation.predictions import ProbabilityModel


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "predict", "predict labels of images with a checkpoint, an ensemble or an export",
                         ["python main.py predict RUN_DIR/checkpoints/best.safetensors new_photos/",
                          "python main.py predict RUN_DIR cat.jpg dog.png --top-k 2 --csv predictions.csv",
                          "python main.py predict exports/lite0/onnx-int8 new_photos/"])
    parser.add_argument("checkpoint", metavar="model",
                        help="a .safetensors checkpoint, a run folder (its best), an ensemble manifest, or an export "
                             "folder (e.g. OUT/onnx: the exported file, in its own runtime)")
    add_prediction_options(parser)
    return parser


def run(arguments: argparse.Namespace) -> int:
    from engine.export.any_model import load_any_model

    return print_predictions(load_any_model(arguments.checkpoint, device=arguments.device, tta=arguments.tta),
                             arguments)


def print_predictions(model: ProbabilityModel, arguments: argparse.Namespace) -> int:
    """Print a line of top labels per image (``PATH<tab>label p, ...``); write the CSV when asked."""
    from engine.evaluation.predictions import collect_image_paths, write_predictions_csv

    predictions = model.predict(collect_image_paths(arguments.paths), top_k=arguments.top_k)
    for prediction in predictions:
        if prediction.error:
            print(f"{prediction.path}\tunreadable: {prediction.error}")
        else:
            pairs = zip(prediction.labels, prediction.probabilities, strict=True)
            ranked = ", ".join(f"{label} {probability:.1%}" for label, probability in pairs)
            print(f"{prediction.path}\t{ranked}")
    if arguments.csv:
        write_predictions_csv(predictions, arguments.csv)
    return EXIT_OK
