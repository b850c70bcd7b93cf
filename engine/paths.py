"""Where Transfer Studio keeps files that belong to no single project.

The user cache (converted weights, cached features, scan caches) lives under
platformdirs' cache folder unless ``TRANSFER_STUDIO_CACHE_DIR`` points elsewhere,
which tests and shared servers use.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV_VAR = "TRANSFER_STUDIO_CACHE_DIR"


def user_cache_dir(*parts: str) -> Path:
    """Return (and create) a folder inside the user cache.

    Args:
        *parts: sub-folder names, e.g. ``("weights",)``.
    """
    root = os.environ.get(CACHE_ENV_VAR) or platformdirs.user_cache_dir("transfer-studio", appauthor=False)
    folder = Path(root).joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
