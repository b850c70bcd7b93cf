"""Where GUI tests save their screenshots: never inside the repository unless asked.

``TRANSFER_STUDIO_SCREENSHOTS=out/screenshots make test`` keeps them where a person can open
them (``out/`` is ignored by git and by the repository check); by default they go to a
temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SCREENSHOT_DIR = Path(os.environ.get("TRANSFER_STUDIO_SCREENSHOTS") or tempfile.mkdtemp(
    prefix="transfer-studio-screenshots-")).resolve()
