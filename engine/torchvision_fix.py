"""Make torchvision (and so timm) importable when its compiled ops cannot load.

The torchvision wheel on these machines is a CUDA build; beside a CPU-only torch
its ``_C`` library fails to load, and torchvision's fake-op registration then
raises ``operator torchvision::nms does not exist`` on import. This module must
run before the first import of torchvision or timm: it tries to load the
compiled library and, only if that fails, defines the two op schemas that the
Python side registers fakes for. Where the library loads, it changes nothing.
Image decoding therefore never relies on ``torchvision.io``; we use Pillow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

# Held for the life of the process: the schemas vanish when the Library is collected.
_fallback_library: torch.library.Library | None = None
_applied = False


def _compiled_library_path() -> Path | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    return candidates[0] if candidates else None


def apply() -> bool:
    """Load torchvision's ops, or define stand-in schemas if they cannot load.

    Returns:
        True when the stand-in schemas were defined, False when nothing was needed.
    """
    global _applied, _fallback_library
    if _applied:
        return _fallback_library is not None
    _applied = True
    library_path = _compiled_library_path()
    if library_path is None:
        return False
    try:
        torch.ops.load_library(str(library_path))
        return False
    except OSError:
        pass
    _fallback_library = torch.library.Library("torchvision", "FRAGMENT")
    for op_name in ("nms", "qnms"):
        _fallback_library.define(f"{op_name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True
