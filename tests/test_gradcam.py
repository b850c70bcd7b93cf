"""Grad-CAM maps of real checkpoints and ensembles on demo photos, the generic layer finder, and overlays."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
from demo_photos import DEMO, copy_demo
from PIL import Image

from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.core.paths import project_dir_for
from engine.data.images import ImageFileError
from engine.evaluation.activation_map import ActivationMap, overlay
from engine.evaluation.calibration import save_temperature
from engine.evaluation.ensemble import Ensemble
from engine.evaluation.gradcam import class_activation_map, find_target_layer
from engine.evaluation.manifest import build_manifest, save_manifest
from engine.evaluation.predict import Predictor
from engine.training.train import train

# One photo of each of four classes the demo model tells apart well.
PHOTOS = [sorted((DEMO / name).glob("*.png"))[0] for name in ("trouser", "bag", "sneaker", "dress")]


def assert_valid_map(activation: ActivationMap) -> None:
    assert activation.image.mode == "RGB"
    assert activation.heatmap.shape == (activation.image.height, activation.image.width)
    assert activation.heatmap.dtype == np.float32
    assert activation.heatmap.min() >= 0.0 and activation.heatmap.max() == pytest.approx(1.0)
    assert [name for name, _ in activation.top] == [activation.classes[i] for i in
                                                     np.argsort(activation.probabilities)[::-1][:3]]
    assert sum(activation.probabilities) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_map_explains_the_predictors_top_class(demo_run: Path) -> None:
    predictor = Predictor(demo_run)
    expected = predictor.predict_proba(PHOTOS).probabilities
    for photo, row in zip(PHOTOS, expected, strict=True):
        activation = class_activation_map(demo_run, photo)
        assert_valid_map(activation)
        assert activation.class_index == int(row.argmax())
        assert activation.class_name == predictor.classes[activation.class_index]
        assert activation.probability == pytest.approx(float(row.max()), abs=1e-5)
        # The model sees the 64 px photo resized and centre-cropped to Lite0's 224 px input.
        assert activation.image.size == (224, 224)
        assert (activation.layer, activation.grid) == ("bn2", (7, 7))
        assert activation.members == ()


@pytest.mark.slow
def test_other_classes_show_other_evidence(demo_run: Path) -> None:
    predicted = class_activation_map(demo_run, PHOTOS[1])
    others = [class_activation_map(demo_run, PHOTOS[1], class_index=index)
              for index in np.argsort(predicted.probabilities)[::-1][1:3]]
    for other in others:
        assert other.class_index != predicted.class_index
        assert other.probability == pytest.approx(predicted.probabilities[other.class_index])
        assert other.top == predicted.top
        assert np.abs(other.heatmap - predicted.heatmap).mean() > 0.05
    with pytest.raises(ConfigError, match=r"class_index: must be in \[0, 10\)"):
        class_activation_map(demo_run, PHOTOS[1], class_index=10)


@pytest.mark.slow
def test_a_rewritten_checkpoint_is_reloaded(demo_run: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    shutil.copyfile(demo_run / "checkpoints" / "best.safetensors", checkpoint)
    before = class_activation_map(checkpoint, PHOTOS[0])
    save_temperature(checkpoint, 3.0)
    after = class_activation_map(checkpoint, PHOTOS[0])
    assert after.class_index == before.class_index
    assert after.probability < before.probability
    np.testing.assert_allclose(after.heatmap, before.heatmap, atol=1e-6)


@pytest.mark.slow
def test_ensemble_averages_its_members_maps(demo_project: Path) -> None:
    manifest = project_dir_for(demo_project) / "ensembles" / "pair.json"
    ensemble = Ensemble(manifest)
    photo = sorted((demo_project / ensemble.classes[0]).glob("*.png"))[-1]
    activation = class_activation_map(manifest, photo)
    assert_valid_map(activation)
    assert activation.members == tuple(ensemble.members)
    expected = ensemble.predict_proba([photo]).probabilities[0]
    assert activation.class_index == int(expected.argmax())
    np.testing.assert_allclose(activation.probabilities, expected, atol=1e-5)
    # Both members are Lite0 and see the same crop: the map is the mean of their own maps, rescaled.
    maps = [class_activation_map(member.path, photo, class_index=activation.class_index).heatmap
            for member in ensemble.manifest.members]
    mean = np.mean(maps, axis=0)
    np.testing.assert_allclose(activation.heatmap, mean / mean.max(), atol=1e-5)


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained-backbone MobileNetV3 fine-tuned one epoch at 64 px on the demo_project's four classes."""
    folder = tmp_path_factory.mktemp("mobilenet")
    data = copy_demo(folder / "photos", classes=4, per_class=6)
    config = RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "model.backbone": "mobilenetv3_small_050",
        "model.weights": "none", "model.mode": "fine_tune", "data.input_size": 64, "optim.batch_size": 8,
        "optim.epochs": 1})
    return train(config, folder / "run").run_dir


