"""``main.py ensemble``: build an ensemble manifest or a weight soup, evaluate an ensemble, predict with one."""

from __future__ import annotations

import argparse

from cli.evaluate import write_report
from cli.options import add_device_option, add_evaluation_options, add_prediction_options
from cli.parsing import EXIT_OK, CommandParser, Subparsers, add_command, refuse, stops_cleanly
from cli.predict import print_predictions
from engine.evaluation.selection import GREEDY_METRICS


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "ensemble", "combine checkpoints: build a manifest or a weight soup, predict",
        ["python main.py ensemble build RUN_A RUN_B RUN_C --out ensemble.json",
         "python main.py ensemble build RUN_A RUN_B RUN_C --out ensemble.json --greedy",
         "python main.py ensemble build RUN/checkpoints/best.safetensors "
         "RUN/checkpoints/ema.safetensors --soup uniform --out soup.safetensors",
         "python main.py ensemble evaluate ensemble.json photos/ --split test",
         "python main.py ensemble predict ensemble.json new_photos/ --tta flip"])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=CommandParser)
    build = actions.add_parser("build", help="write an ensemble manifest (or, with --soup, an averaged checkpoint)")
    build.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help=".safetensors files or run folders")
    build.add_argument("--out", required=True, metavar="FILE", help="manifest .json, or .safetensors with --soup")
    build.add_argument("--weights", type=float, nargs="+", metavar="W", help="one weight per checkpoint")
    build.add_argument("--greedy", action="store_true", help="weights by greedy selection on the validation split")
    build.add_argument("--metric", choices=GREEDY_METRICS, default="log_loss", help="greedy score")
    build.add_argument("--max-members", type=int, help="greedy selection: most distinct members")
    build.add_argument("--soup", choices=("uniform", "greedy"), help="average the weights instead (same architecture)")
    build.add_argument("--data", metavar="DATA", help="the dataset, if it moved since training")
    add_device_option(build)
    evaluate = actions.add_parser(
        "evaluate", help="score an ensemble and each of its members on labelled images (a report folder)")
    evaluate.add_argument("manifest", help="an ensemble manifest .json")
    add_evaluation_options(evaluate)
    predict = actions.add_parser("predict", help="predict labels with an ensemble")
    predict.add_argument("manifest", help="an ensemble manifest .json")
    add_prediction_options(predict)
    return parser


@stops_cleanly
def run(arguments: argparse.Namespace) -> int:
    if arguments.action == "evaluate":
        from engine.evaluation.manifest import is_manifest

        if not is_manifest(arguments.manifest):
            return refuse(f"{arguments.manifest}: not an ensemble manifest (for one checkpoint: main.py evaluate)")
        return write_report(arguments.manifest, arguments)
    if arguments.action == "predict":
        from engine.evaluation.ensemble import Ensemble

        return print_predictions(Ensemble(arguments.manifest, device=arguments.device, tta=arguments.tta), arguments)
    return _build_soup(arguments) if arguments.soup else _build_manifest(arguments)


def _build_soup(arguments: argparse.Namespace) -> int:
    from engine.evaluation.ensemble import load_validation_split
    from engine.evaluation.soup import greedy_soup, uniform_soup

    if arguments.soup == "uniform":
        soup = uniform_soup(arguments.checkpoints, arguments.out)
    else:
        validation = load_validation_split(arguments.checkpoints, data=arguments.data)
        soup = greedy_soup(arguments.checkpoints, validation, arguments.out, device=arguments.device)
        for path, score in soup.member_accuracy.items():
            print(f"{path}\tval top-1 {score:.1%}")
        print(f"soup\tval top-1 {soup.accuracy:.1%}")
    print(f"soup of {len(soup.members)} checkpoints written to {soup.path}")
    return EXIT_OK


def _build_manifest(arguments: argparse.Namespace) -> int:
    from engine.evaluation.ensemble import build_greedy_manifest
    from engine.evaluation.manifest import build_manifest, save_manifest

    if arguments.greedy:
        manifest, scores = build_greedy_manifest(arguments.checkpoints, data=arguments.data, metric=arguments.metric,
                                                 max_members=arguments.max_members, device=arguments.device)
        for score in scores:
            print(f"{score.name}\tval log-loss {score.log_loss:.4f}\ttop-1 {score.accuracy:.1%}\t"
                  f"picked {score.picked}x")
    else:
        manifest = build_manifest(arguments.checkpoints, weights=arguments.weights)
    path = save_manifest(manifest, arguments.out)
    print(f"ensemble of {len(manifest.members)} members ({manifest.combine}) written to {path}")
    return EXIT_OK
