"""Shared fixtures: offscreen Qt, no network, a private user cache for the whole session."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports Qt, albumentations or huggingface_hub.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFER_STUDIO_CACHE_DIR", tempfile.mkdtemp(prefix="transfer-studio-test-cache-"))

import engine  # noqa: E402,F401  (applies the torchvision fix before any test imports timm)
