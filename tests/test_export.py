"""Export to ONNX, TorchScript and a timm folder: real checkpoints, reloaded by their own runtimes, on real photos."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime
import pytest
import timm
import torch
from demo_photos import copy_demo
from PIL import Image

from augment import create_eval_transform
from engine.core.config import RunConfig
from engine.core.errors import CheckpointError, ConfigError, DatasetError
from engine.data.images import load_rgb
from engine.data.settings import DataSettings
from engine.evaluation.calibration import save_temperature
from engine.evaluation.ensemble import Ensemble, build_manifest, save_manifest
from engine.evaluation.evaluate import evaluate_command
from engine.evaluation.predict import Predictor, collect_image_paths
from engine.export.any_model import evaluate_any_model, load_any_model
from engine.export.export_folders import export_folder_of
from engine.export.exported_model import ExportedModel
from engine.export.exporter import PARITY_TOLERANCE, ExportResult, export_ensemble, export_model
from engine.export.formats import PREDICT_TEMPLATE, load_timm_folder, load_torchscript, read_onnx_metadata
from engine.export.listing import exports_folder, list_exports
from engine.models.checkpoint import read_checkpoint_metadata
from engine.training.train import train
from main import main

CLASSES = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Short real feature-extraction runs on demo photos (3 classes x 20) and unseen photos of the same classes.

    ``lite0``: tf_efficientnet_lite0 with its real offline weights; ``small``: mobilenetv3_small_050
    from random weights (another mean/std: the ensemble graph must re-normalise for it); ``mlp``:
    Lite0 with an mlp head (no timm form).
    """
    root = tmp_path_factory.mktemp("export")
    data = copy_demo(root / "data", classes=CLASSES, per_class=20)
    unseen = collect_image_paths([copy_demo(root / "unseen", classes=CLASSES, per_class=4, skip=20)])
    base = RunConfig().with_changes(**{"data.path": str(data), "data.num_workers": 0, "optim.epochs": 3})
    settings = {
        "lite0": {"seed": 0},
        "small": {"seed": 2, "model.backbone": "mobilenetv3_small_050", "model.weights": "none"},
        "mlp": {"seed": 3, "model.head": "mlp", "model.head_hidden": 32},
    }
    found = {name: train(base.with_changes(**changes), root / name).best_checkpoint
             for name, changes in settings.items()}
    return {"root": root, "data": data, "unseen": unseen, **found}


@pytest.fixture(scope="module")
def exported(runs: dict) -> ExportResult:
    """The Lite0 checkpoint in every format, parity-checked on photos from its own data folder."""
    started = time.perf_counter()
    result = export_model(runs["lite0"], runs["root"] / "exports", log=print)
    print(f"export_model, all formats: {time.perf_counter() - started:.1f} s")
    return result


