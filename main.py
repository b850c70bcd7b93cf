"""Transfer Studio: the desktop app (no arguments) and its headless commands.

Every command is a thin client of ``engine``; the GUI starts training through this
same CLI in a child process. Bad input gets one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.core.config import RunConfig
    from engine.evaluation.ensemble import ProbabilityModel
    from engine.models.weights import WeightsProvider
    from engine.training.distributed import LaunchOptions

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEMO_PROJECT = Path(__file__).resolve().parent / "resources" / "demo"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``main.py`` command line."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="main.py", description="Transfer Studio: transfer learning on your own labelled photos.",
        epilog=_examples("python main.py                       # open the app on the demo project",
                         "python main.py scan resources/demo",
                         "python main.py train resources/demo --epochs 5"),
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    scan = commands.add_parser(
        "scan", help="check a dataset and write its health report", formatter_class=formatter,
        epilog=_examples("python main.py scan photos/", "python main.py scan labels.csv --json report.json"))
    scan.add_argument("data", help="folder of class folders, folder of train/val/test folders, or a CSV")
    scan.add_argument("--json", metavar="FILE", help="also write the report as JSON here")
    scan.add_argument("--workers", type=int, default=8, help="threads reading files (default 8)")

    train = commands.add_parser(
        "train", help="train a model (feature extraction or fine-tuning)", formatter_class=formatter,
        epilog=_examples("python main.py train resources/demo",
                         "python main.py train photos/ --mode fine_tune --epochs 5 --lr 3e-4",
                         "python main.py train photos/ --config my.yaml --set optim.batch_size=64",
                         "python main.py train photos/ --mode fine_tune --nproc 4   # 4 GPUs, data-parallel",
                         "python main.py train --resume photos/.transfer-studio/runs/20261124-101500-resnet18"))
    train.add_argument("data", nargs="?", help="the dataset (omit with --resume)")
    _add_config_arguments(train)
    train.add_argument("--run-dir", metavar="DIR", help="run folder (default: new, in DATA/.transfer-studio/runs)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its last checkpoint")
    train.add_argument("--events-only", action="store_true", help="print only JSON events on stdout (for the GUI)")
    scale_out = train.add_argument_group(
        "several processes and machines (through torchrun)",
        "--nproc N trains data-parallel in N processes on this machine: one per GPU (NCCL), or on the\n"
        "CPU (Gloo), each with an equal share of the cores. A step then averages N x optim.batch_size\n"
        "images; set optim.reference_batch_size to scale the learning rate by the linear rule. On\n"
        "several machines, run the command on each with the options below (README: several machines).")
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

    lr_find = commands.add_parser(
        "lr-find", help="learning-rate range test: sweep the rate, suggest one", formatter_class=formatter,
        epilog=_examples("python main.py lr-find resources/demo",
                         "python main.py lr-find photos/ --mode fine_tune --steps 150 --out lr-sweep"))
    lr_find.add_argument("data", help="the dataset")
    _add_config_arguments(lr_find)
    lr_find.add_argument("--out", metavar="DIR", help="output folder (default: new, in DATA/.transfer-studio/lr-find)")
    lr_find.add_argument("--start-lr", type=float, default=1e-7, help="first rate of the sweep (default 1e-7)")
    lr_find.add_argument("--end-lr", type=float, default=10.0, help="last rate of the sweep (default 10)")
    lr_find.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep (default 100)")
    lr_find.add_argument("--events-only", action="store_true", help="print only JSON events on stdout (for the GUI)")

    sanity = commands.add_parser(
        "sanity", help="check that the model can memorise a small sample (it must reach 100%%)",
        formatter_class=formatter,
        epilog=_examples("python main.py sanity resources/demo", "python main.py sanity photos/ --images 40"))
    sanity.add_argument("data", help="the dataset")
    _add_config_arguments(sanity)
    sanity.add_argument("--out", metavar="DIR", help="also write events into this new folder")
    sanity.add_argument("--images", type=int, default=20, help="sample size (default 20)")
    sanity.add_argument("--max-steps", type=int, default=300, help="give up after this many steps (default 300)")
    sanity.add_argument("--events-only", action="store_true", help="print only JSON events on stdout (for the GUI)")

    preview = commands.add_parser(
        "preview", help="write a grid of augmented samples of your own images", formatter_class=formatter,
        epilog=_examples("python main.py preview resources/demo --out grid.png",
                         "python main.py preview photos/ --set augment.preset=strong --set augment.mixup_alpha=0.2"))
    preview.add_argument("data", help="the dataset")
    _add_config_arguments(preview)
    preview.add_argument("--out", metavar="FILE", default="augment-preview.png", help="PNG to write")
    preview.add_argument("--samples", type=int, default=16, help="augmented samples in the grid (default 16)")

    predict = commands.add_parser(
        "predict", help="predict labels of images with a trained checkpoint", formatter_class=formatter,
        epilog=_examples("python main.py predict RUN_DIR/checkpoints/best.safetensors new_photos/",
                         "python main.py predict RUN_DIR cat.jpg dog.png --top-k 2 --csv predictions.csv"))
    predict.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder (its best)")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    predict.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    predict.add_argument("--csv", metavar="FILE", help="also write the predictions to this CSV")
    predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    predict.add_argument("--tta", choices=("none", "flip", "multicrop"), default="none",
                         help="test-time augmentation: average over flipped or cropped views")

    evaluate = commands.add_parser(
        "evaluate", help="score a checkpoint or an ensemble on labelled images and write a report",
        formatter_class=formatter,
        epilog=_examples("python main.py evaluate photos/.transfer-studio/runs/20261124-101500-resnet18 photos/",
                         "python main.py evaluate ensemble.json photos/ --split test",
                         "python main.py evaluate RUN_DIR photos/ --fit-temperature"))
    evaluate.add_argument("model", help="a .safetensors checkpoint, a run folder (its best) or an ensemble manifest")
    _add_evaluate_arguments(evaluate)

    export = commands.add_parser(
        "export", help="export a checkpoint or an ensemble to ONNX, TorchScript and a timm folder",
        formatter_class=formatter,
        epilog=_examples("python main.py export RUN_DIR exports/",
                         "python main.py export ensemble.json exports/ --format onnx --check-images photos/"))
    export.add_argument("model", help="a .safetensors checkpoint, a run folder (its best) or an ensemble manifest")
    export.add_argument("out_dir", help="the export folder: one subfolder per format")
    export.add_argument("--format", dest="formats", action="append", choices=("onnx", "torchscript", "timm"),
                        help="a format to write (repeat for more; default: every format the model has)")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the oldest torch writes)")
    export.add_argument("--check-images", nargs="+", metavar="PATH",
                        help="images or folders for the parity check (default: a few from the training data)")

    ensemble = commands.add_parser(
        "ensemble", help="combine checkpoints: build a manifest or a weight soup, predict", formatter_class=formatter,
        epilog=_examples("python main.py ensemble build RUN_A RUN_B RUN_C --out ensemble.json",
                         "python main.py ensemble build RUN_A RUN_B RUN_C --out ensemble.json --greedy",
                         "python main.py ensemble build RUN/checkpoints/best.safetensors "
                         "RUN/checkpoints/ema.safetensors --soup uniform --out soup.safetensors",
                         "python main.py ensemble evaluate ensemble.json photos/ --split test",
                         "python main.py ensemble predict ensemble.json new_photos/ --tta flip"))
    actions = ensemble.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    build = actions.add_parser("build", help="write an ensemble manifest (or, with --soup, an averaged checkpoint)")
    build.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help=".safetensors files or run folders")
    build.add_argument("--out", required=True, metavar="FILE", help="manifest .json, or .safetensors with --soup")
    build.add_argument("--weights", type=float, nargs="+", metavar="W", help="one weight per checkpoint")
    build.add_argument("--greedy", action="store_true", help="weights by greedy selection on the validation split")
    build.add_argument("--metric", choices=("log_loss", "accuracy"), default="log_loss", help="greedy score")
    build.add_argument("--max-members", type=int, help="greedy selection: most distinct members")
    build.add_argument("--soup", choices=("uniform", "greedy"), help="average the weights instead (same architecture)")
    build.add_argument("--data", metavar="DATA", help="the dataset, if it moved since training")
    build.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ensemble_evaluate = actions.add_parser(
        "evaluate", help="score an ensemble and each of its members on labelled images (a report folder)")
    ensemble_evaluate.add_argument("manifest", help="an ensemble manifest .json")
    _add_evaluate_arguments(ensemble_evaluate)
    ensemble_predict = actions.add_parser("predict", help="predict labels with an ensemble")
    ensemble_predict.add_argument("manifest", help="an ensemble manifest .json")
    ensemble_predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    ensemble_predict.add_argument("--top-k", type=int, default=3)
    ensemble_predict.add_argument("--csv", metavar="FILE")
    ensemble_predict.add_argument("--tta", choices=("none", "flip", "multicrop"), default="none")
    ensemble_predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    cam = commands.add_parser(
        "cam", help="draw the Grad-CAM class activation map of one image as a PNG", formatter_class=formatter,
        epilog=_examples("python main.py cam RUN_DIR photo.jpg --out photo-cam.png",
                         "python main.py cam ensemble.json photo.jpg --class bag"))
    cam.add_argument("model", help="a .safetensors checkpoint, a run folder (its best) or an ensemble manifest")
    cam.add_argument("image", help="the image file")
    cam.add_argument("--class", dest="class_name", metavar="NAME", help="class to explain (default: the predicted one)")
    cam.add_argument("--out", metavar="FILE", help="overlay PNG (default: IMAGE_STEM-cam.png beside the image)")
    cam.add_argument("--alpha", type=float, default=0.45, help="share of the colour map, 0 to 1 (default 0.45)")
    cam.add_argument("--colormap", default="jet", help="a matplotlib colormap name (default jet)")
    cam.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    search = commands.add_parser(
        "search", help="coarse-to-fine random search of hyperparameters (Optuna); resumable, shareable",
        formatter_class=formatter,
        description="Each trial is a normal run folder under DATA/.transfer-studio/searches/STUDY/trials. The space, "
                    "the stage sizes and the metric are the config's search section (main.py config --default).",
        epilog=_examples("python main.py search photos/ --trials 30 --jobs 2",
                         "python main.py search photos/ --config search.yaml --study lr-wd",
                         "python main.py search photos/ --study lr-wd            # resume it",
                         "# two machines, one study, a journal file on a shared disk:",
                         "python main.py search /shared/photos --study big --storage journal:/shared/big.log",
                         "python main.py search /shared/photos --study big --storage journal:/shared/big.log --worker"))
    search.add_argument("data", help="the dataset")
    _add_config_arguments(search)
    search.add_argument("--study", metavar="NAME", help="study name (default: new); the same name resumes it")
    search.add_argument("--storage", metavar="URL",
                        help="Optuna storage: default a SQLite file in the search folder; journal:FILE (shared disk), "
                             "postgresql://... or mysql://... for workers on several machines")
    search.add_argument("--trials", type=int, metavar="N", help="total trials (split coarse:fine as in the config)")
    search.add_argument("--jobs", type=int, default=1, metavar="J", help="trials at once on this machine (processes)")
    search.add_argument("--worker", action="store_true",
                        help="join a running study as one more worker (another machine or terminal)")
    search.add_argument("--events-only", action="store_true", help="print only JSON events on stdout (for the GUI)")

    config = commands.add_parser(
        "config", help="print the default config, or check a config file", formatter_class=formatter,
        epilog=_examples("python main.py config --default > my.yaml", "python main.py config --check my.yaml"))
    action = config.add_mutually_exclusive_group(required=True)
    action.add_argument("--default", action="store_true", help="print the commented default config")
    action.add_argument("--check", metavar="FILE", help="validate a config file")

    doctor = commands.add_parser(
        "doctor", help="list the training doctor's checks and what each one watches", formatter_class=formatter,
        epilog=_examples("python main.py doctor --list",
                         "python main.py train photos/ --set doctor.checks=[divergence,overfitting]"))
    doctor.add_argument("--list", action="store_true", required=True, help="list every check")

    backbones = commands.add_parser(
        "backbones", help="list timm backbones and where their weights come from", formatter_class=formatter,
        epilog=_examples("python main.py backbones", "python main.py backbones 'resnet*'"))
    backbones.add_argument("pattern", nargs="?", default=None, help="wildcard filter, e.g. 'efficientnet*'")
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that builds a RunConfig takes."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (see: main.py config --default)")
    parser.add_argument("--backbone", help="timm model name (model.backbone)")
    parser.add_argument("--mode", choices=("feature_extraction", "fine_tune", "two_stage"), help="model.mode")
    parser.add_argument("--epochs", type=int, help="optim.epochs")
    parser.add_argument("--lr", type=float, help="optim.learning_rate")
    parser.add_argument("--batch-size", type=int, help="optim.batch_size")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, e.g. --set model.trainable_stages=3 (repeatable)")


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``evaluate`` and ``ensemble evaluate`` after the model."""
    parser.add_argument("data", help="the dataset (split with the model's own split settings)")
    parser.add_argument("--split", choices=("val", "test", "train", "all"), default="val",
                        help="images to score (default val: those the model was validated on)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: beside the model, in evaluation/)")
    parser.add_argument("--fit-temperature", action="store_true",
                        help="fit temperature scaling on val; saved with a checkpoint when it helps")
    parser.add_argument("--top-losses", type=int, default=16, help="confidently wrong images shown (default 16)")
    parser.add_argument("--tta", choices=("none", "flip", "multicrop"), default="none")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app or a command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = build_parser().parse_args(argv)
    arguments.argv = argv  # train --nproc starts itself again, in each process, from these
    if arguments.command is None:
        from gui.app import run_app

        return run_app(DEMO_PROJECT)
    import engine  # noqa: F401  (makes torchvision importable before any command needs timm)
    from engine.core.errors import TransferStudioError

    handlers = {
        "scan": _scan, "train": _train, "lr-find": _lr_find, "sanity": _sanity, "preview": _preview,
        "predict": _predict, "evaluate": _evaluate, "export": _export, "ensemble": _ensemble, "cam": _cam,
        "search": _search,
        "config": _config,
        "doctor": _doctor, "backbones": _backbones,
    }
    try:
        return handlers[arguments.command](arguments)
    except TransferStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED


