"""The ``torchscript`` format: the traced probability graph as one TorchScript archive, with its metadata inside."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.atomic import atomic_write
from engine.core.errors import CheckpointError
from engine.export.formats.base import (
    ExportFormat,
    ExportSubject,
    ProbabilityRunner,
    example_batch,
    quiet_upstream_warnings,
    register_export_format,
    torch_runner,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

TORCHSCRIPT_FILE = "model.torchscript.pt"
# The name of the JSON metadata inside a TorchScript archive (torch.jit's "extra files").
TORCHSCRIPT_METADATA = "metadata.json"


class TorchScriptFormat(ExportFormat):
    """``model.torchscript.pt``: loads with ``torch.jit.load`` alone, no Transfer Studio or timm needed."""

    name = "torchscript"
    title = "TorchScript"
    use = "For PyTorch without our code: torch.jit.load in Python, or LibTorch in a C++ server."
    model_file = TORCHSCRIPT_FILE

    def write(self, subject: ExportSubject, folder: Path, metadata: dict[str, Any], opset: int) -> Path:
        path = folder / TORCHSCRIPT_FILE
        write_torchscript(subject.graph, example_batch(subject.settings), path, metadata=metadata)
        return path

    def load(self, path: Path, *, threads: int | None = None) -> ProbabilityRunner:
        module, _ = load_torchscript(path)
        return torch_runner(module)


def write_torchscript(module: nn.Module, example: torch.Tensor, path: Path, *, metadata: Mapping[str, Any]) -> None:
    """Trace ``module`` and save it as a TorchScript archive with ``metadata.json`` inside.

    Raises:
        CheckpointError: the module cannot be traced.
    """
    import torch  # on first use (engine.export.formats.base)

    try:
        with quiet_upstream_warnings(), torch.no_grad():
            # check_trace re-runs the model to compare graphs (seconds per model); the parity check on
            # real images after reloading the saved file is the stronger test and runs anyway.
            traced = torch.jit.trace(module, (example,), check_trace=False)
    except (RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: torch could not trace the model for TorchScript: {error}") from error
    extra_files = {TORCHSCRIPT_METADATA: json.dumps(metadata, indent=2)}

    def save(temp: Path) -> None:
        with quiet_upstream_warnings():
            torch.jit.save(traced, str(temp), _extra_files=extra_files)

    atomic_write(path, save)


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load an exported TorchScript archive on the CPU, with the metadata saved inside it.

    TorchScript archives hold code and tensors, not pickled Python objects of ours.

    Returns:
        The eval-mode module (``(N, 3, H, W)`` normalised images to ``(N, C)`` probabilities)
        and the export metadata (``{}`` if the archive has none).

    Raises:
        CheckpointError: the file is missing or not a TorchScript archive.
    """
    import torch  # on first use (engine.export.formats.base)

    file = Path(path)
    extra_files = {TORCHSCRIPT_METADATA: ""}
    try:
        with quiet_upstream_warnings():
            module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra_files)
    except (RuntimeError, ValueError, OSError) as error:
        raise CheckpointError(f"{file}: not a loadable TorchScript archive ({error})") from error
    stored = extra_files[TORCHSCRIPT_METADATA]
    metadata = json.loads(stored) if stored else {}
    return module.eval(), metadata


register_export_format(TorchScriptFormat())