def load_template() -> ModuleType:
    spec = importlib.util.spec_from_file_location("predict_template", PREDICT_TEMPLATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def images_of(predictor: Predictor, paths: list[Path]) -> np.ndarray:
    return torch.stack([predictor.transform(load_rgb(path)) for path in paths]).numpy()


@pytest.mark.slow
def test_every_format_is_published_with_parity_and_metadata(runs: dict, exported: ExportResult) -> None:
    out = runs["root"] / "exports"
    assert list(exported.exports) == ["onnx", "torchscript", "timm"]
    # Staging folders are gone: only the published exports remain.
    assert sorted(path.name for path in out.iterdir()) == ["onnx", "timm", "torchscript"]
    assert sorted(path.name for path in (out / "onnx").iterdir()) == ["metadata.json", "model.onnx", "predict.py"]
    assert sorted(path.name for path in (out / "torchscript").iterdir()) == ["metadata.json", "model.torchscript.pt"]
    assert sorted(path.name for path in (out / "timm").iterdir()) == ["config.json", "metadata.json",
                                                                      "model.safetensors"]
    # The parity check used real photos from the data folder the model was trained on.
    assert exported.check_images and all(runs["data"] in path.parents for path in exported.check_images)
    checkpoint = read_checkpoint_metadata(runs["lite0"])
    for name, item in exported.exports.items():
        assert item.max_difference <= PARITY_TOLERANCE
        metadata = json.loads((item.folder / "metadata.json").read_text())
        assert metadata["export_format"] == name and metadata["kind"] == "model"
        assert metadata["labels"] == checkpoint["classes"]
        preprocessing = {key: metadata["preprocessing"][key] for key in checkpoint["data_settings"]}
        assert preprocessing == checkpoint["data_settings"]
        assert metadata["parity"]["max_difference"] == item.max_difference
        assert metadata["parity"]["images"] == [path.name for path in exported.check_images]
        assert metadata["source"]["checkpoint"] == str(runs["lite0"])
    print("\n" + "\n".join(exported.summary()))


@pytest.mark.slow
def test_onnx_is_one_file_with_dynamic_batch_softmax_and_its_metadata(runs: dict, exported: ExportResult) -> None:
    path = exported.exports["onnx"].path
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {entry.domain: entry.version for entry in model.opset_import}[""] == 18
    assert json.loads((path.parent / "metadata.json").read_text())["opset"] == 18
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,), (graph_output,) = session.get_inputs(), session.get_outputs()
    assert graph_input.name == "images" and graph_output.name == "probabilities"
    assert isinstance(graph_input.shape[0], str) and graph_input.shape[1:] == [3, 224, 224]
    assert graph_output.shape[1] == CLASSES
    props = read_onnx_metadata(path)
    assert json.loads(props["labels"]) == read_checkpoint_metadata(runs["lite0"])["classes"]
    assert json.loads(props["preprocessing"])["crop_pct"] == 0.875
    # Softmax is inside the graph: rows of any batch size sum to 1.
    predictor = Predictor(runs["lite0"], device="cpu")
    for count in (1, 5):
        rows = session.run(None, {"images": images_of(predictor, runs["unseen"][:count])})[0]
        assert rows.shape == (count, CLASSES)
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_each_format_reloads_in_its_own_runtime_and_matches_pytorch_on_unseen_photos(
    runs: dict, exported: ExportResult
) -> None:
    predictor = Predictor(runs["lite0"], device="cpu")
    expected = predictor.predict_proba(runs["unseen"]).probabilities
    images = images_of(predictor, runs["unseen"])

    session = onnxruntime.InferenceSession(str(exported.exports["onnx"].path), providers=["CPUExecutionProvider"])
    from_onnx = session.run(["probabilities"], {"images": images})[0]
    scripted, metadata = load_torchscript(exported.exports["torchscript"].path)
    with torch.no_grad():
        from_torchscript = scripted(torch.from_numpy(images)).numpy()
        timm_model = timm.create_model(f"local-dir:{exported.exports['timm'].path}", pretrained=True).eval()
        from_timm = timm_model(torch.from_numpy(images)).softmax(dim=1).numpy()

    differences = {name: float(np.abs(rows - expected).max())
                   for name, rows in (("onnx", from_onnx), ("torchscript", from_torchscript), ("timm", from_timm))}
    print(f"\nmax |difference| to PyTorch on {len(images)} unseen photos: {differences}")
    assert all(difference <= PARITY_TOLERANCE for difference in differences.values())
    assert metadata["labels"] == predictor.classes  # TorchScript carries its metadata inside
    assert (from_onnx.argmax(axis=1) == expected.argmax(axis=1)).all()


@pytest.mark.slow
def test_timm_folder_holds_timms_config_with_our_preprocessing_and_labels(runs: dict, exported: ExportResult) -> None:
    config = json.loads((exported.exports["timm"].path / "config.json").read_text())
    checkpoint = read_checkpoint_metadata(runs["lite0"])
    assert config["architecture"] == "tf_efficientnet_lite0"
    assert config["num_classes"] == CLASSES and config["num_features"] == 1280
    assert config["label_names"] == checkpoint["classes"]
    pretrained = config["pretrained_cfg"]
    for key, value in checkpoint["data_settings"].items():
        assert pretrained[key] == value, key
    model = load_timm_folder(exported.exports["timm"].path)
    assert model.pretrained_cfg["label_names"] == checkpoint["classes"]
    assert timm.data.resolve_data_config(model=model)["crop_pct"] == checkpoint["data_settings"]["crop_pct"]