def _scan(arguments: argparse.Namespace) -> int:
    from engine.core.paths import project_dir_for
    from engine.data.health import scan_dataset

    project = project_dir_for(arguments.data)
    project.mkdir(parents=True, exist_ok=True)
    report = scan_dataset(arguments.data, cache_file=project / "scan_cache.json", workers=arguments.workers)
    json_path, text_path = report.save(project)
    if arguments.json:
        from engine.core.atomic import atomic_write_json

        atomic_write_json(arguments.json, report.to_dict())
    print(report.to_text())
    print(f"\nreport saved to {text_path} and {json_path}")
    return EXIT_OK


def _train(arguments: argparse.Namespace) -> int:
    from engine.training.distributed import LaunchOptions, is_main_process, launched_by_torchrun
    from engine.training.train import resume, train

    if arguments.resume and (arguments.data or arguments.config or arguments.set or arguments.run_dir):
        print("error: --resume takes only the run folder; its own config.yaml is used", file=sys.stderr)
        return EXIT_USAGE
    if not arguments.resume and not arguments.data:
        print("error: train needs DATA (a folder or CSV), or --resume RUN_DIR", file=sys.stderr)
        return EXIT_USAGE
    launch_options = LaunchOptions.from_namespace(arguments)
    if launch_options is not None and not launched_by_torchrun():
        return _launch_training(arguments, launch_options)
    echo = sys.stdout if arguments.events_only else None
    progress = not arguments.events_only and sys.stderr.isatty()
    if arguments.resume:
        result = resume(arguments.resume, echo=echo, progress_bar=progress)
    else:
        result = train(_config_from_arguments(arguments), arguments.run_dir, echo=echo, progress_bar=progress)
    if not arguments.events_only and is_main_process():  # under torchrun, rank 0 speaks for all
        best = f"; best checkpoint: {result.best_checkpoint}" if result.best_checkpoint else ""
        print(f"run {result.state}: {result.run_dir}{best}")
    return EXIT_OK