def test_layer_finder_is_generic_for_an_untrained_mobilenet(mobilenet_run: Path) -> None:
    activation = class_activation_map(mobilenet_run, PHOTOS[1])
    assert_valid_map(activation)
    assert (activation.layer, activation.grid) == ("blocks.5", (2, 2))
    assert activation.image.size == (64, 64)


@pytest.mark.slow
def test_ensemble_of_different_backbones_lines_up_on_the_first_members_view(
    demo_project: Path, mobilenet_run: Path, tmp_path: Path
) -> None:
    lite0 = sorted((project_dir_for(demo_project) / "runs").iterdir())[0]
    manifest = tmp_path / "mixed.json"
    save_manifest(build_manifest([lite0, mobilenet_run]), manifest)
    ensemble = Ensemble(manifest)
    photo = sorted((demo_project / ensemble.classes[2]).glob("*.png"))[-1]
    activation = class_activation_map(manifest, photo)
    assert_valid_map(activation)
    # Lite0 sees 224 px, MobileNet 64 px: the map is drawn on Lite0's view, the first member's.
    assert activation.image.size == (224, 224)
    assert activation.layer == f"{ensemble.members[0]}: bn2; {ensemble.members[1]}: blocks.5"
    # Probabilities are each member's on its own eval input, as the ensemble predicts.
    np.testing.assert_allclose(activation.probabilities, ensemble.predict_proba([photo]).probabilities[0], atol=1e-5)


@pytest.mark.parametrize(("backbone", "layer", "shape"), [
    ("resnet18", "layer4", (512, 2, 2)),
    ("convnext_atto", "stages.3", (320, 2, 2)),
    ("efficientnet_b0", "bn2", (1280, 2, 2)),
    ("mobilenetv3_small_050", "blocks.5", (288, 2, 2)),
])
def test_layer_finder_finds_the_last_feature_map(backbone: str, layer: str, shape: tuple[int, int, int]) -> None:
    model = timm.create_model(backbone, pretrained=False, num_classes=3).eval()
    target = find_target_layer(model, (3, 64, 64), backbone=backbone)
    assert (target.name, target.shape) == (layer, shape)
    assert target.module is model.get_submodule(layer)


@pytest.mark.parametrize(("backbone", "kind"), [("test_vit", "tokens"), ("test_mambaout", "channels-last")])
def test_token_and_channels_last_features_are_refused_by_name(backbone: str, kind: str) -> None:
    model = timm.create_model(backbone, pretrained=False, num_classes=3).eval()
    size = model.pretrained_cfg["input_size"]
    with pytest.raises(ConfigError, match=rf"model.backbone: .*'{backbone}' pools .*{kind}.*CNN backbones"):
        find_target_layer(model, size, backbone=backbone)


@pytest.mark.slow
def test_unreadable_image_is_named(demo_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(PHOTOS[0].read_bytes()[:200])
    with pytest.raises(ImageFileError, match="broken.png"):
        class_activation_map(demo_run, broken)
    with pytest.raises(ImageFileError, match="missing.png: file not found"):
        class_activation_map(demo_run, tmp_path / "missing.png")


def test_overlay_blends_the_colour_map_over_the_image() -> None:
    picture = Image.new("RGB", (40, 30), (200, 100, 50))
    heatmap = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (30, 1))
    activation = ActivationMap(picture, heatmap, 0, "a", 1.0, (("a", 1.0),), "bn2", ("a",), (1.0,))
    blended = overlay(activation)
    assert blended.size == (40, 30) and blended.mode == "RGB"
    assert np.array_equal(np.asarray(overlay(activation, alpha=0.0)), np.asarray(picture))
    # jet: cold (blue) where the map is 0, hot (red) where it is 1.
    only_map = np.asarray(overlay(activation, alpha=1.0)).astype(int)
    assert only_map[0, 0, 2] > only_map[0, 0, 0] and only_map[0, -1, 0] > only_map[0, -1, 2]
    with pytest.raises(ConfigError, match="alpha: must be between 0 and 1"):
        overlay(activation, alpha=1.5)
    with pytest.raises(ConfigError, match="colormap: 'nope' is not a matplotlib colormap"):
        overlay(activation, colormap="nope")
