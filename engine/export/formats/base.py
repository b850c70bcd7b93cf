"""What every export format shares: the ``ExportFormat`` interface, its registry, the ``ExportSubject`` it writes,
and the helpers of writers and loaders (the traced example batch, a torch runner, the metadata file).

The CLI and the GUI offer the registered formats before any model code loads, so the format
modules import nothing heavy at import time: torch, timm and onnx are imported inside the
functions that write and load, the first time an export runs.
"""

from __future__ import annotations

import abc
import contextlib
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engine.core.atomic import atomic_write_json
from engine.core.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from engine.data.settings import DataSettings

# The "format" of every export's metadata.json, and of the ONNX file's own metadata.
METADATA_FORMAT = "transfer-studio-export"
METADATA_FILE = "metadata.json"
# Tracing with one image lets some models (ConvNeXt) specialise the batch dimension; two keep it free.
TRACE_BATCH = 2

# OpenVINO's messages begin with the C++ source location of a failed check: not a reason.
_CHECK_LOCATION = re.compile(r"^Check '.*' failed at \S+:\d+:?$")
_MOST_REASON_CHARACTERS = 300  # a converter's message can hold a whole graph dump

ProbabilityRunner = Callable[[np.ndarray], np.ndarray]
"""A loaded export: ``(N, 3, H, W)`` float32 normalised images to ``(N, C)`` float32 probabilities."""


@dataclass(frozen=True)
class ExportSamples:
    """Real images of the model's own data, for formats that are not exact (quantized ones).

    Attributes:
        calibration: ``(N, 3, H, W)`` float32 normalised training images to calibrate with.
        validation: ``(M, 3, H, W)`` float32 normalised validation images to judge the format on.
        labels: ``(M,)`` the validation images' class indices, in the subject's class order.
        max_accuracy_drop: the most top-1 accuracy (a fraction, 0.01 = 1 point) a format may lose
            against the float model and still be published.
        source: where the images came from, in words.
    """

    calibration: np.ndarray
    validation: np.ndarray
    labels: np.ndarray
    max_accuracy_drop: float
    source: str


@dataclass(frozen=True)
class ExportSubject:
    """What is exported, as the formats see it: one model or an ensemble, already on the CPU in eval mode.

    Attributes:
        label: names the source in messages (a checkpoint or manifest path).
        graph: normalised ``(N, 3, H, W)`` images to ``(N, C)`` softmax probabilities, the
            whole ensemble in one module.
        models: the members' timm models with their heads installed (logits out).
        heads: per member, the checkpoint's head signature (None: timm's own classifier).
        temperatures: per member, the temperature its logits are divided by (1: none).
        classes: label names, in output order.
        settings: the preprocessing of the graph's input (the first member's).
        is_ensemble: more than one member, or a manifest of one.
        samples: real images for formats that need them (``ExportFormat.needs_samples``), else None.
    """

    label: str
    graph: nn.Module
    models: Sequence[nn.Module]
    heads: Sequence[Mapping[str, Any] | None]
    temperatures: Sequence[float]
    classes: Sequence[str]
    settings: DataSettings
    is_ensemble: bool
    samples: ExportSamples | None = None