def _launch_training(arguments: argparse.Namespace, options: LaunchOptions) -> int:
    """Start this train command again in every process of a torchrun job, with one run folder for all."""
    from engine.core.paths import project_dir_for
    from engine.training.distributed import launch_training
    from engine.training.runfolder import new_run_dir

    run_dir = None  # --resume names its folder
    if not arguments.resume:
        config = _config_from_arguments(arguments)  # a bad setting fails here, in one line, before any process
        run_dir = arguments.run_dir or new_run_dir(project_dir_for(config.data.path), config.model.backbone)
    return launch_training(options, Path(__file__).resolve(), arguments.argv, run_dir=run_dir,
                           log=None if arguments.events_only else functools.partial(print, flush=True))


def _config_from_arguments(arguments: argparse.Namespace) -> RunConfig:
    from engine.core.config import RunConfig, load_config, parse_override

    config = load_config(arguments.config) if arguments.config else RunConfig()
    changes = {"data.path": str(Path(arguments.data).expanduser().resolve())}
    flags = {"model.backbone": arguments.backbone, "model.mode": arguments.mode, "optim.epochs": arguments.epochs,
             "optim.learning_rate": arguments.lr, "optim.batch_size": arguments.batch_size}
    changes.update({key: value for key, value in flags.items() if value is not None})
    changes.update(dict(parse_override(item) for item in arguments.set))
    if not Path(changes["data.path"]).exists():
        from engine.core.errors import DatasetError

        raise DatasetError(f"data folder not found: {arguments.data}")
    return config.with_changes(**changes)


