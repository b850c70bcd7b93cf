"""The ``timm`` format: a folder that ``timm.create_model("local-dir:FOLDER", pretrained=True)`` rebuilds with
timm alone (``config.json`` and ``model.safetensors``); one model with a linear head, logits out."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core.atomic import atomic_write
from engine.core.errors import CheckpointError
from engine.export.formats.base import (
    ExportFormat,
    ExportSubject,
    ProbabilityRunner,
    register_export_format,
    torch_runner,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from engine.data.settings import DataSettings

TIMM_CONFIG_FILE = "config.json"
TIMM_WEIGHTS_FILE = "model.safetensors"


class TimmFormat(ExportFormat):
    """A timm folder: the member's own architecture and weights, the temperature folded into the classifier."""

    name = "timm"
    title = "timm folder"
    use = "For timm users who fine-tune further: timm.create_model(\"local-dir:FOLDER\") rebuilds it."

    def refusal(self, subject: ExportSubject) -> str | None:
        if subject.is_ensemble:
            return ("an ensemble has no timm form (a timm folder holds one timm model); export it as onnx or "
                    "torchscript, which hold the whole ensemble as one graph")
        return timm_head_problem(subject.heads[0])

    def write(self, subject: ExportSubject, folder: Path, metadata: dict[str, Any], opset: int) -> Path:
        temperature = subject.temperatures[0]
        write_timm_folder(subject.models[0], folder, head=subject.heads[0], classes=subject.classes,
                          settings=subject.settings, temperature=temperature)
        meaning = "logits in label order (timm models end before the softmax; apply it for probabilities)"
        if temperature != 1.0:
            meaning += f"; the classifier's weights are divided by the temperature {temperature:g}, so these logits "
            meaning += "are already calibrated"
        metadata["output"] = {**metadata["output"], "meaning": meaning}
        return folder

    def load(self, path: Path, *, threads: int | None = None) -> ProbabilityRunner:
        model = load_timm_folder(path)
        return torch_runner(lambda images: model(images).softmax(dim=1))


def timm_head_problem(head: Mapping[str, Any] | None) -> str | None:
    """Why timm cannot rebuild a head from ``config.json``, or None for a linear head (or timm's own)."""
    if head is None or head.get("head") in (None, "linear"):
        return None
    kind = head["head"]
    details = ", ".join(f"{key}={value}" for key, value in head.items() if key != "head")
    return (f"the timm format cannot hold its '{kind}' head ({details}): timm rebuilds only its own linear "
            "classifier from config.json. Export this model as onnx or torchscript, which hold the whole model, "
            "or train it with model.head=linear")


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
    from engine.models.backbones import classifier_of  # on first use (engine.export.formats.base)

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


def write_timm_folder(model: nn.Module, folder: Path, *, head: Mapping[str, Any] | None, classes: Sequence[str],
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
    import safetensors.torch  # on first use (engine.export.formats.base)

    # timm's own writer of the config.json that timm.create_model("local-dir:...") reads back; it is
    # not re-exported by timm.models, but using it keeps our folders in step with timm's format.
    from timm.models._hub import save_config_for_hf

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
    import timm  # on first use (engine.export.formats.base)

    location = Path(folder).resolve()
    try:
        model = timm.create_model(f"local-dir:{location}", pretrained=True)
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        raise CheckpointError(f"{location}: timm cannot load this folder ({error})") from error
    return model.eval()


register_export_format(TimmFormat())
