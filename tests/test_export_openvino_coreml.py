"""The opt-in ``openvino`` and ``coreml`` exports of a real demo checkpoint: OpenVINO IR run by OpenVINO's own runtime
against PyTorch, a Core ML package with its labels and preprocessing inside (converted, not run, off macOS), and
the one-line errors of a missing package or a failing converter."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.core.errors import CheckpointError
from engine.core.paths import project_dir_for
from engine.data.settings import DataSettings
from engine.evaluation.catalog import list_models
from engine.evaluation.predict import Predictor, collect_image_paths
from engine.export.any_model import load_any_model
from engine.export.exported_model import ExportedModel
from engine.export.exporter import PARITY_TOLERANCE, export_model
from engine.export.formats import EXPORT_FORMATS, ExportSubject, get_export_format
from engine.export.formats.coreml_format import COREML_AUTHOR, NOT_RUNNABLE, pixels_of, quiet_coremltools
from engine.export.formats.openvino_format import read_openvino_metadata
from engine.export.samples import LabelledImages, validation_images
from engine.export.source import ExportSource, load_source


@pytest.fixture(scope="module")
def checkpoint(demo_project: Path) -> Path:
    return next(entry.path for entry in list_models(project_dir_for(demo_project)) if entry.kind == "checkpoint")


@pytest.fixture(scope="module")
def source(checkpoint: Path) -> ExportSource:
    return load_source(checkpoint)


@pytest.fixture(scope="module")
def validation(source: ExportSource) -> LabelledImages:
    return validation_images(source.configs[0], source.classes, source.settings[0], label=source.label)


@pytest.fixture(scope="module")
def openvino_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("openvino") / "exports"
    export_model(checkpoint, out, ["openvino"])
    return out / "openvino"


@pytest.fixture(scope="module")
def coreml_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The Core ML export, and what it printed on stderr (tqdm bars and coremltools' notes must not show)."""
    pytest.importorskip("coremltools")
    out = tmp_path_factory.mktemp("coreml") / "exports"
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        export_model(checkpoint, out, ["coreml"])
    return out / "coreml", printed.getvalue()


def test_openvino_and_coreml_are_registered_and_opt_in() -> None:
    assert {"openvino", "coreml"} <= set(EXPORT_FORMATS)
    openvino, coreml = get_export_format("openvino"), get_export_format("coreml")
    assert (openvino.title, openvino.model_file, openvino.by_default) == ("OpenVINO", "model.xml", False)
    assert (coreml.title, coreml.model_file, coreml.by_default) == ("Core ML", "model.mlpackage", False)
    assert "Intel" in openvino.use and "iPhone" in coreml.use
    assert not openvino.needs_samples and not coreml.needs_samples


def test_the_openvino_export_agrees_with_pytorch_on_the_validation_images(
    openvino_export: Path, source: ExportSource, validation: LabelledImages, checkpoint: Path
) -> None:
    assert sorted(path.name for path in openvino_export.iterdir()) == ["metadata.json", "model.bin", "model.xml"]
    runner = get_export_format("openvino").load(openvino_export / "model.xml", threads=2)
    with torch.no_grad():
        expected = source.subject().graph(torch.from_numpy(validation.images)).numpy()
    answered = runner(validation.images)
    assert answered.dtype == np.float32 and answered.shape == expected.shape
    agreement = float((answered.argmax(axis=1) == expected.argmax(axis=1)).mean())
    difference = float(np.abs(answered - expected).max())
    print(f"openvino: top-1 agreement {agreement:.1%}, max |difference| {difference:.1e} on {validation.source}")
    assert agreement >= 0.99
    assert difference <= PARITY_TOLERANCE, "compiled with f32 precision: bfloat16 would differ by tenths"
    # A dynamic batch: one image answers as it does among the others.
    np.testing.assert_allclose(runner(validation.images[:1]), answered[:1], atol=1e-5)
    # float32 weights: about as large as the checkpoint's (float16 would halve them).
    assert (openvino_export / "model.bin").stat().st_size > 0.9 * checkpoint.stat().st_size


def test_the_openvino_export_carries_labels_and_preprocessing(openvino_export: Path, source: ExportSource) -> None:
    metadata = json.loads((openvino_export / "metadata.json").read_text())
    assert metadata["export_format"] == "openvino"
    assert metadata["labels"] == list(source.classes)
    assert metadata["preprocessing"]["mean"] == list(source.settings[0].mean)
    assert "subtract mean" in metadata["preprocessing"]["steps"]
    assert metadata["openvino"]["inference_precision"] == "f32" and metadata["openvino"]["weights"] == "float32"
    assert metadata["parity"]["max_difference"] <= PARITY_TOLERANCE
    # The IR alone (no metadata.json beside it) still says what its outputs and inputs are.
    stored = read_openvino_metadata(openvino_export / "model.xml")
    assert json.loads(stored["labels"]) == metadata["labels"]
    assert json.loads(stored["preprocessing"]) == metadata["preprocessing"]


