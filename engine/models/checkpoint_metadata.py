"""Where a checkpoint is and what its metadata says, read without torch.

The metadata (classes, backbone, data settings, config, metrics) lives as JSON in the
safetensors header, so it is read here without loading a tensor or importing torch: the
GUI lists and describes checkpoints with this module alone. ``engine.models.checkpoint``
writes and loads the tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from engine.core.atomic import TEMP_SUFFIX
from engine.core.errors import CheckpointError

METADATA_KEY = "transfer_studio"
FORMAT_VERSION = 1


def resolve_checkpoint_path(path: str | Path) -> Path:
    """Accept a ``.safetensors`` file, its ``.json``, a run folder (its best) or a checkpoints folder.

    Raises:
        CheckpointError: nothing loadable is there, or the path is a temporary file.
    """
    candidate = Path(path)
    if candidate.name.endswith(TEMP_SUFFIX):
        raise CheckpointError(f"{candidate}: a temporary file of an unfinished write, not a checkpoint")
    if candidate.is_dir():
        for option in (candidate / "checkpoints" / "best.safetensors", candidate / "best.safetensors"):
            if option.is_file():
                return option
        raise CheckpointError(f"{candidate}: no checkpoints/best.safetensors in this folder")
    if candidate.suffix == ".json":
        candidate = candidate.with_suffix(".safetensors")
    if not candidate.is_file():
        raise CheckpointError(f"{candidate}: checkpoint not found")
    if candidate.suffix != ".safetensors":
        raise CheckpointError(f"{candidate}: expected a .safetensors checkpoint (pickled files are never loaded)")
    return candidate


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata embedded in a checkpoint, without reading its tensors.

    Raises:
        CheckpointError: missing, damaged, or not a Transfer Studio checkpoint.
    """
    file = resolve_checkpoint_path(path)
    try:
        # The numpy framework reads the header exactly as the torch one does, without importing torch.
        with safe_open(str(file), framework="numpy") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{file}: damaged checkpoint ({error})") from error
    if METADATA_KEY not in header:
        raise CheckpointError(f"{file}: not a Transfer Studio checkpoint (no '{METADATA_KEY}' metadata)")
    return json.loads(header[METADATA_KEY])
