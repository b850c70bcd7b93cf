"""The onnx-int8 export (calibrated on the model's own training photos, judged against the float model, refused
when it loses more accuracy than allowed) and ``main.py benchmark`` of the float and int8 exports side by side."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from cli.commands import build_parser, run_command
from cli.parsing import EXIT_OK, EXIT_USAGE
from engine.core.errors import CheckpointError, ConfigError
from engine.core.paths import project_dir_for
from engine.evaluation.catalog import list_models
from engine.evaluation.predict import Predictor, collect_image_paths
from engine.export.any_model import load_any_model
from engine.export.benchmark import BENCHMARK_CSV, BENCHMARK_JSON
from engine.export.exporter import export_model
from engine.export.formats import ONNX_FILE, get_export_format, read_onnx_metadata
from engine.export.formats.onnx_format import load_onnx_runner
from engine.export.formats.onnx_int8_format import int8_verdict
from engine.export.samples import export_samples
from engine.export.source import load_source


@pytest.fixture(scope="module")
def checkpoint(demo_project: Path) -> Path:
    return next(entry.path for entry in list_models(project_dir_for(demo_project)) if entry.kind == "checkpoint")


@pytest.fixture(scope="module")
def int8_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("int8") / "exports"
    return export_model(checkpoint, out, ["onnx-int8"]), out


def test_int8_is_opt_in(checkpoint: Path) -> None:
    assert get_export_format("onnx-int8").by_default is False
    assert get_export_format("onnx").by_default is True


def test_the_int8_model_is_smaller_agrees_with_the_float_one_and_keeps_its_accuracy(
    checkpoint: Path, int8_export
) -> None:
    result, out = int8_export
    item = result.exports["onnx-int8"]
    judged = item.judgement
    assert judged["accuracy_float"] - judged["accuracy_int8"] <= judged["max_accuracy_drop"] == 0.01
    assert judged["top1_agreement"] >= 0.9
    assert "training and" in judged["images"] and "validation images" in judged["images"]
    metadata = json.loads((out / "onnx-int8" / "metadata.json").read_text())
    assert metadata["judgement"] == judged and "calibration" in metadata["quantization"]
    assert sorted(path.name for path in (out / "onnx-int8").iterdir()) == ["metadata.json", "model.onnx",
                                                                         "predict.py"]
    float_size = checkpoint.stat().st_size  # every float32 weight of the model (the float ONNX is as large)
    int8_size = (out / "onnx-int8" / ONNX_FILE).stat().st_size
    assert int8_size < 0.5 * float_size, (int8_size, float_size)
    model = onnx.load(str(out / "onnx-int8" / ONNX_FILE))
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node), "quantized with QDQ nodes"
    # predict.py reads labels and preprocessing from the file itself: the quantizer must not drop them.
    assert json.loads(read_onnx_metadata(out / "onnx-int8" / ONNX_FILE)["labels"]) == metadata["labels"]
    assert "top-1 agreement" in result.summary()[0]


def test_an_int8_model_that_loses_accuracy_is_refused_with_the_numbers(checkpoint: Path, int8_export) -> None:
    _, out = int8_export
    source = load_source(checkpoint)
    samples = export_samples(source.configs[0], source.classes, source.settings[0], label="demo")
    subject = dataclasses.replace(source.subject(), samples=dataclasses.replace(samples, max_accuracy_drop=0.0))
    real = load_onnx_runner(out / "onnx-int8" / ONNX_FILE)

    def off_by_one_class(images: np.ndarray) -> np.ndarray:
        """A broken model: the real int8 model's answers shifted to the next class."""
        return np.roll(real(images), 1, axis=1)

    with pytest.raises(CheckpointError, match=r"loses .* of top-1 accuracy .* float, .* int8, .* agreement"):
        get_export_format("onnx-int8").judge(off_by_one_class, subject)
    assert get_export_format("onnx-int8").judge(real, subject)["top1_agreement"] >= 0.9


