"""The ``openvino`` format: OpenVINO IR (``model.xml`` + ``model.bin``) for Intel CPUs, GPUs and NPUs, in float32.

Converted from the probability graph by OpenVINO's own PyTorch frontend, with a dynamic batch dimension;
labels and preprocessing are stored in the IR's ``rt_info`` as well as in ``metadata.json``. The weights are
kept in float32 (``save_model`` halves them to float16 by default) and the check compiles the model with
an ``f32`` inference precision: on CPUs with bfloat16 (avx512_bf16, AMX) the CPU plugin computes in bfloat16
by default, and its answers then differ from PyTorch by tenths of a probability. So an export is exact, and
parity-checked like ONNX. Opt-in: written only when asked for by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import CheckpointError
from engine.export.formats.base import (
    METADATA_FORMAT,
    ExportFormat,
    ExportSubject,
    ProbabilityRunner,
    example_batch,
    one_line,
    quiet_upstream_warnings,
    register_export_format,
)

OPENVINO_FILE = "model.xml"  # its weights go beside it, in model.bin
# The names metadata.json gives the graph's input and output (as the ONNX graph's).
OPENVINO_INPUT = "images"
OPENVINO_OUTPUT = "probabilities"
# The inference precision the check runs at, and that metadata.json promises.
OPENVINO_PRECISION = "f32"
# Where in the IR's rt_info our keys go (JSON strings, as in the ONNX file's metadata_props).
RT_INFO_SECTION = "transfer_studio"


class OpenVinoFormat(ExportFormat):
    """``model.xml`` and ``model.bin``: loads with ``openvino.Core().compile_model`` alone."""

    name = "openvino"
    title = "OpenVINO"
    use = "Fast inference on Intel CPUs, integrated GPUs and NPUs with the OpenVINO runtime (C++ or Python)."
    model_file = OPENVINO_FILE
    by_default = False

    def require(self) -> None:
        require_openvino()

    def write(self, subject: ExportSubject, folder: Path, metadata: dict[str, Any], opset: int) -> Path:
        import openvino
        import torch  # on first use (engine.export.formats.base)

        path = folder / OPENVINO_FILE
        channels, height, width = subject.settings.input_size
        try:
            with quiet_upstream_warnings(), torch.no_grad():
                model = openvino.convert_model(
                    subject.graph, example_input=example_batch(subject.settings),
                    # -1: any batch size; the image size stays fixed, as the model was trained for it.
                    input=[openvino.PartialShape([-1, channels, height, width])],
                )
        except Exception as error:  # noqa: BLE001  the converter raises anything; one line is what a user needs
            raise CheckpointError(f"{subject.label}: OpenVINO could not convert the model: "
                                  f"{one_line(error)}") from error
        model.inputs[0].get_tensor().set_names({OPENVINO_INPUT})
        model.outputs[0].get_tensor().set_names({OPENVINO_OUTPUT})
        # A consumer of the IR alone (no metadata.json) still finds what the model needs and answers.
        model.set_rt_info(METADATA_FORMAT, [RT_INFO_SECTION, "format"])
        for key in ("labels", "preprocessing", "source"):
            model.set_rt_info(json.dumps(metadata[key]), [RT_INFO_SECTION, key])
        # save_model writes model.xml and model.bin side by side; the staging folder is the export's own, so
        # a half-written pair is never published. compress_to_fp16=False: the default halves the weights.
        openvino.save_model(model, str(path), compress_to_fp16=False)
        metadata["openvino"] = {
            "version": openvino.get_version(),
            "files": [OPENVINO_FILE, path.with_suffix(".bin").name],
            "weights": "float32",
            "inference_precision": OPENVINO_PRECISION,
            "config": {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION},
            "note": "compile with INFERENCE_PRECISION_HINT f32: CPUs with bfloat16 otherwise compute in bfloat16",
        }
        return path

    def load(self, path: Path, *, threads: int | None = None) -> ProbabilityRunner:
        return load_openvino_runner(path, threads=threads)


def load_openvino_runner(path: Path, *, threads: int | None = None) -> ProbabilityRunner:
    """The IR compiled by OpenVINO's CPU plugin in float32, as ``images -> probabilities``.

    Args:
        path: the ``model.xml`` (``model.bin`` beside it).
        threads: inference threads; None: OpenVINO's default (every core).
    """
    import openvino  # on first use (engine.export.formats.base)

    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino.Core().compile_model(str(path), "CPU", config)

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(images)[0], dtype=np.float32)

    return run


def read_openvino_metadata(path: Path) -> dict[str, str]:
    """Our keys in an IR's ``rt_info`` (values as stored: strings, ours JSON-encoded)."""
    import openvino  # on first use (engine.export.formats.base)

    model = openvino.Core().read_model(str(path))
    if not model.has_rt_info([RT_INFO_SECTION]):
        return {}
    return {key: value.astype(str) for key, value in model.get_rt_info([RT_INFO_SECTION]).astype(dict).items()}


def require_openvino() -> None:
    """Fail early and clearly when OpenVINO is not installed (or cannot be imported).

    Raises:
        CheckpointError: naming the package and the command that installs it.
    """
    try:
        import openvino  # noqa: F401  the test itself: a broken install fails here, not halfway through an export
    except ImportError as error:
        raise CheckpointError(f"openvino export: the package 'openvino' is not installed or cannot be imported "
                              f"({one_line(error)}); install it with: pip install openvino") from error


register_export_format(OpenVinoFormat())
