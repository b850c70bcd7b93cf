"""Checkpoints: safetensors weights with JSON metadata, written atomically, never unpickled.

One ``NAME.safetensors`` holds the model tensors (``model.*``) and, for resuming,
the optimizer tensors (``optimizer.*``) and RNG state (``rng.*``). The metadata
(classes, backbone, data settings, config digest, metrics, optimizer and scheduler
scalars) is embedded in the safetensors header, so the one atomic rename publishes
weights and metadata together; ``NAME.json`` beside it is a readable copy. Finding a
checkpoint and reading its metadata needs no torch: ``engine.models.checkpoint_metadata``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.core.atomic import atomic_write, atomic_write_json
from engine.core.errors import CheckpointError
from engine.models.checkpoint_metadata import (
    FORMAT_VERSION,
    METADATA_KEY,
    read_checkpoint_metadata,
    resolve_checkpoint_path,
)

MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."
RNG_PREFIX = "rng."


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the ``.safetensors`` file.
        metadata: the embedded JSON metadata.
        model_state: the model's state dict (CPU tensors).
        optimizer_state: the optimizer's state dict, when loaded for resuming.
        rng_state: the torch CPU generator state, when loaded for resuming.
    """

    path: Path
    metadata: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    rng_state: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    *,
    model_state: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and a readable ``.json`` copy of its metadata.

    Args:
        path: target ``NAME.safetensors``.
        model_state: tensors of the model (``module.state_dict()``).
        metadata: JSON-serialisable facts about the model (classes, backbone...).
        optimizer_state: ``optimizer.state_dict()`` to allow resuming, or None.

    Returns:
        The path of the written ``.safetensors`` file.

    Raises:
        StorageError: the disk is full or failing (the message names it and its free space); an
            older checkpoint at ``path`` is left as it was.
        CheckpointError: the weights could not be written for another reason; the same.
        OSError: the ``.json`` copy could not be written.
    """
    target = Path(path)
    tensors = {MODEL_PREFIX + key: _own(value) for key, value in model_state.items()}
    full_metadata = {"format_version": FORMAT_VERSION, **metadata}
    if optimizer_state is not None:
        optimizer_tensors, optimizer_scalars = _split_optimizer_state(optimizer_state)
        tensors.update(optimizer_tensors)
        full_metadata["optimizer"] = optimizer_scalars
        tensors[RNG_PREFIX + "torch"] = torch.get_rng_state()
    header = {METADATA_KEY: json.dumps(full_metadata, default=str)}
    try:
        atomic_write(target, lambda temp: save_file(tensors, str(temp), metadata=header))
    except SafetensorError as error:
        # A full or failing disk is a StorageError already (atomic_write reads the code safetensors reports).
        raise CheckpointError(f"{target}: cannot write the checkpoint ({error}); "
                              "a previous checkpoint there is unchanged") from error
    atomic_write_json(target.with_suffix(".json"), full_metadata)
    return target


def load_checkpoint(path: str | Path, *, with_training_state: bool = False) -> Checkpoint:
    """Load a checkpoint's model tensors (and, for resuming, optimizer and RNG state).

    Raises:
        CheckpointError: missing, damaged, not ours, or lacking training state when asked for it.
    """
    file = resolve_checkpoint_path(path)
    metadata = read_checkpoint_metadata(file)
    model_state: dict[str, torch.Tensor] = {}
    optimizer_tensors: dict[str, torch.Tensor] = {}
    rng_state = None
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.startswith(MODEL_PREFIX):
                    model_state[key[len(MODEL_PREFIX):]] = handle.get_tensor(key)
                elif with_training_state and key.startswith(OPTIMIZER_PREFIX):
                    optimizer_tensors[key] = handle.get_tensor(key)
                elif with_training_state and key == RNG_PREFIX + "torch":
                    rng_state = handle.get_tensor(key)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{file}: damaged checkpoint ({error})") from error
    optimizer_state = None
    if with_training_state:
        if "optimizer" not in metadata:
            raise CheckpointError(f"{file}: holds no optimizer state, so training cannot resume from it")
        optimizer_state = _join_optimizer_state(optimizer_tensors, metadata["optimizer"])
    return Checkpoint(file, metadata, model_state, optimizer_state, rng_state)


def _own(tensor: torch.Tensor) -> torch.Tensor:
    # safetensors refuses views and shared storage (tied weights): store private copies.
    return tensor.detach().to("cpu", copy=True).contiguous()


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    per_parameter_scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIMIZER_PREFIX}{index}.{key}"] = _own(value)
            else:
                per_parameter_scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": per_parameter_scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key[len(OPTIMIZER_PREFIX):].split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in scalars.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": scalars["param_groups"]}