def _lr_find(arguments: argparse.Namespace) -> int:
    from engine.core.paths import project_dir_for
    from engine.training.lr_finder import find_learning_rate
    from engine.training.runfolder import new_run_dir

    config = _config_from_arguments(arguments)
    out = Path(arguments.out) if arguments.out else new_run_dir(project_dir_for(config.data.path),
                                                                config.model.backbone, kind="lr-find")
    echo = sys.stdout if arguments.events_only else None
    result = find_learning_rate(config, out, start_lr=arguments.start_lr, end_lr=arguments.end_lr,
                                num_steps=arguments.steps, echo=echo)
    if not arguments.events_only:
        print(result.reason)
        print(f"curve: {result.plot_path} and {result.csv_path}")
        if result.suggestion is not None:
            print(f"to train with it: python main.py train {arguments.data} --lr {result.learning_rate_setting:.1g}")
    return EXIT_OK


def _sanity(arguments: argparse.Namespace) -> int:
    from engine.training.sanity import run_sanity_check

    config = _config_from_arguments(arguments)
    echo = sys.stdout if arguments.events_only else None
    result = run_sanity_check(config, num_images=arguments.images, max_steps=arguments.max_steps,
                              out_dir=arguments.out, echo=echo)
    if not arguments.events_only:
        print(result.message)
        for number, cause in enumerate(result.likely_causes, start=1):
            print(f"  {number}. {cause}")
    return EXIT_OK if result.passed else EXIT_FAILED