class ExportFormat(abc.ABC):
    """One deployment format: writes a subject into a folder and loads it back for the parity check.

    A format is one module of ``engine.export.formats`` with a subclass registered by
    ``register_export_format``; ``export_model`` then accepts its ``name``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as the Export page names it
    use: ClassVar[str] = ""  # who uses it, in a sentence, for the Export page
    model_file: ClassVar[str] = ""  # the model's file in the export folder; empty: the folder is the model
    # Written when every format is asked for (no formats named); an opt-in format is written only by name.
    by_default: ClassVar[bool] = True
    # Needs ``subject.samples`` (real images to calibrate and judge with) to be written and checked.
    needs_samples: ClassVar[bool] = False

    def require(self) -> None:
        """Fail early, before any work, when an optional package the format needs is missing.

        Raises:
            CheckpointError: naming the package and how to install it.
        """
        return  # most formats need only what Transfer Studio itself installs

    def not_runnable_here(self) -> str | None:
        """Why this machine cannot execute the format (Core ML off macOS), or None (the default): it can.

        An export that cannot run here is published unchecked, its metadata saying so in these
        words, never as passed; ``load`` is not called for it.
        """
        return None

    def refusal(self, subject: ExportSubject) -> str | None:
        """Why ``subject`` has no form in this format (e.g. an ensemble as a timm folder), or None."""
        return None

    @abc.abstractmethod
    def write(self, subject: ExportSubject, folder: Path, metadata: dict[str, Any], opset: int) -> Path:
        """Write ``subject`` into the empty ``folder``; may add facts of the format to ``metadata``.

        Returns:
            The model file (or the folder, for formats that are a folder).

        Raises:
            CheckpointError: the subject cannot be written in this format.
        """

    @abc.abstractmethod
    def load(self, path: Path, *, threads: int | None = None) -> ProbabilityRunner:
        """The written export, loaded the way its consumers load it, as ``images -> probabilities``.

        Args:
            path: the model file (or folder) ``write`` returned.
            threads: CPU threads for a runtime of its own (onnxruntime); torch formats follow
                ``torch.set_num_threads``. None: the runtime's default.
        """

    def model_path(self, folder: Path) -> Path:
        """The model file (or folder) of a published export folder of this format."""
        return folder / self.model_file if self.model_file else folder

    def judge(self, runner: ProbabilityRunner, subject: ExportSubject) -> dict[str, Any] | None:
        """A format that is not exact judges itself here: None (the default) means "exact: check parity".

        Returns:
            The facts of the check, for ``metadata.json``, when the export may be published.

        Raises:
            CheckpointError: the export is not good enough to publish (the message gives the numbers).
        """
        return None


# The package's __init__ imports every format module, so the registry needs no source.
EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")


def register_export_format(export_format: ExportFormat, *, replace: bool = False) -> ExportFormat:
    """Add a format to the registry under its ``name``; returns it.

    Raises:
        ValueError: another format has the name and ``replace`` is false.
    """
    return EXPORT_FORMATS.register(export_format.name, export_format, replace=replace)


def get_export_format(name: str) -> ExportFormat:
    """The format registered as ``name``.

    Raises:
        ConfigError: no format has this name (the message lists them).
    """
    return EXPORT_FORMATS.get(name)


@contextlib.contextmanager
def quiet_upstream_warnings() -> Iterator[None]:
    """Silence the deprecation notices torch's exporters raise about themselves.

    torch 2.13 marks every ``torch.jit`` entry point deprecated, and ``torch.export``'s
    pytree code warns about its own internal ``LeafSpec`` use. Neither is actionable by our
    users, and both would be raised as errors wherever warnings are errors (the tests).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated", category=FutureWarning)
        yield


def example_batch(settings: DataSettings) -> torch.Tensor:
    """A fixed ``(2, 3, H, W)`` float32 batch to trace with (values do not matter, shapes do)."""
    import torch  # on first use (module docstring)

    generator = torch.Generator().manual_seed(0)
    return torch.randn((TRACE_BATCH, *settings.input_size), generator=generator)


def torch_runner(module: Callable[[torch.Tensor], torch.Tensor]) -> ProbabilityRunner:
    """A torch callable as a ``ProbabilityRunner`` (numpy in, numpy out, no gradients)."""
    import torch  # on first use (module docstring)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(images)).float().numpy()

    return run


def write_metadata(folder: Path, metadata: Mapping[str, Any]) -> Path:
    """Write ``metadata.json`` into an export folder."""
    return atomic_write_json(folder / METADATA_FILE, dict(metadata))


def one_line(error: BaseException) -> str:
    """An upstream error as one plain line: its type, then its message's lines joined, shortened.

    The lines are joined, not just the first taken: OpenVINO's first line is the C++ source location
    of a failed check (dropped here), and its reason ("No conversion rule found for operations:
    aten::histc") comes lines later. Terminal colours (torch colours its messages) are removed.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _CHECK_LOCATION.match(line.strip())]
    reason = " ".join(lines)
    if len(reason) > _MOST_REASON_CHARACTERS:
        reason = reason[:_MOST_REASON_CHARACTERS - 3].rstrip() + "..."
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__
