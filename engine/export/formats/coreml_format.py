"""The ``coreml`` format: a Core ML ``model.mlpackage`` (an ML program) for apps on iPhone, iPad and Mac, that takes
a photo and gives its class label and a probability per label.

Preprocessing is built in: the input is an RGB image of the model's size, which Core ML scales to [0, 1]
(``ImageType``, scale 1/255) and the model normalises with its own mean and std per channel (Core ML's
image input has one scale for all channels, so the std cannot go there). Labels come from a classifier
config. Converted with coremltools from ``torch.export`` (its ``torch.jit.trace`` path fails on torch 2.13),
in float32 so it is comparable with PyTorch. Core ML runs only on macOS and iOS: elsewhere the export is
converted and published unchecked, its metadata saying so. Opt-in: written only when asked for by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import shutil
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.core.errors import CheckpointError
from engine.export.formats.base import (
    METADATA_FORMAT,
    ExportFormat,
    ExportSubject,
    ProbabilityRunner,
    one_line,
    quiet_upstream_warnings,
    register_export_format,
)

if TYPE_CHECKING:
    from torch import nn

    from engine.data.settings import DataSettings

COREML_FILE = "model.mlpackage"  # a folder
COREML_INPUT = "image"
COREML_AUTHOR = "Transfer Studio"
NOT_RUNNABLE = "converted, not executed on this OS (Core ML runs on macOS/iOS)"
# The keys of ``user_defined_metadata`` we write (JSON strings but "format").
USER_METADATA_KEYS = ("labels", "preprocessing", "source")


class CoreMlFormat(ExportFormat):
    """``model.mlpackage``: an image in, ``classLabel`` and ``classLabel_probs`` (a probability per label) out."""

    name = "coreml"
    title = "Core ML"
    use = "For apps on iPhone, iPad and Mac (Xcode, Vision): takes a photo, gives its label; checked on macOS only."
    model_file = COREML_FILE
    by_default = False

    def require(self) -> None:
        require_coremltools()

    def not_runnable_here(self) -> str | None:
        if sys.platform != "darwin":
            return NOT_RUNNABLE
        # A macOS whose coremltools came without its compiled runtime (a source build) cannot run models either.
        with quiet_coremltools():
            runtime = importlib.util.find_spec("coremltools.libcoremlpython")
        return None if runtime is not None else f"{NOT_RUNNABLE}: this coremltools has no Core ML runtime"

    def write(self, subject: ExportSubject, folder: Path, metadata: dict[str, Any], opset: int) -> Path:
        import torch  # on first use (engine.export.formats.base)

        with quiet_coremltools():
            import coremltools as ct

        path, converted = folder / COREML_FILE, folder / "converted.mlpackage"
        channels, height, width = subject.settings.input_size
        module = _normalising(subject.graph, subject.settings)
        pixels = torch.rand((1, channels, height, width), generator=torch.Generator().manual_seed(0))
        try:
            with quiet_upstream_warnings(), quiet_coremltools(), torch.no_grad():
                program = torch.export.export(module, (pixels,)).run_decompositions({})
                model = ct.convert(
                    program,
                    convert_to="mlprogram",
                    inputs=[ct.ImageType(name=COREML_INPUT, shape=tuple(pixels.shape), scale=1 / 255,
                                         color_layout=ct.colorlayout.RGB)],
                    classifier_config=ct.ClassifierConfig(list(subject.classes)),
                    # float32 (the default is float16), so that the export is comparable with PyTorch.
                    compute_precision=ct.precision.FLOAT32,
                    # Converted into the staging folder, not a temporary one kept until the process exits.
                    package_dir=str(converted),
                )
        except Exception as error:  # noqa: BLE001  the converter raises anything; one line is what a user needs
            with quiet_coremltools():
                # The converter's frames hold its temporary folder: freed now, its clean-up warning stays quiet.
                traceback.clear_frames(error.__traceback__)
            shutil.rmtree(converted, ignore_errors=True)
            raise CheckpointError(f"{subject.label}: coremltools could not convert the model to Core ML: "
                                  f"{one_line(error)}") from error
        try:
            label, probabilities = _describe(model, subject, metadata)
            model.save(str(path))
        finally:
            shutil.rmtree(converted, ignore_errors=True)
        # This export's model takes an image, not the normalised tensor the other formats take.
        metadata["input"] = {"name": COREML_INPUT, "type": "image", "color": "RGB", "width": width, "height": height,
                             "meaning": "the photo resized and centre-cropped as preprocessing says, pixels 0-255; "
                                        "the model scales them to [0, 1] and normalises them itself"}
        metadata["output"] = {
            "name": probabilities, "type": "dictionary", "label": label,
            "meaning": f"{probabilities}: the probability of each label (softmax, they sum to 1); "
                       f"{label}: the most probable label",
        }
        metadata["coreml"] = {
            "coremltools": ct.__version__,
            "model_type": "mlprogram",
            "precision": "float32",
            "specification_version": model.get_spec().specificationVersion,
        }
        return path

    def load(self, path: Path, *, threads: int | None = None) -> ProbabilityRunner:
        """The package run by Core ML on the CPU (macOS only), as ``images -> probabilities``.

        The normalised images are turned back into the 8-bit photos the model takes. For real photos this
        is lossless: the eval transform resizes and crops 8-bit images, so their normalised values lie on
        the 1/255 grid. ``threads`` is ignored: Core ML has no thread setting.
        """
        with quiet_coremltools():
            import coremltools as ct
        from PIL import Image

        # CPU only: the GPU may, and the Neural Engine does, compute in float16, which the check is not about.
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        stored = model.user_defined_metadata
        labels = json.loads(stored["labels"])
        preprocessing = json.loads(stored["preprocessing"])
        probabilities = model.get_spec().description.predictedProbabilitiesName

        def run(images: np.ndarray) -> np.ndarray:
            rows = []
            for photo in pixels_of(images, preprocessing["mean"], preprocessing["std"]):
                answer = model.predict({COREML_INPUT: Image.fromarray(photo, "RGB")})[probabilities]
                rows.append([answer[label] for label in labels])
            return np.asarray(rows, dtype=np.float32)

        return run


def pixels_of(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``(N, 3, H, W)`` float32 images back to ``(N, H, W, 3)`` uint8 RGB photos.

    Args:
        images: normalised as ``(pixels / 255 - mean) / std`` per channel.
        mean: per-channel mean of the normalisation.
        std: per-channel standard deviation of the normalisation.
    """
    channel = (1, 3, 1, 1)
    scaled = (images * np.reshape(std, channel) + np.reshape(mean, channel)) * 255
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _normalising(graph: nn.Module, settings: DataSettings) -> nn.Module:
    """``graph`` behind the per-channel normalisation: ``(1, 3, H, W)`` pixels in [0, 1] to probabilities."""
    import torch
    from torch import nn

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = graph  # not "graph": an exported GraphModule has its own
            self.register_buffer("mean", torch.tensor(settings.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(settings.std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.classifier((pixels - self.mean) / self.std)

    return Normalised().eval()


def _describe(model: Any, subject: ExportSubject, metadata: dict[str, Any]) -> tuple[str, str]:
    """Fill the model's description (Xcode shows it) and user metadata; returns its label and probability outputs."""
    description = model.get_spec().description
    label, probabilities = description.predictedFeatureName, description.predictedProbabilitiesName
    classes = list(subject.classes)
    kind = "ensemble" if subject.is_ensemble else "model"
    model.author = COREML_AUTHOR
    model.short_description = (f"Image classifier ({kind}) of {len(classes)} classes: {', '.join(classes)}. "
                               f"Exported by {COREML_AUTHOR} from {subject.label}.")
    channels, height, width = subject.settings.input_size
    model.input_description[COREML_INPUT] = (
        f"RGB photo of {width}x{height}, resized and centre-cropped as the preprocessing metadata says; "
        "the model scales it to [0, 1] and normalises it with its own mean and std")
    model.output_description[label] = "the most probable label"
    model.output_description[probabilities] = "the probability of each label (softmax, they sum to 1)"
    stored = model.user_defined_metadata
    stored["format"] = METADATA_FORMAT
    for key in USER_METADATA_KEYS:
        stored[key] = json.dumps(metadata[key])
    return label, probabilities


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[None]:
    """Keep coremltools' import notes, progress bars and internal warnings out of the CLI's output.

    On import it logs a warning per missing optional part (the macOS runtime, a newer scikit-learn
    or torch than it was tested with); converting draws tqdm progress bars on stderr, raises a
    DeprecationWarning about its own op registry per op, and leaves a temporary folder to the garbage
    collector (a ResourceWarning). None of it is actionable by our users; a conversion that fails
    raises, and that error is reported. stderr is redirected because tqdm offers no switch but an
    environment variable read when tqdm is first imported.
    """
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", message=r"Function _TORCH_OPS_REGISTRY\.", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r"Implicitly cleaning up <TemporaryDirectory",
                                    category=ResourceWarning)
            yield
    finally:
        logger.setLevel(level)


def require_coremltools() -> None:
    """Fail early and clearly when coremltools is not installed (or cannot be imported).

    Raises:
        CheckpointError: naming the package and the command that installs it.
    """
    try:
        with quiet_coremltools():
            import coremltools  # noqa: F401  the test itself: a broken install fails here, not mid-export
    except ImportError as error:
        raise CheckpointError(f"coreml export: the package 'coremltools' is not installed or cannot be imported "
                              f"({one_line(error)}); install it with: pip install coremltools") from error


register_export_format(CoreMlFormat())