def _preview(arguments: argparse.Namespace) -> int:
    from augment import preview_dataset
    from engine.models.backbones import create_model
    from engine.data.settings import resolve_data_settings

    config = _config_from_arguments(arguments)
    model = create_model(config.model.backbone, num_classes=2, weights="none").model
    settings = resolve_data_settings(model, config.data.input_size)
    grid = preview_dataset(config.data.path, config.augment, arguments.samples, settings=settings, seed=config.seed)
    grid.save(arguments.out)
    print(f"preview of preset '{config.augment.preset}' written to {arguments.out}")
    return EXIT_OK


def _predict(arguments: argparse.Namespace) -> int:
    from engine.evaluation.ensemble import load_probability_model

    model = load_probability_model(arguments.checkpoint, device=arguments.device, tta=arguments.tta)
    return _print_predictions(model, arguments)


def _print_predictions(model: ProbabilityModel, arguments: argparse.Namespace) -> int:
    from engine.evaluation.predict import collect_image_paths, write_predictions_csv

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


def _evaluate(arguments: argparse.Namespace, model: str | None = None) -> int:
    from engine.evaluation.evaluate import evaluate_command
    from engine.evaluation.report import describe_report

    folder = evaluate_command(model or arguments.model, arguments.data, split=arguments.split, out_dir=arguments.out,
                              fit_temperature=arguments.fit_temperature, top_losses=arguments.top_losses,
                              tta=arguments.tta, device=arguments.device)
    print(describe_report(folder))
    return EXIT_OK


def _export(arguments: argparse.Namespace) -> int:
    from engine.evaluation.predict import collect_image_paths
    from engine.export.exporter import export_model

    check_images = collect_image_paths(arguments.check_images) if arguments.check_images else None
    result = export_model(arguments.model, arguments.out_dir, arguments.formats, opset=arguments.opset,
                          check_images=check_images, log=print)
    for line in result.summary()[len(result.exports):]:  # the skipped formats, with why
        print(line)
    return EXIT_OK


