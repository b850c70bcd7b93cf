"""Write a probability model in one deployment format (ONNX, TorchScript, a timm folder) and load it back.

Each writer takes an eval-mode module whose output is already what consumers get
(softmax probabilities; timm folders are the exception: timm models give logits), and
each loader returns a callable from a normalised ``(N, 3, H, W)`` float32 array to
``(N, C)`` float32 probabilities, so one parity check serves every format.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import timm
import torch

# timm's own writer of the config.json that timm.create_model("local-dir:...") reads back; it is
# not re-exported by timm.models, but using it keeps our folders in step with timm's format.
from timm.models._hub import save_config_for_hf
from torch import nn

from engine.core.atomic import atomic_write, atomic_write_json
from engine.core.errors import CheckpointError
from engine.models.backbones import classifier_of
from engine.data.settings import DataSettings

ONNX_INPUT = "images"
ONNX_OUTPUT = "probabilities"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
TIMM_CONFIG_FILE = "config.json"
TIMM_WEIGHTS_FILE = "model.safetensors"
# The name of the JSON metadata inside a TorchScript archive (torch.jit's "extra files").
TORCHSCRIPT_METADATA = "metadata.json"
# The oldest opset the dynamo exporter writes: asked for less, it logs a failed down-conversion
# and silently writes 18 anyway.
MIN_OPSET = 18
# Tracing with one image lets some models (ConvNeXt) specialise the batch dimension; two keep it free.
TRACE_BATCH = 2

ProbabilityRunner = Callable[[np.ndarray], np.ndarray]


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
    generator = torch.Generator().manual_seed(0)
    return torch.randn((TRACE_BATCH, *settings.input_size), generator=generator)


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
    program.model.metadata_props.update(metadata_props)
    program.model.doc_string = doc_string
    # external_data=False: the weights go inside the one file (the default splits off large tensors).
    atomic_write(path, lambda temp: program.save(temp, external_data=False))
    return int(program.model.opset_imports.get("", opset))


def load_onnx_runner(path: Path) -> ProbabilityRunner:
    """An onnxruntime CPU session over an exported file, as ``images -> probabilities``."""
    # onnx and onnxruntime are the optional "export" extra: imported only when an export uses them.
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the CPU provider's notes are not for our users
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([ONNX_OUTPUT], {ONNX_INPUT: images})[0]


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (values as stored: strings, ours JSON-encoded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def write_torchscript(module: nn.Module, example: torch.Tensor, path: Path, *, metadata: Mapping[str, Any]) -> None:
    """Trace ``module`` and save it as a TorchScript archive with ``metadata.json`` inside.

    Raises:
        CheckpointError: the module cannot be traced.
    """
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


def load_torchscript_runner(path: Path) -> ProbabilityRunner:
    """A loaded TorchScript export as ``images -> probabilities``."""
    module, _ = load_torchscript(path)
    return _torch_runner(module)


def timm_head_problem(head: Mapping[str, Any] | None) -> str | None:
    """Why timm cannot rebuild a head from ``config.json``, or None for a linear head (or timm's own)."""
    kind = None if head is None else head.get("head")
    if kind in (None, "linear"):
        return None
    details = ", ".join(f"{key}={value}" for key, value in head.items() if key != "head")
    return (f"the timm format cannot hold its '{kind}' head ({details}): timm rebuilds only its own linear "
            "classifier from config.json. Export this model as onnx or torchscript, which hold the whole model, "
            "or train it with model.head=linear")


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


def timm_state_dict(model: nn.Module, head: Mapping[str, Any] | None,
                    temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """The model's tensors under the names timm's own model of the architecture uses.

    Our linear head is ``Sequential(dropout, fc)`` installed where timm's ``nn.Linear``
    classifier was, so its ``<classifier>.fc.*`` tensors become ``<classifier>.*``. A
    temperature ``T`` is folded into the classifier (weight and bias divided by ``T``): the
    last layer is affine, so its logits come out already divided by ``T``.

    Raises:
        CheckpointError: the head is not linear (see ``timm_head_problem``).
    """
    problem = timm_head_problem(head)
    if problem is not None:
        raise CheckpointError(problem)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    classifier = classifier_of(model)
    path = next(name for name, module in model.named_modules() if module is classifier)
    if head is not None:
        inner = re.compile(rf"^{re.escape(path)}\.fc\.(weight|bias)$")
        state = {inner.sub(rf"{path}.\1", key): value for key, value in state.items()}
    if temperature != 1.0:
        for key in (f"{path}.weight", f"{path}.bias"):
            if key in state:
                state[key] = state[key] / temperature
    return state


def write_timm_folder(model: nn.Module, folder: Path, *, head: Mapping[str, Any] | None, classes: list[str],
                      settings: DataSettings, temperature: float = 1.0) -> None:
    """Write ``config.json`` (timm's pretrained config, label names) and ``model.safetensors``.

    ``timm.create_model("local-dir:FOLDER", pretrained=True)`` rebuilds the model from them.

    Args:
        model: the timm model with our head installed (from ``engine.evaluation.predict.Predictor``).
        folder: an existing, empty folder.
        head: the checkpoint's head signature (None: timm's own classifier).
        classes: label names, in output order.
        settings: the preprocessing the model was trained with.
        temperature: the checkpoint's temperature, folded into the classifier (1: none).

    Raises:
        CheckpointError: the head is not linear.
    """
    state = timm_state_dict(model, head, temperature)
    data_config = {
        "input_size": tuple(settings.input_size),
        "mean": tuple(settings.mean),
        "std": tuple(settings.std),
        "interpolation": settings.interpolation,
        "crop_pct": settings.crop_pct,
        "crop_mode": settings.crop_mode,
    }
    atomic_write(folder / TIMM_WEIGHTS_FILE, lambda temp: safetensors.torch.save_file(state, str(temp)))
    atomic_write(
        folder / TIMM_CONFIG_FILE,
        lambda temp: save_config_for_hf(model, str(temp), model_config={"label_names": list(classes)},
                                        data_config=data_config),
    )


def load_timm_folder(folder: str | Path) -> nn.Module:
    """Rebuild a model from a timm folder with timm alone; eval mode, CPU, logits out.

    Raises:
        CheckpointError: timm cannot build the model or its weights do not fit.
    """
    location = Path(folder).resolve()
    try:
        model = timm.create_model(f"local-dir:{location}", pretrained=True)
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        raise CheckpointError(f"{location}: timm cannot load this folder ({error})") from error
    return model.eval()


def load_timm_runner(folder: Path) -> ProbabilityRunner:
    """A timm folder rebuilt by timm, plus softmax, as ``images -> probabilities``."""
    model = load_timm_folder(folder)
    return _torch_runner(lambda images: model(images).softmax(dim=1))


def write_metadata(folder: Path, metadata: Mapping[str, Any]) -> Path:
    """Write ``metadata.json`` into an export folder."""
    return atomic_write_json(folder / "metadata.json", dict(metadata))


def _torch_runner(module: Callable[[torch.Tensor], torch.Tensor]) -> ProbabilityRunner:
    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(images)).float().numpy()

    return run
