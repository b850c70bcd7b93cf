"""Real labelled photos for tests: copies of the bundled demo project's class folders.

Tests copy what they need rather than training inside ``resources/demo``, so that no
run, cache or report is ever written into the repository.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


def demo_classes() -> list[str]:
    """The demo's class names, sorted (its hidden project folder left out)."""
    return sorted(path.name for path in DEMO.iterdir() if path.is_dir() and not path.name.startswith("."))


def copy_demo(
    target: Path, classes: int | Sequence[str] | Mapping[str, int] = 3, per_class: int = 20, *, skip: int = 0
) -> Path:
    """Copy demo photos into one folder per class under ``target``; returns ``target``.

    Args:
        target: the new data folder.
        classes: the first N classes, these class names, or ``{class: how many photos}``.
        per_class: photos per class (when ``classes`` does not say).
        skip: leave out each class's first ``skip`` photos (for a second, disjoint set).
    """
    if isinstance(classes, int):
        counts = {name: per_class for name in demo_classes()[:classes]}
    elif isinstance(classes, Mapping):
        counts = dict(classes)
    else:
        counts = {name: per_class for name in classes}
    for name, count in counts.items():
        folder = target / name
        folder.mkdir(parents=True, exist_ok=True)
        for image in sorted((DEMO / name).glob("*.png"))[skip : skip + count]:
            shutil.copyfile(image, folder / image.name)
    return target


def copy_whole_demo(target: Path) -> Path:
    """Copy the bundled demo (every class and its licence notice, not its project folder); returns ``target``."""
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns(".*"))
    return target
