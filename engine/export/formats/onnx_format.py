"""The ``onnx`` format: one self-contained ``model.onnx`` graph (softmax inside, dynamic batch) with a
standalone ``predict.py`` beside it, checked through onnxruntime."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.atomic import atomic_write, atomic_write_text
from engine.core.errors import CheckpointError
from engine.export.formats.base import (
    METADATA_FORMAT,
    ExportFormat,
    ExportSubject,
    ProbabilityRunner,
    example_batch,
    quiet_upstream_warnings,
    register_export_format,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

ONNX_INPUT = "images"
ONNX_OUTPUT = "probabilities"
ONNX_FILE = "model.onnx"
# The oldest opset the dynamo exporter writes: asked for less, it logs a failed down-conversion
# and silently writes 18 anyway.
MIN_OPSET = 18
PREDICT_SCRIPT = "predict.py"
PREDICT_TEMPLATE = Path(__file__).resolve().parents[3] / "resources" / "predict_template.py"


class OnnxFormat(ExportFormat):
    """``model.onnx`` and ``predict.py``; the ONNX file carries labels and preprocessing in its ``metadata_props``."""

    name = "onnx"
    title = "ONNX"
    use = "Runs anywhere with onnxruntime (C++, C#, JS, mobile); a predict.py is written beside it."
    model_file = ONNX_FILE

    def require(self) -> None:
        require_onnx_packages()

    def write(self, subject: ExportSubject, folder: Path, metadata: dict[str, Any], opset: int) -> Path:
        path = folder / ONNX_FILE
        # What predict.py (and any other consumer of the file alone) needs, as JSON strings.
        props = {"format": METADATA_FORMAT,
                 **{key: json.dumps(metadata[key]) for key in ("labels", "preprocessing", "source")}}
        metadata["opset"] = write_onnx(subject.graph, example_batch(subject.settings), path, opset=opset,
                                       metadata_props=props, doc_string=f"Transfer Studio export of {subject.label}")
        atomic_write_text(folder / PREDICT_SCRIPT, PREDICT_TEMPLATE.read_text(encoding="utf-8"))
        return path

    def load(self, path: Path, *, threads: int | None = None) -> ProbabilityRunner:
        return load_onnx_runner(path, threads=threads)


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path, *, opset: int,
               metadata_props: Mapping[str, str], doc_string: str) -> int:
    """Export ``module`` with the dynamo exporter as one self-contained ``.onnx`` file.

    The graph has one input ``images`` ``(batch, 3, H, W)`` float32 with a dynamic batch
    dimension and one output ``probabilities`` ``(batch, C)``.

    Args:
        module: eval-mode module, ``(N, 3, H, W)`` normalised images to ``(N, C)`` probabilities.
        example: a batch of the input's shape (batch 2) to trace with.
        path: the file to write (weights inside it, never a separate ``.onnx.data``).
        opset: ONNX opset of the default domain, at least 18.
        metadata_props: string key/values stored in the model's ``metadata_props``.
        doc_string: the model's ``doc_string``.

    Returns:
        The opset of the default domain written into the file.

    Raises:
        CheckpointError: torch cannot export the module.
    """
    import torch  # on first use (engine.export.formats.base)

    try:
        with quiet_upstream_warnings(), torch.no_grad():
            program = torch.onnx.export(
                module,
                (example,),
                None,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                opset_version=opset,
                dynamo=True,
                # Positional, so the forward's argument name does not matter.
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    except (RuntimeError, ValueError, TypeError) as error:
        # torch colours its exporter messages for terminals; keep the plain first line.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        raise CheckpointError(f"{path}: torch could not export the model to ONNX: {first_line}") from error
    assert program is not None  # the dynamo exporter returns its program when given no file
    program.model.metadata_props.update(metadata_props)
    program.model.doc_string = doc_string
    # external_data=False: the weights go inside the one file (the default splits off large tensors).
    atomic_write(path, lambda temp: program.save(temp, external_data=False))
    return int(program.model.opset_imports.get("", opset))


def load_onnx_runner(path: Path, *, threads: int | None = None) -> ProbabilityRunner:
    """An onnxruntime CPU session over an exported file, as ``images -> probabilities``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads; None: onnxruntime's default (every core).
    """
    import onnxruntime  # the optional "export" extra, on first use

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the CPU provider's notes are not for our users
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([ONNX_OUTPUT], {ONNX_INPUT: images})[0]


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (values as stored: strings, ours JSON-encoded)."""
    import onnx  # the optional "export" extra, on first use

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def require_onnx_packages() -> None:
    """Fail early and clearly when the optional ONNX packages are missing.

    Raises:
        CheckpointError: onnx, onnxruntime or onnxscript (torch's exporter needs it) is not installed.
    """
    for name in ("onnx", "onnxruntime", "onnxscript"):
        if importlib.util.find_spec(name) is None:
            raise CheckpointError(
                f"onnx export: the package '{name}' is not installed; install the export extra "
                "(pip install 'transfer-studio[export]': onnx, onnxruntime, onnxscript)"
            )


register_export_format(OnnxFormat())
