"""The ``onnx-int8`` format: the ONNX graph quantized to 8-bit integers by ONNX Runtime's static quantization.

Weights are quantized per output channel (7-bit range, for x86), activations per tensor, with QDQ
nodes (what ONNX Runtime's CPU, TensorRT and OpenVINO providers fuse); the activation ranges are
calibrated on a few hundred of the model's own training images (``engine.export.samples``); the first
convolution and the classifier stay in float. An int8 model is not exact, so it is judged, not
parity-checked: on the validation images it must agree with the float model's top-1 and lose no more
than ``max_accuracy_drop`` of top-1 accuracy; otherwise it is refused with the numbers, and not published.
Opt-in: written only when asked for by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.atomic import atomic_write_text
from engine.core.errors import CheckpointError
from engine.export.formats.base import (
    METADATA_FORMAT,
    ExportFormat,
    ExportSamples,
    ExportSubject,
    ProbabilityRunner,
    example_batch,
    register_export_format,
)
from engine.export.formats.onnx_format import (
    ONNX_FILE,
    ONNX_INPUT,
    PREDICT_SCRIPT,
    PREDICT_TEMPLATE,
    load_onnx_runner,
    require_onnx_packages,
    write_onnx,
)

_CALIBRATION_BATCH = 16


class OnnxInt8Format(ExportFormat):
    """``model.onnx`` with int8 weights and activations, ``predict.py`` beside it (the same as for ``onnx``)."""

    name = "onnx-int8"
    title = "ONNX int8"
    use = "Smaller ONNX for CPUs and edge devices: int8, calibrated on your photos, refused if it loses accuracy."
    model_file = ONNX_FILE
    by_default = False
    needs_samples = True

    def require(self) -> None:
        require_onnx_packages()

    def write(self, subject: ExportSubject, folder: Path, metadata: dict[str, Any], opset: int) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        samples = _samples_of(subject)
        props = {"format": METADATA_FORMAT,
                 **{key: json.dumps(metadata[key]) for key in ("labels", "preprocessing", "source")}}
        float_file, prepared_file, path = folder / "float.onnx", folder / "prepared.onnx", folder / ONNX_FILE
        metadata["opset"] = write_onnx(subject.graph, example_batch(subject.settings), float_file, opset=opset,
                                       metadata_props=props, doc_string=f"Transfer Studio export of {subject.label}")
        try:
            # Shape inference and graph clean-up first, as ONNX Runtime advises before quantizing.
            quant_pre_process(str(float_file), str(prepared_file), skip_symbolic_shape=True)
            quantize_static(
                str(prepared_file), str(path), _calibration_reader(samples.calibration),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                # 7-bit weights: x86 CPUs saturate u8 x s8 products otherwise (ONNX Runtime's advice). With the
                # first convolution and the classifier kept in float, a Lite0 trained 3 epochs on the demo went
                # from 90% to 97% top-1 agreement with the float model (71% -> 75% accuracy, float 78%).
                reduce_range=True, nodes_to_exclude=_kept_in_float(prepared_file),
            )
        except Exception as error:  # noqa: BLE001  the quantizer raises anything; one line is what a user needs
            raise CheckpointError(f"{subject.label}: ONNX Runtime could not quantize the model to int8: "
                                  f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from error
        finally:
            float_file.unlink(missing_ok=True)
            prepared_file.unlink(missing_ok=True)
        _copy_metadata_props(path, props)
        atomic_write_text(folder / PREDICT_SCRIPT, PREDICT_TEMPLATE.read_text(encoding="utf-8"))
        metadata["quantization"] = {
            "method": "ONNX Runtime static quantization, QDQ, int8 weights per channel, uint8 activations",
            "calibration": samples.source,
        }
        return path

    def load(self, path: Path, *, threads: int | None = None) -> ProbabilityRunner:
        return load_onnx_runner(path, threads=threads)

    def judge(self, runner: ProbabilityRunner, subject: ExportSubject) -> dict[str, Any] | None:
        import torch

        samples = _samples_of(subject)
        with torch.no_grad():
            reference = subject.graph(torch.from_numpy(samples.validation)).numpy()
        quantized = np.concatenate([runner(batch) for batch in _batches(samples.validation)])
        verdict = int8_verdict(reference, quantized, samples.labels)
        verdict["max_accuracy_drop"] = samples.max_accuracy_drop
        verdict["images"] = samples.source
        drop = verdict["accuracy_float"] - verdict["accuracy_int8"]
        if drop > samples.max_accuracy_drop + 1e-9:
            raise CheckpointError(
                f"{subject.label}: the int8 model loses {drop:.1%} of top-1 accuracy ({verdict['accuracy_float']:.1%} "
                f"float, {verdict['accuracy_int8']:.1%} int8, {verdict['top1_agreement']:.1%} top-1 agreement on "
                f"{len(samples.labels)} images); the most allowed is {samples.max_accuracy_drop:.1%}, so it was "
                "not published"
            )
        return verdict


def _kept_in_float(model_file: Path) -> list[str]:
    """The nodes left unquantized: the first convolution (it sees raw pixels), the classifier and the softmax."""
    import onnx

    nodes = onnx.load(str(model_file), load_external_data=False).graph.node
    first_conv = [node.name for node in nodes if node.op_type == "Conv"][:1]
    return first_conv + [node.name for node in nodes if node.op_type in ("Gemm", "MatMul", "Softmax")]


def int8_verdict(reference: np.ndarray, quantized: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement of a quantized model with the float one, and the top-1 accuracy of both.

    Args:
        reference: ``(N, C)`` the float model's probabilities.
        quantized: ``(N, C)`` the quantized model's probabilities.
        labels: ``(N,)`` the true classes.
    """
    float_top1, int8_top1 = reference.argmax(axis=1), quantized.argmax(axis=1)
    return {
        "top1_agreement": float((float_top1 == int8_top1).mean()),
        "accuracy_float": float((float_top1 == labels).mean()),
        "accuracy_int8": float((int8_top1 == labels).mean()),
        "max_difference": float(np.abs(reference - quantized).max()),
    }


def _calibration_reader(images: np.ndarray) -> Any:
    """ONNX Runtime's calibration reader over an array of normalised images, a batch at a time."""
    from onnxruntime.quantization import CalibrationDataReader  # the optional "export" extra, on first use

    class CalibrationImages(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(_batches(images))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {ONNX_INPUT: batch}

    return CalibrationImages()


def _batches(images: np.ndarray) -> list[np.ndarray]:
    return [images[start:start + _CALIBRATION_BATCH] for start in range(0, len(images), _CALIBRATION_BATCH)]


def _samples_of(subject: ExportSubject) -> ExportSamples:
    if subject.samples is None:  # the exporter attaches them to every format that needs them

        raise CheckpointError(f"{subject.label}: an int8 export needs the model's training images to calibrate on")
    return subject.samples


def _copy_metadata_props(path: Path, props: dict[str, str]) -> None:
    """The quantizer drops the model's metadata; put labels and preprocessing back, for ``predict.py``."""
    import onnx

    from engine.core.atomic import atomic_write

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    atomic_write(path, lambda temp: onnx.save(model, str(temp)))


register_export_format(OnnxInt8Format())
