"""Weight files read safely: a state dict from ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` without ever
running a full unpickle, and a content digest for cache keys."""

from __future__ import annotations

import argparse
import functools
import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from engine.core.errors import CheckpointError

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

_DIGEST_LENGTH = 16
_DIGEST_CHUNK_BYTES = 1 << 20

StateDict = dict[str, torch.Tensor]


def file_digest(path: str | Path) -> str:
    """Return a short (16 hex digits) sha256 of a file's content, for cache keys.

    The result is cached by (path, size, modification time), so asking again for an
    unchanged file costs one ``stat``.

    Raises:
        CheckpointError: the file cannot be read.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
        return _cached_digest(str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError as error:
        raise CheckpointError(f"cannot read weights file {resolved}: {error.strerror or error}") from error


@functools.lru_cache(maxsize=256)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime_ns are only part of the cache key: a changed file is hashed again.
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_DIGEST_CHUNK_BYTES):
            sha.update(chunk)
    return sha.hexdigest()[:_DIGEST_LENGTH]


def load_state_dict_file(path: str | Path) -> StateDict:
    """Read a state dict from a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file, on the CPU.

    Pickle-based files are read with ``torch.load(weights_only=True)``, which refuses
    anything but tensors and plain containers. A training checkpoint that wraps the
    weights under a ``"state_dict"`` or ``"model"`` key is unwrapped.

    Raises:
        CheckpointError: the file is missing, has another suffix, is damaged, or holds
            something other than a mapping of names to tensors.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_FILE_SUFFIXES:
        raise CheckpointError(
            f"weights file {path}: unsupported file type '{suffix or '(none)'}'; "
            f"expected one of {', '.join(WEIGHT_FILE_SUFFIXES)}"
        )
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; check the path")
    try:
        if suffix == ".safetensors":
            loaded: object = safetensors.torch.load_file(str(path), device="cpu")
        else:
            # timm's own training checkpoints carry their argparse.Namespace of arguments;
            # allowing that one harmless class lets them load without a full unpickle.
            with torch.serialization.safe_globals([argparse.Namespace]):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (safetensors.SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"weights file {path} is damaged or not a weights file ({first_line}); "
            "pass a .safetensors or .pth file saved from a model"
        ) from error
    return _as_state_dict(loaded, path)


def _as_state_dict(loaded: object, path: Path) -> StateDict:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(f"weights file {path} holds {type(loaded).__name__}, not a state dict of named tensors")
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"weights file {path} is not a plain state dict: {len(not_tensors)} entries are not tensors "
            f"(e.g. {', '.join(not_tensors[:3])})"
        )
    return {str(key): value for key, value in loaded.items()}
