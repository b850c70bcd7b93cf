"""Test-time augmentation on real checkpoints: flips, five crops, and TTA inside ensembles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from demo_photos import DEMO, copy_demo

from augment import create_eval_transform
from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.data.images import load_rgb
from engine.data.prepare import prepare_dataset
from engine.data.settings import DataSettings
from engine.evaluation.ensemble import Ensemble
from engine.evaluation.manifest import build_manifest
from engine.evaluation.predict import Predictor
from engine.evaluation.selection import accuracy
from engine.evaluation.tta import TTA_MODES, TestTimeAugmentation, create_multicrop_transform
from engine.training.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two real Lite0 feature-extraction runs (different seeds) on 5 demo classes, and the validation split."""
    root = tmp_path_factory.mktemp("tta")
    data = copy_demo(root / "data", classes=5, per_class=30)
    base = RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "optim.epochs": 4,
    })
    runs = [train(base.with_changes(seed=seed), root / f"run{seed}").run_dir for seed in (0, 1)]
    dataset = prepare_dataset(data, val_fraction=0.2, seed=0)
    return {"runs": runs, "val_paths": [record.path for record in dataset.splits["val"]],
            "val_targets": np.array(dataset.targets("val"))}


@pytest.mark.slow
def test_flip_and_multicrop_give_probability_rows_that_differ_from_no_tta(trained: dict) -> None:
    predictor = Predictor(trained["runs"][0], device="cpu")
    paths, targets = trained["val_paths"], trained["val_targets"]
    plain = predictor.predict_proba(paths).probabilities

    results = {}
    for mode in TTA_MODES:
        model = TestTimeAugmentation(predictor, mode)
        result = model.predict_proba(paths, batch_size=7)  # a batch size that leaves a short last batch
        assert model.classes == predictor.classes and model.views == {"none": 1, "flip": 2, "multicrop": 5}[mode]
        assert result.probabilities.shape == (len(paths), 5) and result.probabilities.dtype == np.float32
        assert result.kept == list(range(len(paths)))
        np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
        results[mode] = result.probabilities
        print(f"\n{mode}: val top-1 {accuracy(result.probabilities, targets):.3f}")

    np.testing.assert_allclose(results["none"], plain, atol=1e-6)
    for mode in ("flip", "multicrop"):
        assert np.abs(results[mode] - plain).max() > 1e-3, mode
        # Averaging views of a decent model keeps it decent (5 classes: chance is 0.2).
        assert accuracy(results[mode], targets) > 0.5


@pytest.mark.slow
def test_flip_averages_the_softmax_of_the_input_and_its_mirror(trained: dict) -> None:
    predictor = Predictor(trained["runs"][0], device="cpu")
    path = trained["val_paths"][0]
    image = predictor.transform(load_rgb(path)).unsqueeze(0)
    with torch.inference_mode():
        expected = (predictor.model(image).softmax(1) + predictor.model(image.flip(-1)).softmax(1)) / 2

    result = TestTimeAugmentation(predictor, "flip").predict_proba([path])

    np.testing.assert_allclose(result.probabilities, expected.numpy(), atol=1e-6)


def test_multicrop_takes_five_crops_at_the_eval_scale_with_the_eval_view_in_the_centre() -> None:
    settings = DataSettings(input_size=(3, 56, 56), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                            interpolation="bicubic", crop_pct=0.875, crop_mode="center")
    image = load_rgb(sorted(DEMO.glob("bag/*.png"))[0])

    views = create_multicrop_transform(settings)(image)

    assert views.shape == (5, 3, 56, 56) and views.dtype == torch.float32
    # torchvision's five_crop order ends with the centre: exactly the eval transform's input.
    torch.testing.assert_close(views[4], create_eval_transform(settings)(image), rtol=0, atol=0)
    assert all((views[index] - views[4]).abs().max() > 0.1 for index in range(4))


def test_multicrop_pads_when_the_border_mode_resize_falls_short() -> None:
    settings = DataSettings(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                            interpolation="bilinear", crop_pct=1.0, crop_mode="border")
    wide = load_rgb(sorted(DEMO.glob("sandal/*.png"))[0]).resize((80, 40))
    assert create_multicrop_transform(settings)(wide).shape == (5, 3, 32, 32)


@pytest.mark.slow
def test_ensembles_apply_tta_to_each_member(trained: dict) -> None:
    paths = trained["val_paths"][:6]
    manifest = build_manifest(trained["runs"])
    ensemble = Ensemble(manifest, device="cpu", tta="flip")
    members = [TestTimeAugmentation(Predictor(run, device="cpu"), "flip") for run in trained["runs"]]

    result = ensemble.predict_proba(paths)

    expected = np.mean([member.predict_proba(paths).probabilities for member in members], axis=0)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert all(isinstance(model, TestTimeAugmentation) for model in ensemble.models.values())


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tta: must be one of none, flip, multicrop, got 'rotate'"):
        Ensemble(tmp_path / "missing.json", tta="rotate")
