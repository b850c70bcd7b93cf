"""Make torchvision (and so timm) importable when its compiled ops cannot load.

The torchvision wheel on these machines is a CUDA build; beside a CPU-only torch
its ``_C`` library fails to load, and torchvision's fake-op registration then
raises ``operator torchvision::nms does not exist`` on import. This module must
run before the first import of torchvision or timm: it tries to load the
compiled library and, only if that fails, defines the two op schemas that the
Python side registers fakes for. Where the library loads, it changes nothing.
Image decoding therefore never relies on ``torchvision.io``; we use Pillow.

``import engine`` installs an import hook that applies the fix just before torchvision's
first import, so importing the engine's light modules (the config, the run folder) does not
load torch: the GUI's window appears before torch is needed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    import torch

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


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Applies the fix when torchvision is first looked up, then steps aside for the normal import."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201 (importlib's signature)
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            apply()
        return None


def install_import_hook() -> None:
    """Apply the fix on torchvision's first import (at once if it is already imported)."""
    if "torchvision" in sys.modules:
        apply()
    elif not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
