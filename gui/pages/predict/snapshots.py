"""Snapshots of live prediction: the predicted frame as a PNG and its prediction as JSON beside it.

Both files are written whole (temporary file, then rename), under a name made of the
source's and the frame's, never over an earlier snapshot.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path

from engine.core.atomic import atomic_write_bytes, atomic_write_json
from gui.pages.predict.live_predictor import FramePrediction

SNAPSHOT_SCHEMA = 1


def snapshot_stem(folder: Path, source: str, frame_index: int) -> Path:
    """``folder/<source>-frame000123``, with ``-2``, ``-3``… added when a snapshot of that name exists."""
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in Path(source).stem) or "frame"
    base = folder / f"{safe}-frame{frame_index:06d}"
    stem, number = base, 2
    while stem.with_suffix(".png").exists() or stem.with_suffix(".json").exists():
        stem = base.with_name(f"{base.name}-{number}")
        number += 1
    return stem


def save_snapshot(folder: Path, prediction: FramePrediction, *, source: str, model: Path, tta: str,
                  top_k: int) -> tuple[Path, Path]:
    """Write ``prediction``'s frame as PNG and the prediction as JSON into ``folder`` (created if needed).

    Args:
        folder: where snapshots go.
        prediction: the frame and the model's answer for it.
        source: the video file's path or the camera's name.
        model: the checkpoint or ensemble manifest that predicted.
        tta: the test-time augmentation it used.
        top_k: labels listed as shown; every class's probability is saved as well.

    Returns:
        The PNG's path and the JSON's.

    Raises:
        OSError: the folder or a file cannot be written.
    """
    stem = snapshot_stem(folder, source, prediction.frame.index)
    encoded = io.BytesIO()
    prediction.frame.image.save(encoded, format="PNG")  # the frame's pixels as decoded, before any scaling
    png = atomic_write_bytes(stem.with_suffix(".png"), encoded.getvalue())
    pairs = list(zip(prediction.labels, prediction.probabilities, strict=True))
    record = {
        "schema": SNAPSHOT_SCHEMA,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image": png.name,
        "source": source,
        "frame": prediction.frame.index,
        "position_s": round(prediction.frame.position_s, 3),
        "model": str(model),
        "tta": tta,
        "top_k": [{"label": label, "probability": probability} for label, probability in pairs[:top_k]],
        "probabilities": dict(pairs),  # every class, most likely first
    }
    return png, atomic_write_json(stem.with_suffix(".json"), record)
