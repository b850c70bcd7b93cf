"""Deployment formats, one module each, registered in ``EXPORT_FORMATS``: ONNX (float and int8), TorchScript,
a timm folder, OpenVINO IR and a Core ML package (the last two opt-in, as int8 is).

Each format writes an ``ExportSubject`` (a model or an ensemble as one probability graph)
into a folder and loads it back as a callable from normalised ``(N, 3, H, W)`` float32
images to ``(N, C)`` float32 probabilities, so one parity check serves every format
(``engine.export.exporter``). A new format is one module here with an ``ExportFormat``
subclass passed to ``register_export_format``, imported below.
"""

# Importing a format registers it; this order is the order exports are written and listed in.
# isort: off
from engine.export.formats import onnx_format  # noqa: F401
from engine.export.formats import onnx_int8_format  # noqa: F401
from engine.export.formats import torchscript_format  # noqa: F401
from engine.export.formats import timm_format  # noqa: F401
from engine.export.formats import openvino_format  # noqa: F401
from engine.export.formats import coreml_format  # noqa: F401
# isort: on
from engine.export.formats.base import (
    EXPORT_FORMATS,
    METADATA_FILE,
    METADATA_FORMAT,
    ExportFormat,
    ExportSamples,
    ExportSubject,
    ProbabilityRunner,
    get_export_format,
    register_export_format,
    write_metadata,
)
from engine.export.formats.onnx_format import (
    MIN_OPSET,
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_OUTPUT,
    PREDICT_SCRIPT,
    PREDICT_TEMPLATE,
    read_onnx_metadata,
    require_onnx_packages,
)
from engine.export.formats.timm_format import load_timm_folder, timm_head_problem
from engine.export.formats.torchscript_format import TORCHSCRIPT_FILE, load_torchscript

__all__ = [
    "EXPORT_FORMATS", "METADATA_FILE", "METADATA_FORMAT", "MIN_OPSET", "ONNX_FILE", "ONNX_INPUT", "ONNX_OUTPUT",
    "PREDICT_SCRIPT", "PREDICT_TEMPLATE", "TORCHSCRIPT_FILE", "ExportFormat", "ExportSamples", "ExportSubject",
    "ProbabilityRunner", "get_export_format", "load_timm_folder", "load_torchscript", "read_onnx_metadata",
    "register_export_format", "require_onnx_packages", "timm_head_problem", "write_metadata",
]