def test_the_verdict_counts_agreement_and_both_accuracies() -> None:
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    quantized = np.array([[0.8, 0.2], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])
    verdict = int8_verdict(reference, quantized, np.array([0, 1, 1, 1]))
    assert verdict["top1_agreement"] == 0.75
    assert verdict["accuracy_float"] == 0.75 and verdict["accuracy_int8"] == 0.5
    assert verdict["max_difference"] == pytest.approx(0.4)


def test_a_bad_accuracy_limit_is_refused_before_any_work(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_accuracy_drop"):
        export_model(checkpoint, tmp_path, ["onnx-int8"], max_accuracy_drop=5)
    assert not any(tmp_path.iterdir())


def test_benchmark_measures_pytorch_and_each_format_and_saves_the_table(int8_export, capsys) -> None:
    _, out = int8_export
    assert run_command(build_parser().parse_args(["benchmark", str(out), "--runs", "5", "--threads", "2",
                                                     "--throughput-batch", "4"])) == EXIT_OK
    printed = capsys.readouterr().out
    report = json.loads((out / BENCHMARK_JSON).read_text())
    rows = {row["format"]: row for row in report["rows"]}
    assert list(rows) == ["pytorch", "onnx-int8"]
    for row in rows.values():
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] and row["throughput_images_per_s"] > 0
        assert 0 <= row["top1"] <= 1 and row["size_bytes"] > 0
    assert rows["onnx-int8"]["size_bytes"] < 0.5 * rows["pytorch"]["size_bytes"]
    assert abs(rows["onnx-int8"]["top1"] - rows["pytorch"]["top1"]) <= 0.01, "within the export's accuracy rule"
    assert report["fastest"] in rows and report["most_accurate"] in rows
    assert report["threads"] == 2 and "validation images" in report["images"]
    with (out / BENCHMARK_CSV).open(newline="") as handle:
        assert [row["format"] for row in csv.DictReader(handle)] == ["pytorch", "onnx-int8"]
    assert "<- fastest" in printed and "most accurate" in printed
    print(printed)


def test_benchmark_names_what_is_wrong_in_one_line(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_command(build_parser().parse_args(["benchmark", str(empty)])) == EXIT_USAGE
    assert f"{empty}: no exports in it" in capsys.readouterr().err
    damaged = tmp_path / "damaged" / "onnx"
    damaged.mkdir(parents=True)
    (damaged / "metadata.json").write_text("{")
    assert run_command(build_parser().parse_args(["benchmark", str(damaged.parent)])) == EXIT_USAGE
    error = capsys.readouterr().err
    assert f"{damaged / 'metadata.json'}: the export's metadata cannot be read" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_a_refused_export_is_kept_aside_and_the_published_one_stays(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The exporter's side of a refusal, on the quickest format to write: its judge refuses the second export.
    torchscript = get_export_format("torchscript")
    out = tmp_path / "exports"
    export_model(checkpoint, out, ["torchscript"])
    published = {path.name: path.read_bytes() for path in (out / "torchscript").iterdir()}

    def refuse(runner, subject):
        raise CheckpointError(f"{subject.label}: the torchscript model loses 5.0% of top-1 accuracy; not published")

    monkeypatch.setattr(torchscript, "judge", refuse)
    with pytest.raises(CheckpointError, match=r"not published \(kept aside in .*torchscript\.refused\)"):
        export_model(checkpoint, out, ["torchscript"])
    assert {path.name: path.read_bytes() for path in (out / "torchscript").iterdir()} == published
    aside = json.loads((out / "torchscript.refused" / "metadata.json").read_text())
    assert "loses 5.0%" in aside["refused"]
    assert not [path.name for path in out.iterdir() if "staging" in path.name]


def test_the_int8_export_predicts_photos_in_its_own_runtime(checkpoint: Path, int8_export,
                                                            demo_project: Path) -> None:
    _, out = int8_export
    photos = collect_image_paths([demo_project])[::7][:16]
    expected = Predictor(checkpoint, device="cpu").predict(photos, top_k=1)
    answered = load_any_model(out / "onnx-int8").predict(photos, top_k=1)
    agreement = np.mean([a.labels == e.labels for a, e in zip(answered, expected, strict=True)])
    assert agreement >= 0.9, agreement  # int8 is judged, not exact: as its own check allows
