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


PROJECT_FOLDER_NAME = ".transfer-studio"


def project_dir_for(data_path: str | Path) -> Path:
    """Return the project folder that belongs to a dataset (not created here).

    The health report, scan cache and runs of a dataset live in a hidden
    ``.transfer-studio`` folder beside its images (beside the CSV for a CSV dataset).
    """
    data = Path(data_path).expanduser().resolve()
    base = data.parent if data.is_file() else data
    return base / PROJECT_FOLDER_NAME