def _ensemble(arguments: argparse.Namespace) -> int:
    from engine.evaluation.ensemble import Ensemble, build_greedy_manifest, build_manifest, save_manifest

    if arguments.action == "predict":
        return _print_predictions(Ensemble(arguments.manifest, device=arguments.device, tta=arguments.tta), arguments)
    if arguments.action == "evaluate":
        from engine.evaluation.ensemble import is_manifest

        if not is_manifest(arguments.manifest):
            print(f"error: {arguments.manifest}: not an ensemble manifest (for one checkpoint: main.py evaluate)",
                  file=sys.stderr)
            return EXIT_USAGE
        return _evaluate(arguments, model=arguments.manifest)
    if arguments.soup:
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


def _cam(arguments: argparse.Namespace) -> int:
    from engine.core.atomic import atomic_write
    from engine.evaluation.gradcam import class_activation_map, overlay

    activation = class_activation_map(arguments.model, arguments.image, device=arguments.device)
    if arguments.class_name is not None and arguments.class_name != activation.class_name:
        if arguments.class_name not in activation.classes:
            print(f"error: --class: {arguments.class_name!r} is not one of {', '.join(activation.classes)}",
                  file=sys.stderr)
            return EXIT_USAGE
        activation = class_activation_map(arguments.model, arguments.image, device=arguments.device,
                                          class_index=activation.classes.index(arguments.class_name))
    image = Path(arguments.image)
    out = Path(arguments.out) if arguments.out else image.with_name(f"{image.stem}-cam.png")
    picture = overlay(activation, arguments.alpha, arguments.colormap)
    atomic_write(out, lambda temp: picture.save(temp, format="PNG"))
    top = ", ".join(f"{name} {probability:.1%}" for name, probability in activation.top)
    print(f"{out}: evidence for {activation.class_name} ({activation.probability:.1%}); layer {activation.layer}; "
          f"top: {top}")
    return EXIT_OK


def _search(arguments: argparse.Namespace) -> int:
    from engine.search.run import run_search

    given = any((arguments.config, arguments.set, arguments.backbone, arguments.mode, arguments.epochs, arguments.lr,
                 arguments.batch_size))
    # Without settings a rerun resumes the study with the config it was created with.
    config = _config_from_arguments(arguments) if given or not arguments.study else None
    result = run_search(arguments.data, config, study=arguments.study, storage=arguments.storage,
                        trials=arguments.trials, jobs=arguments.jobs, worker=arguments.worker,
                        echo=sys.stdout if arguments.events_only else None,
                        log=None if arguments.events_only else print)  # a line per trial as it happens
    if not arguments.events_only:
        print(result.report.read_text(encoding="utf-8") if result.report else f"search {result.state}: {result.folder}")
        print(f"resume or join: python main.py search {arguments.data} --study {result.study} "
              f"--storage {result.storage}")
    return EXIT_OK


def _config(arguments: argparse.Namespace) -> int:
    from engine.core.config import RunConfig, load_config, to_yaml

    if arguments.default:
        sys.stdout.write(to_yaml(RunConfig()))
    else:
        load_config(arguments.check)
        print(f"{arguments.check}: valid")
    return EXIT_OK


def _doctor(arguments: argparse.Namespace) -> int:
    import textwrap

    from engine.training.doctor import list_checks

    for check in list_checks():
        print(f"{check.name}  ({check.title})")
        print(textwrap.indent(textwrap.fill(check.description, 88), "    "))
    return EXIT_OK


def _backbones(arguments: argparse.Namespace) -> int:
    from engine.models.backbones import describe_backbone, list_backbones

    names = list_backbones(arguments.pattern) if arguments.pattern else [
        provider.backbone for provider in _offline_providers()
    ]
    print(f"{'backbone':40} {'params':>9} {'input':>11}  weights")
    for name in names:
        info = describe_backbone(name)
        size = "x".join(str(side) for side in info.input_size[1:])
        print(f"{name:40} {info.num_params / 1e6:8.1f}M {size:>11}  {', '.join(info.weight_sources) or 'file only'}")
    if not arguments.pattern:
        print("\n(offline backbones; pass a pattern such as 'resnet*' to list every timm model)")
    return EXIT_OK


def _offline_providers() -> list[WeightsProvider]:
    from engine.models.weights import list_weights_providers

    return [provider for provider in list_weights_providers() if provider.is_available()]


if __name__ == "__main__":
    sys.exit(main())
