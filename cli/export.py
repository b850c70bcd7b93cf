"""``main.py export``: a checkpoint or an ensemble to ONNX (float or int8), OpenVINO, Core ML, TorchScript and timm,
each checked; exits 1 when a format asked for was refused (the others are still written)."""

from __future__ import annotations

import argparse

from cli.parsing import EXIT_FAILED, EXIT_OK, Subparsers, add_command, stops_cleanly
from engine.export.formats import EXPORT_FORMATS


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "export", "export a checkpoint or an ensemble to ONNX, OpenVINO, Core ML, TorchScript, timm",
        ["python main.py export RUN_DIR exports/",
         "python main.py export ensemble.json exports/ --format onnx --check-images photos/",
         "python main.py export RUN_DIR exports/ --format onnx --format onnx-int8 --max-accuracy-drop 0.5",
         "python main.py export RUN_DIR exports/ --format openvino --format coreml"])
    parser.add_argument("model", help="a .safetensors checkpoint, a run folder (its best) or an ensemble manifest")
    parser.add_argument("out_dir", help="the export folder: one subfolder per format")
    parser.add_argument("--format", dest="formats", action="append", choices=list(EXPORT_FORMATS),
                        help="a format to write (repeat for more; default: every format the model has, but onnx-int8, "
                             "openvino and coreml, which are written only when named)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the oldest torch writes)")
    parser.add_argument("--check-images", nargs="+", metavar="PATH",
                        help="images or folders for the parity check (default: a few from the training data)")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                        help="onnx-int8 is refused when it loses more top-1 accuracy than this, in percentage "
                             "points, on the validation images (default 1.0)")
    return parser


@stops_cleanly
def run(arguments: argparse.Namespace) -> int:
    from engine.evaluation.predictions import collect_image_paths
    from engine.export.exporter import export_model

    check_images = collect_image_paths(arguments.check_images) if arguments.check_images else None
    result = export_model(arguments.model, arguments.out_dir, arguments.formats, opset=arguments.opset,
                          check_images=check_images, max_accuracy_drop=arguments.max_accuracy_drop / 100, log=print)
    for name, reason in result.skipped.items():  # refused formats were printed as they were refused
        print(f"{name}: not exported: {reason}")
    return EXIT_FAILED if result.refused else EXIT_OK