class HistogramModel(nn.Module):
    """A model with an operation neither converter has (``aten::histc``): its conversion really fails."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.histc(images, bins=2).expand(images.shape[0], 2).softmax(dim=1)


@pytest.mark.parametrize(("name", "package", "words"), [
    ("openvino", "openvino", "OpenVINO could not convert the model: OpConversionFailure: "),
    ("coreml", "coremltools", "coremltools could not convert the model to Core ML: NotImplementedError: "),
], ids=["openvino", "coreml"])
def test_a_model_the_converter_cannot_take_is_refused_in_one_line(
    name: str, package: str, words: str, tmp_path: Path
) -> None:
    pytest.importorskip(package)
    settings = DataSettings((3, 8, 8), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875, "center")
    subject = ExportSubject(label="tiny.safetensors", graph=HistogramModel().eval(), models=[], heads=[None],
                            temperatures=[1.0], classes=["a", "b"], settings=settings, is_ensemble=False)
    metadata = {"labels": ["a", "b"], "preprocessing": settings.to_dict(), "source": {"kind": "model"}}
    with pytest.raises(CheckpointError) as raised:
        get_export_format(name).write(subject, tmp_path, metadata, 18)
    message = str(raised.value)
    assert message.startswith(f"tiny.safetensors: {words}") and "histc" in message
    assert "\n" not in message and "Traceback" not in message and "failed at src/" not in message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("name", "package"), [("openvino", "openvino"), ("coreml", "coremltools")])
def test_a_missing_package_names_its_install_command(
    name: str, package: str, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # what "import" meets when the package is not installed
    with pytest.raises(CheckpointError, match=rf"'{package}' is not installed.*pip install {package}$"):
        get_export_format(name).require()
    # Through the exporter, before any work.
    with pytest.raises(CheckpointError, match=rf"pip install {package}$"):
        export_model(checkpoint, tmp_path / "exports", [name])
    assert not (tmp_path / "exports").exists()


def test_the_coreml_package_takes_a_photo_and_names_its_labels(
    coreml_export: tuple[Path, str], source: ExportSource
) -> None:
    folder, printed = coreml_export
    assert (folder / "model.mlpackage").is_dir() and (folder / "metadata.json").is_file()
    with quiet_coremltools():
        import coremltools as ct
    spec = ct.models.MLModel(str(folder / "model.mlpackage"), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    [image] = spec.description.input
    channels, height, width = source.settings[0].input_size
    assert image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (width, height)
    assert image.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.predictedProbabilitiesName == "classLabel_probs"
    metadata = spec.description.metadata
    assert metadata.author == COREML_AUTHOR and source.classes[0] in metadata.shortDescription
    assert json.loads(metadata.userDefined["labels"]) == list(source.classes)
    assert json.loads(metadata.userDefined["preprocessing"])["std"] == list(source.settings[0].std)
    assert json.loads(metadata.userDefined["source"])["kind"] == "model"
    program = _program_ops(spec)
    assert _classify_labels(program) == list(source.classes)
    # Preprocessing inside: pixels x 1/255 (the image input), then minus the mean, times 1/std per channel.
    scale, minus, divide = [op for op in program if op.type != "const"][:3]
    constants = _float_constants(program)
    assert (scale.type, minus.type, divide.type) == ("mul", "sub", "mul")
    assert scale.inputs["x"].arguments[0].name == "image"
    assert constants[scale.inputs["y"].arguments[0].name] == pytest.approx([1 / 255])
    assert constants[minus.inputs["y"].arguments[0].name] == pytest.approx(source.settings[0].mean)
    assert constants[divide.inputs["y"].arguments[0].name] == pytest.approx(
        [1 / std for std in source.settings[0].std])
    assert printed == "", "coremltools' progress bars and notes are kept out of the CLI's output"


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS: there the export is checked")
def test_the_coreml_export_says_it_was_converted_not_executed(coreml_export: tuple[Path, str]) -> None:
    # Needs the exporter's side of not_runnable_here (publish unchecked, record why).
    folder, _ = coreml_export
    assert get_export_format("coreml").not_runnable_here() == NOT_RUNNABLE
    assert "not executed on this OS" in NOT_RUNNABLE
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parity"] == {"executed": False, "reason": NOT_RUNNABLE}
    assert metadata["input"]["type"] == "image" and metadata["coreml"]["precision"] == "float32"


def test_the_coreml_runner_gives_the_model_the_photos_the_images_came_from(
    validation: LabelledImages, source: ExportSource
) -> None:
    # The macOS runner turns the check's normalised images back into 8-bit photos: lossless for real photos.
    settings = source.settings[0]
    photos = pixels_of(validation.images, settings.mean, settings.std)
    assert photos.dtype == np.uint8 and photos.shape[1:] == (*settings.input_size[1:], 3)
    channel = (1, 3, 1, 1)
    again = (photos.transpose(0, 3, 1, 2) / 255 - np.reshape(settings.mean, channel)) / np.reshape(settings.std,
                                                                                                  channel)
    np.testing.assert_allclose(again, validation.images, atol=1e-5)


def _program_ops(spec) -> list:
    main = spec.mlProgram.functions["main"]
    return list(main.block_specializations[main.opset].operations)


def _float_constants(program: list) -> dict[str, list[float]]:
    return {op.outputs[0].name: list(op.attributes["val"].immediateValue.tensor.floats.values)
            for op in program if op.type == "const"}


def _classify_labels(program: list) -> list[str]:
    [classify] = [op for op in program if op.type == "classify"]
    labels = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    return [label.immediateValue.tensor.strings.values[0] for label in labels]


def test_the_openvino_export_predicts_photos_like_its_checkpoint(
    openvino_export: Path, checkpoint: Path, demo_project: Path
) -> None:
    photos = collect_image_paths([demo_project])[::7][:16]
    expected = Predictor(checkpoint, device="cpu").predict_proba(photos).probabilities
    model = load_any_model(openvino_export)
    assert isinstance(model, ExportedModel) and model.title == "OpenVINO"
    answered = model.predict_proba(photos).probabilities
    assert float((answered.argmax(axis=1) == expected.argmax(axis=1)).mean()) >= 0.99
    assert float(np.abs(answered - expected).max()) <= PARITY_TOLERANCE


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_a_coreml_export_cannot_predict_here_and_says_why(coreml_export: tuple[Path, str]) -> None:
    folder, _ = coreml_export
    with pytest.raises(CheckpointError, match=r"the Core ML export cannot run here: converted, not executed"):
        load_any_model(folder)
