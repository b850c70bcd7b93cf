"""Whether the Review page's dataset map stays responsive with 20,000 photos.

``python -m bench.review_map`` fills the map (``gui.pages.review.dataset_map.DatasetMap``, offscreen)
with 20,000 points in 10 classes, a tenth of them ringed as findings, and times, three runs each:
showing them (``set_points``), a full repaint of the widget, a class filter change, and the hover
look-up of the nearest dot that runs on every mouse move. Prints each time and two ratios against
what feels immediate: 100 ms for a repaint or a filter (goal >= 1) and 16 ms (one frame) for the
hover look-up (goal >= 1).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

POINTS = 20_000
CLASSES = 10
RUNS = 3
REPAINT_BUDGET_S = 0.100
HOVER_BUDGET_S = 0.016


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QPointF
    from PySide6.QtWidgets import QApplication

    from engine.review.finding import Finding, MapPoint
    from gui.pages.review.dataset_map import DatasetMap

    app = QApplication.instance() or QApplication(sys.argv)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, POINTS)
    centres = rng.uniform(-0.7, 0.7, (CLASSES, 2))
    xy = centres[labels] + rng.normal(0, 0.12, (POINTS, 2))
    points = [MapPoint(f"/photos/{index}.png", int(label), "train", float(x), float(y))
              for index, (label, (x, y)) in enumerate(zip(labels, xy, strict=True))]
    findings = [Finding(point.path, "outlier", "", "", 1.0, rank) for rank, point in enumerate(points[::10], 1)]
    classes = [f"class {number}" for number in range(CLASSES)]
    view = DatasetMap()
    view.resize(1400, 900)
    view.show()
    app.processEvents()
    timings: dict[str, list[float]] = {"set_points": [], "repaint": [], "filter": [], "hover": []}
    for _ in range(RUNS):
        started = time.perf_counter()
        view.set_points(points, classes, findings)
        app.processEvents()
        timings["set_points"].append(time.perf_counter() - started)
        started = time.perf_counter()
        view.grab()
        timings["repaint"].append(time.perf_counter() - started)
        started = time.perf_counter()
        view.class_combo.setCurrentIndex(3)
        view.class_combo.setCurrentIndex(0)
        view.grab()
        timings["filter"].append((time.perf_counter() - started) / 2)
        started = time.perf_counter()
        for x, y in xy[:100]:
            view.nearest(QPointF(x, y))
        timings["hover"].append((time.perf_counter() - started) / 100)
    for name, values in timings.items():
        print(f"{name}: {' '.join(f'{value * 1000:.1f}' for value in values)} ms")
    slowest_paint = max(max(timings["repaint"]), max(timings["filter"]))
    print(f"ratio repaint budget {REPAINT_BUDGET_S * 1000:.0f} ms / slowest repaint or filter "
          f"{REPAINT_BUDGET_S / slowest_paint:.2f} (goal >= 1)")
    print(f"ratio hover budget {HOVER_BUDGET_S * 1000:.0f} ms / slowest hover look-up "
          f"{HOVER_BUDGET_S / max(timings['hover']):.2f} (goal >= 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