@pytest.mark.slow
def test_predict_script_beside_the_onnx_export_prints_the_predictors_top1(runs: dict, exported: ExportResult,
                                                                          tmp_path: Path) -> None:
    folder = exported.exports["onnx"].folder
    unseen = runs["root"] / "unseen"
    broken = unseen / "broken.png"
    broken.write_bytes(b"not a png")
    paths = collect_image_paths([unseen])
    try:
        completed = subprocess.run(
            [sys.executable, str(folder / "predict.py"), str(folder / "model.onnx"), str(unseen), "--top-k", "2",
             "--csv", str(tmp_path / "predictions.csv")],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        broken.unlink()
    assert completed.returncode == 1 and f"{broken}: cannot read the image" in completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == len(paths) - 1
    expected = Predictor(runs["lite0"], device="cpu").predict(paths, top_k=2)
    readable = [prediction for prediction in expected if not prediction.error]
    for line, prediction in zip(lines, readable, strict=True):
        path, label, probability, second, _ = line.split("\t")
        assert (path, label, second) == (str(prediction.path), *prediction.labels)
        assert abs(float(probability) - prediction.probabilities[0]) < 1e-3
    # The CSV is the one main.py predict writes: the same columns, every image in its place.
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["path", "label_1", "probability_1", "label_2", "probability_2", "error"]
    assert [row["path"] for row in rows] == [str(path) for path in paths]
    for row, prediction in zip(rows, expected, strict=True):
        if prediction.error:
            assert row["label_1"] == "" and row["error"].startswith("cannot read the image")
        else:
            assert (row["label_1"], row["label_2"], row["error"]) == (*prediction.labels, "")
    print("\n" + "\n".join(lines[:3]))


def test_predict_script_preprocessing_is_timms_eval_transform(tmp_path: Path) -> None:
    template = load_template()
    photo = sorted(copy_demo(tmp_path / "demo", classes=1, per_class=1).rglob("*.png"))[0]
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (61, 97, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    wide.save(tmp_path / "rotated.jpg", exif=exif)
    rgba = Image.fromarray(rng.integers(0, 256, (300, 180, 4), dtype=np.uint8), "RGBA")
    rgba.save(tmp_path / "transparent.png")
    wide.convert("P").save(tmp_path / "palette.gif")
    Image.fromarray(rng.integers(0, 65536, (50, 70), dtype=np.uint16)).save(tmp_path / "sixteen_bit.png")
    files = [photo, tmp_path / "rotated.jpg", tmp_path / "transparent.png", tmp_path / "palette.gif",
             tmp_path / "sixteen_bit.png"]

    base = DataSettings((3, 224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875, "center")
    variants = [
        base,
        DataSettings((3, 64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 0.95, "center"),
        DataSettings((3, 96, 128), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.9, "center"),
        DataSettings((3, 80, 80), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "lanczos", 1.0, "squash"),
        DataSettings((3, 80, 80), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.9, "border"),
        DataSettings((3, 256, 256), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "nearest", 1.2, "center"),
    ]
    for file in files:
        image = template.load_rgb(str(file))
        np.testing.assert_array_equal(np.asarray(image), np.asarray(load_rgb(file)), err_msg=file.name)
        for settings in variants:
            expected = create_eval_transform(settings)(load_rgb(file)).numpy()
            actual = template.preprocess(image, json.loads(json.dumps(settings.to_dict())))
            assert actual.shape == expected.shape and actual.dtype == np.float32
            np.testing.assert_allclose(actual, expected, atol=1e-6, err_msg=f"{file.name} {settings}")


@pytest.mark.slow
def test_an_ensemble_exports_as_one_graph_matching_the_ensembles_probabilities(runs: dict) -> None:
    members = [runs["lite0"], runs["small"]]
    manifest = save_manifest(build_manifest(members, weights=[2, 1]), runs["root"] / "ensemble.json")
    check = runs["unseen"][:4]
    started = time.perf_counter()
    result = export_model(manifest, runs["root"] / "ensemble_export", check_images=check)
    print(f"\nensemble of 2, every format it has: {time.perf_counter() - started:.1f} s")
    print("\n".join(result.summary()))
    assert list(result.exports) == ["onnx", "torchscript"]
    assert "an ensemble has no timm form" in result.skipped["timm"]

    path = result.exports["onnx"].path
    assert sorted(item.name for item in path.parent.iterdir()) == ["metadata.json", "model.onnx", "predict.py"]
    graph = onnx.load(str(path))
    assert [node.name for node in graph.graph.input] == ["images"]
    assert [node.name for node in graph.graph.output] == ["probabilities"]
    metadata = json.loads((path.parent / "metadata.json").read_text())
    assert metadata["kind"] == "ensemble" and metadata["source"]["manifest"] == str(manifest)
    assert [member["weight"] for member in metadata["source"]["members"]] == pytest.approx([2 / 3, 1 / 3])
    assert result.check_images == tuple(check)

    ensemble = Ensemble(manifest, device="cpu")
    expected = ensemble.predict_proba(runs["unseen"]).probabilities
    # The graph takes the first member's normalisation; the mobilenet member's differs (re-normalised inside).
    images = images_of(ensemble.models[ensemble.members[0]], runs["unseen"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = session.run(None, {"images": images})[0]
    difference = float(np.abs(rows - expected).max())
    print(f"ensemble ONNX vs Ensemble.predict_proba on {len(images)} unseen photos: {difference:.1e}")
    assert difference <= PARITY_TOLERANCE


@pytest.mark.slow
def test_ensemble_members_as_predictors_export_to_torchscript(runs: dict) -> None:
    predictors = [Predictor(runs["lite0"], device="cpu"), Predictor(runs["small"], device="cpu")]
    result = export_ensemble(predictors, [1, 3], runs["root"] / "members", ["torchscript"],
                             check_images=runs["unseen"][:3])
    scripted, metadata = load_torchscript(result.exports["torchscript"].path)
    images = images_of(predictors[0], runs["unseen"])
    with torch.no_grad():
        rows = scripted(torch.from_numpy(images)).numpy()
    expected = sum(weight * predictor.predict_proba(runs["unseen"]).probabilities
                   for weight, predictor in zip((0.25, 0.75), predictors, strict=True))
    assert float(np.abs(rows - expected).max()) <= PARITY_TOLERANCE
    assert metadata["kind"] == "ensemble" and len(metadata["source"]["members"]) == 2


@pytest.mark.slow
def test_formats_without_a_form_for_the_source_are_refused_and_the_others_still_export(runs: dict) -> None:
    partly = runs["root"] / "partly"
    result = export_model(runs["mlp"], partly, ["torchscript", "timm"], check_images=[])
    assert list(result.exports) == ["torchscript"] and list(result.refused) == ["timm"]
    assert re.search(r"timm format cannot hold its 'mlp' head .*onnx or torchscript", result.refused["timm"])
    assert result.summary()[-1].startswith("timm: refused: ") and not (partly / "timm").exists()
    out = runs["root"] / "refused"
    with pytest.raises(CheckpointError, match=r"timm format cannot hold its 'mlp' head"):
        export_model(runs["mlp"], out, ["timm"])
    manifest = save_manifest(build_manifest([runs["lite0"], runs["small"]]), runs["root"] / "pair.json")
    with pytest.raises(CheckpointError, match="an ensemble has no timm form"):
        export_model(manifest, out, ["timm"])
    with pytest.raises(ConfigError, match="export formats: expected some of onnx, onnx-int8, .*timm"):
        export_model(runs["lite0"], out, ["pickle"])
    with pytest.raises(ConfigError, match="export opset: must be >= 18"):
        export_model(runs["lite0"], out, ["onnx"], opset=17)
    for tolerance in (-1e-4, float("nan")):
        with pytest.raises(ConfigError, match=r"export tolerance: must be a number >= 0 .*, got (-0.0001|nan)"):
            export_model(runs["lite0"], out, ["timm"], tolerance=tolerance)
    assert not out.exists()


@pytest.mark.slow
def test_without_photos_the_check_runs_on_random_inputs_and_unreadable_photos_are_refused(runs: dict) -> None:
    out = runs["root"] / "random"
    result = export_model(runs["small"], out, ["torchscript"], check_images=[])
    assert result.check_images == () and "random inputs" in result.summary()[0]
    parity = json.loads((out / "torchscript" / "metadata.json").read_text())["parity"]
    assert parity["random_inputs"] and parity["images"] == [] and parity["max_difference"] <= PARITY_TOLERANCE
    broken = runs["root"] / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(DatasetError, match=r"export check images: none of the 1 files could be read"):
        export_model(runs["small"], out, ["torchscript"], check_images=[broken])


@pytest.mark.slow
def test_a_calibrated_checkpoint_exports_its_temperature_in_every_format(runs: dict) -> None:
    calibrated = runs["root"] / "calibrated" / "best.safetensors"
    calibrated.parent.mkdir()
    shutil.copyfile(runs["small"], calibrated)
    # The small model from random weights is barely confident: a low T moves its probabilities far.
    save_temperature(calibrated, 0.1)
    predictor = Predictor(calibrated, device="cpu")
    assert predictor.temperature == 0.1

    # The parity check compares with Predictor.predict_proba, which divides the logits by T.
    result = export_model(calibrated, runs["root"] / "calibrated_export", check_images=runs["unseen"][:4])
    assert list(result.exports) == ["onnx", "torchscript", "timm"]
    assert result.metadata["source"]["temperature"] == 0.1
    images = images_of(predictor, runs["unseen"])
    expected = predictor.predict_proba(runs["unseen"]).probabilities
    uncalibrated = Predictor(runs["small"], device="cpu").predict_proba(runs["unseen"]).probabilities
    assert float(np.abs(expected - uncalibrated).max()) > 10 * PARITY_TOLERANCE  # T matters to the check
    with torch.no_grad():
        # timm gets T folded into its classifier: a plain softmax of its logits is calibrated.
        logits = load_timm_folder(result.exports["timm"].path)(torch.from_numpy(images))
    assert float(np.abs(logits.softmax(dim=1).numpy() - expected).max()) <= PARITY_TOLERANCE
    session = onnxruntime.InferenceSession(str(result.exports["onnx"].path), providers=["CPUExecutionProvider"])
    assert float(np.abs(session.run(None, {"images": images})[0] - expected).max()) <= PARITY_TOLERANCE


@pytest.mark.slow
def test_an_export_that_fails_its_parity_check_publishes_nothing_and_says_why(runs: dict) -> None:
    out, check = runs["root"] / "parity_export", runs["unseen"][:4]
    export_model(runs["lite0"], out, ["timm"], check_images=check)  # an older export, to be kept

    def published() -> dict[str, bytes | None]:
        return {path.relative_to(out).as_posix(): path.read_bytes() if path.is_file() else None
                for path in out.rglob("*")}

    before = published()
    # Calibrated with T = 0.3, the timm folder folds 1/T into the classifier's weights while
    # PyTorch divides the logits: a real round-off difference, which a zero tolerance refuses.
    calibrated = runs["root"] / "parity" / "best.safetensors"
    calibrated.parent.mkdir()
    shutil.copyfile(runs["lite0"], calibrated)
    save_temperature(calibrated, 0.3)
    with pytest.raises(CheckpointError) as refused:
        export_model(calibrated, out, ["timm"], check_images=check, tolerance=0.0)
    message = str(refused.value)
    found = re.search(r"the timm export differs from PyTorch by (\S+) \(more than 0\.0e\+00\) on 4 inputs; "
                      r"it was not published", message)
    assert found, message
    assert 0 < float(found[1]) <= PARITY_TOLERANCE  # measured, and small: only the tolerance refused it
    # The older export is untouched, and nothing of the refused one is left: no file, no staging folder.
    assert published() == before


@pytest.mark.slow
def test_an_export_predicts_like_its_checkpoint_in_its_own_runtime(runs: dict, exported: ExportResult,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    predictor = Predictor(runs["lite0"], device="cpu")
    expected = predictor.predict_proba(runs["unseen"]).probabilities
    for name in ("onnx", "torchscript", "timm"):
        item = exported.exports[name]
        for named in (item.folder, item.folder / "metadata.json", item.path):
            assert export_folder_of(named) == item.folder, named
        model = load_any_model(item.folder)
        assert isinstance(model, ExportedModel) and model.classes == predictor.classes
        rows = model.predict_proba(runs["unseen"]).probabilities
        assert float(np.abs(rows - expected).max()) <= PARITY_TOLERANCE, name
        # Video frames go through the same preprocessing as files.
        frames = [load_rgb(path) for path in runs["unseen"][:3]]
        np.testing.assert_allclose(model.predict_images(frames), rows[:3], atol=PARITY_TOLERANCE)
    with pytest.raises(CheckpointError, match=r"an export of several formats \(onnx, torchscript, timm\): name one"):
        load_any_model(runs["root"] / "exports")
    with pytest.raises(ConfigError, match="tta: an export is evaluated as it is deployed"):
        load_any_model(exported.exports["onnx"].folder, tta="flip")
    assert main(["predict", str(exported.exports["onnx"].path), str(runs["unseen"][0]), "--top-k", "1"]) == 0
    top = predictor.predict(runs["unseen"][:1], top_k=1)[0]
    assert capsys.readouterr().out.startswith(f"{runs['unseen'][0]}\t{top.labels[0]} ")


@pytest.mark.slow
def test_an_export_is_evaluated_on_the_images_its_checkpoint_validated_on(runs: dict, exported: ExportResult,
                                                                          tmp_path: Path) -> None:
    checkpoint = json.loads((evaluate_command(runs["lite0"], runs["data"], out_dir=tmp_path / "checkpoint")
                             / "report.json").read_text())
    folder = evaluate_any_model(exported.exports["torchscript"].folder, runs["data"], out_dir=tmp_path / "export")
    report = json.loads((folder / "report.json").read_text())
    assert report["summary"]["images"] == checkpoint["summary"]["images"] > 0
    assert report["summary"]["top1"] == checkpoint["summary"]["top1"]
    assert report["source"]["model"] == str(exported.exports["torchscript"].folder)
    assert any("evaluated in its own runtime" in note for note in report["notes"])


def test_a_projects_exports_are_listed_beside_its_checkpoints(runs: dict, exported: ExportResult,
                                                              tmp_path: Path) -> None:
    export_dir = exports_folder(tmp_path) / "lite0-20261208"
    shutil.copytree(runs["root"] / "exports", export_dir, ignore=shutil.ignore_patterns("model.*"))
    (export_dir / "timm" / "metadata.json").write_text("{not json")
    entries = list_exports(tmp_path)
    assert [(entry.kind, entry.name) for entry in entries] == [("export", "onnx"), ("export", "torchscript"),
                                                               ("unreadable", "timm")]
    assert entries[0].label == "export · lite0-20261208 · ONNX" and entries[0].path == export_dir / "onnx"
    assert list(entries[0].classes) == read_checkpoint_metadata(runs["lite0"])["classes"]
    assert "metadata.json: the export's metadata cannot be read" in entries[2].problem


@pytest.mark.slow
def test_a_format_whose_package_is_missing_is_refused_and_the_others_still_export(
        runs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    out = tmp_path / "partly"
    code = main(["export", str(runs["lite0"]), str(out), "--format", "openvino", "--format", "torchscript",
                 "--check-images", str(runs["unseen"][0])])
    printed = capsys.readouterr()
    assert code == 1, printed.err
    lines = printed.out.splitlines()
    assert lines[0].startswith("openvino: refused: ") and "pip install openvino" in lines[0]
    assert lines[1].startswith("torchscript: ") and "max |difference| to PyTorch" in lines[1]
    assert sorted(path.name for path in out.iterdir()) == ["torchscript"]
