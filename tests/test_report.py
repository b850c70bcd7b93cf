"""The report folder: every file written, plots that are real PNGs, a page that names and embeds them."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from demo_photos import copy_demo
from PIL import Image

from engine.evaluation.calibration import TemperatureFit
from engine.evaluation.metrics import Evaluation, Unreadable, evaluate_probabilities
from engine.evaluation.report import REPORT_FILES, describe_report, write_report

PLOTS = ("confusion.png", "reliability.png", "per_class.png", "top_losses.png")


class _Images(HTMLParser):
    """Collects the ``src`` of every ``<img>`` and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def demo_evaluation(tmp_path: Path, *, seed: int = 0, name: str = "model") -> Evaluation:
    """Real demo photos with made-up but plausible probabilities: about 70% right."""
    data = copy_demo(tmp_path / "data", classes=6, per_class=5)
    classes = tuple(sorted(folder.name for folder in data.iterdir()))
    paths = sorted(data.rglob("*.png"))
    targets = np.array([classes.index(path.parent.name) for path in paths])
    generator = np.random.default_rng(seed)
    logits = generator.normal(size=(len(paths), len(classes)))
    logits[np.arange(len(paths)), targets] += 1.8
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return evaluate_probabilities(probabilities, targets, classes, paths, top_losses=8, name=name,
                                  unreadable=[Unreadable(data / "broken.jpg", "not an image (truncated header)")])


def test_the_folder_holds_every_file_and_the_page_names_and_embeds_each_plot(tmp_path: Path) -> None:
    evaluation = demo_evaluation(tmp_path)
    folder = write_report(evaluation, tmp_path / "report", title="Shoes & shirts <demo>")
    assert folder == tmp_path / "report"
    assert sorted(path.name for path in folder.iterdir()) == sorted(REPORT_FILES)
    for name in PLOTS:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 150

    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "<title>Shoes &amp; shirts &lt;demo&gt;</title>" in page  # escaped, never raw markup
    assert all(f"href='{name}'" in page for name in (*PLOTS, "report.json"))
    parser = _Images()
    parser.feed(page)
    embedded = [source for source in parser.sources if source.startswith("data:image/png;base64,")]
    # Three plots and a thumbnail per top loss (top_losses.png is linked), all inside the page.
    assert len(embedded) == len(parser.sources) == 3 + len(evaluation.top_losses)
    for source in embedded:
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            assert image.format == "PNG"
    text = " ".join(parser.text)
    for item in evaluation.top_losses:
        assert item.true_label in text and item.predicted_label in text and item.path.name in text
    assert "broken.jpg" in text and "not an image (truncated header)" in text
    assert all(item.name in text for item in evaluation.per_class)

    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["title"] == "Shoes & shirts <demo>"
    assert report["summary"]["top1"] == pytest.approx(evaluation.top1)
    assert np.array(report["confusion"]).sum() == evaluation.count == 30
    assert len(report["reliability"]["bins"]) == 15 and len(report["images"]) == 30
    assert report["unreadable"] == [{"path": str(tmp_path / "data" / "broken.jpg"),
                                     "reason": "not an image (truncated header)"}]
    text = describe_report(folder)
    assert text.startswith(f"model: 30 images, top-1 {evaluation.top1:.1%}, top-5 ")
    assert "1 image could not be read" in text and text.endswith(str(folder / "index.html"))


def test_an_ensemble_report_puts_each_member_beside_the_ensemble(tmp_path: Path) -> None:
    ensemble = demo_evaluation(tmp_path, name="ensemble")
    members = {f"run-{seed}/best": demo_evaluation(tmp_path, seed=seed, name=f"run-{seed}/best") for seed in (1, 2)}
    folder = write_report(ensemble, tmp_path / "report", title="Ensemble", members=members)
    page = (folder / "index.html").read_text(encoding="utf-8")
    table = page[page.index("<h2>Summary</h2>"):page.index("<h2>Confusion matrix</h2>")]
    assert table.count("<tr") == 1 + 3  # header, the ensemble, two members
    assert table.index("ensemble") < table.index("run-1/best") < table.index("run-2/best")
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert list(report["members"]) == ["run-1/best", "run-2/best"]
    assert report["members"]["run-1/best"]["summary"]["log_loss"] == pytest.approx(members["run-1/best"].log_loss)
    assert "images" not in report["members"]["run-1/best"]  # per-image rows only for the ensemble
    lines = describe_report(folder).splitlines()
    assert lines[0].startswith("ensemble: 30 images") and lines[1].startswith("  run-1/best: 30 images")


def test_a_flawless_model_still_gets_every_file_and_a_temperature_section(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=2, per_class=3)
    paths = sorted(data.rglob("*.png"))
    targets = [0, 0, 0, 1, 1, 1]
    probabilities = np.array([[0.9, 0.1]] * 3 + [[0.2, 0.8]] * 3)
    evaluation = evaluate_probabilities(probabilities, targets, ("a", "b"), paths)
    fit = TemperatureFit(temperature=0.8, count=6, nll_before=0.2, nll_after=0.1, ece_before=0.15,
                         ece_after=0.05, at_bound=False)
    evaluation = dataclasses.replace(evaluation, temperature=0.8, temperature_fit=fit)
    folder = write_report(evaluation, tmp_path / "report", title="Two classes")
    assert all((folder / name).is_file() for name in REPORT_FILES)
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "No image was misclassified." in page
    assert "Temperature scaling" in page and "0.800" in page
    assert json.loads((folder / "report.json").read_text())["temperature_fit"]["temperature"] == 0.8
