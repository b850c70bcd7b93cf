"""The Data page's decoded-image cache line: its size, and the button that clears it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt

from engine.data.decoded_cache import DecodedCache, decoded_cache_dir
from gui.pages.data.decoded_cache_panel import CLEAR_TEXT, DecodedCachePanel


def test_panel_shows_the_size_and_clears(qtbot, tmp_path: Path) -> None:
    data = tmp_path / "photos"
    (data / "cats").mkdir(parents=True)
    image = data / "cats" / "a.jpg"
    Image.fromarray(np.full((120, 160, 3), 90, dtype=np.uint8)).save(image)
    cache = DecodedCache(decoded_cache_dir(data))
    cache.load(image, "ab" * 32, 64)
    panel = DecodedCachePanel()
    qtbot.addWidget(panel)
    panel.set_dataset(data)
    qtbot.waitUntil(lambda: "1 images" in panel.label.text(), timeout=5000)
    assert panel.clear_button.text() == CLEAR_TEXT and panel.clear_button.isEnabled()
    qtbot.mouseClick(panel.clear_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.label.text().endswith("empty"), timeout=5000)
    assert cache.usage().entries == 0 and not panel.clear_button.isEnabled()
    assert image.exists()
