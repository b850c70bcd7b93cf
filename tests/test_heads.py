"""Classifier heads: a chance-level start on real features, initialisation, layers, installing into timm models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from augment import create_eval_transform
from engine.core.config import ACTIVATIONS, ModelConfig
from engine.core.errors import CheckpointError, ConfigError
from engine.data.images import load_rgb
from engine.models.backbones import LoadedBackbone, classifier_of, create_model, extract_pooled_features
from engine.models.heads import LEAKY_RELU_SLOPE, create_head, head_signature, install_head, rebuild_head
from engine.models.stages import set_trainable_stages

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
MLP = ModelConfig(head="mlp", head_hidden=64, head_batchnorm=True, head_dropout=0.2)
ACTIVATION_MODULES = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU, "silu": nn.SiLU,
}


@pytest.fixture(scope="module")
def lite0() -> LoadedBackbone:
    """tf_efficientnet_lite0 with its real pretrained weights (the offline package), 10 demo classes."""
    return create_model("tf_efficientnet_lite0", num_classes=10, weights="auto")


@pytest.fixture(scope="module")
def demo_images(lite0: LoadedBackbone) -> tuple[torch.Tensor, torch.Tensor]:
    """One real demo image of each class, through the backbone's eval transform, and their class indices."""
    transform = create_eval_transform(lite0.data_settings)
    classes = sorted(path.name for path in DEMO.iterdir() if path.is_dir() and not path.name.startswith("."))
    paths = [sorted((DEMO / name).glob("*.png"))[0] for name in classes]
    return torch.stack([transform(load_rgb(path)) for path in paths]), torch.arange(len(classes))


@pytest.fixture(scope="module")
def pooled(lite0: LoadedBackbone, demo_images: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return extract_pooled_features(lite0.model.eval(), demo_images[0])


@pytest.mark.parametrize(
    "model_config",
    [ModelConfig(head="linear"), ModelConfig(head="linear", head_dropout=0.5), MLP,
     ModelConfig(head="mlp", head_activation="selu", head_hidden=32)],
    ids=["linear", "linear-dropout", "mlp-batchnorm-dropout", "mlp-selu"],
)
def test_a_new_head_starts_exactly_at_chance_on_real_features(
    model_config: ModelConfig, pooled: torch.Tensor, demo_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    targets = demo_images[1]
    num_classes = int(targets.max()) + 1
    assert pooled.abs().mean() > 0.1  # real, non-trivial features
    head = create_head(model_config, pooled.shape[1], num_classes).train()
    logits = head(pooled)
    assert torch.equal(logits, torch.zeros_like(logits))
    loss = nn.functional.cross_entropy(logits, targets)
    assert loss.item() == pytest.approx(math.log(num_classes), abs=1e-6)


def test_a_default_timm_head_does_not_start_at_chance(
    pooled: torch.Tensor, demo_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    # The lesson the zero output layer is for: random logits on large features start far from ln C.
    torch.manual_seed(0)
    num_classes = len(demo_images[1])
    loss = nn.functional.cross_entropy(nn.Linear(pooled.shape[1], num_classes)(pooled), demo_images[1])
    assert abs(loss.item() - math.log(num_classes)) > 1e-3


def test_the_mlp_learns_from_its_zero_output_layer(
    pooled: torch.Tensor, demo_images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    torch.manual_seed(0)
    head = create_head(MLP, pooled.shape[1], len(demo_images[1]))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(head(pooled), demo_images[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert head.hidden.weight.grad.abs().sum() > 0  # the hidden layer trains too, once fc is non-zero


@pytest.mark.parametrize(
    ("activation", "expected_std"),
    [
        ("relu", math.sqrt(2 / 1280)),  # Kaiming: sqrt(2 / fan_in)
        ("leaky_relu", math.sqrt(2 / (1 + LEAKY_RELU_SLOPE**2) / 1280)),
        ("selu", math.sqrt(1 / 1280)),  # LeCun normal
        ("elu", math.sqrt(2 / (1280 + 256))),  # Xavier: sqrt(2 / (fan_in + fan_out))
        ("gelu", math.sqrt(2 / (1280 + 256))),
        ("silu", math.sqrt(2 / (1280 + 256))),
    ],
)
def test_hidden_layer_initialisation_suits_the_activation(activation: str, expected_std: float) -> None:
    torch.manual_seed(0)
    head = create_head(ModelConfig(head="mlp", head_hidden=256, head_activation=activation), 1280, 7)
    weight = head.hidden.weight
    assert weight.shape == (256, 1280)
    assert weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert abs(weight.mean().item()) < expected_std / 50
    assert torch.equal(head.hidden.bias, torch.zeros(256))
    assert torch.equal(head.fc.weight, torch.zeros(7, 256)) and torch.equal(head.fc.bias, torch.zeros(7))
    assert type(head.activation) is ACTIVATION_MODULES[activation]


def test_every_config_activation_is_built() -> None:
    assert set(ACTIVATION_MODULES) == set(ACTIVATIONS)
    leaky = create_head(ModelConfig(head="mlp", head_hidden=8, head_activation="leaky_relu"), 16, 3)
    assert leaky.activation.negative_slope == LEAKY_RELU_SLOPE  # the slope the Kaiming gain assumed
    with pytest.raises(ConfigError, match=r"model\.head_activation: must be one of .*, got 'tanh'"):
        create_head(ModelConfig(head="mlp", head_activation="tanh"), 16, 3)
    with pytest.raises(ConfigError, match=r"model\.head: must be one of linear, mlp, got 'conv'"):
        create_head(ModelConfig(head="conv"), 16, 3)


def test_layers_follow_the_settings() -> None:
    with_norm = create_head(ModelConfig(head="mlp", head_hidden=32, head_batchnorm=True, head_dropout=0.3), 16, 4)
    assert list(dict(with_norm.named_children())) == ["hidden", "norm", "activation", "dropout", "fc"]
    assert isinstance(with_norm.norm, nn.BatchNorm1d) and with_norm.norm.num_features == 32
    assert with_norm.hidden.bias is None  # BatchNorm's shift takes its place
    assert isinstance(with_norm.dropout, nn.Dropout) and with_norm.dropout.p == 0.3
    assert (with_norm.fc.in_features, with_norm.fc.out_features) == (32, 4)

    plain = create_head(ModelConfig(head="mlp", head_hidden=32), 16, 4)
    assert isinstance(plain.norm, nn.Identity) and plain.hidden.bias is not None

    linear = create_head(ModelConfig(head="linear", head_dropout=0.4), 16, 4)
    assert list(dict(linear.named_children())) == ["dropout", "fc"] and linear.dropout.p == 0.4
    # The dropout rate never changes the state dict, so any rate's checkpoint loads into the head.
    assert set(linear.state_dict()) == set(create_head(ModelConfig(head="linear"), 16, 4).state_dict())


def test_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    head = create_head(ModelConfig(head="linear", head_dropout=0.5), 64, 3)
    nn.init.normal_(head.fc.weight)
    features = torch.randn(4, 64)
    assert not torch.equal(head.train()(features), head.eval()(features))


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_convnext", "mobilenetv3_small_050"])
def test_installed_head_runs_on_pooled_features_and_round_trips(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    loaded = create_model(name, num_classes=5, weights="none")
    _assert_install_round_trip(loaded, name, tmp_path)


def test_installed_head_on_pretrained_lite0(tmp_path: Path) -> None:
    loaded = create_model("tf_efficientnet_lite0", num_classes=10, weights="auto")
    _assert_install_round_trip(loaded, "tf_efficientnet_lite0", tmp_path)


def _assert_install_round_trip(loaded: LoadedBackbone, name: str, tmp_path: Path) -> None:
    model, num_features = loaded.model, loaded.num_features
    num_classes = classifier_of(model).out_features
    head = create_head(MLP, num_features, num_classes)
    install_head(model, head)
    assert classifier_of(model) is head

    # Give the head non-trivial weights and BatchNorm statistics, so that equality means something.
    _, height, width = loaded.data_settings.input_size
    images = torch.randn(2, 3, height, width)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_(0.0, 0.1)
        head.train()(extract_pooled_features(model.eval(), images))  # updates running statistics
        model.eval()
        logits = model(images)
        assert logits.shape == (2, num_classes)
        torch.testing.assert_close(head(extract_pooled_features(model, images)), logits)

    # The head is the model's head for freezing: its parameters are the head group.
    parts = set_trainable_stages(model, 0)
    assert {id(p) for p in parts.head_parameters} == {id(p) for p in head.parameters()}

    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    signature = json.loads(json.dumps(head_signature(MLP)))  # as stored in checkpoint metadata
    rebuilt = create_model(name, num_classes=num_classes, weights="none")
    rebuilt_head = rebuild_head(rebuilt.model, signature, rebuilt.num_features, num_classes)
    set_trainable_stages(rebuilt.model, 0)  # the trained model's frozen BatchNorms have the same names
    rebuilt.model.load_state_dict(torch.load(path, weights_only=True))
    assert classifier_of(rebuilt.model) is rebuilt_head
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.model.eval()(images), logits)


def test_head_signature_holds_what_decides_the_layers() -> None:
    assert head_signature(ModelConfig(head="linear", head_dropout=0.1, head_hidden=99)) == {
        "head": "linear", "head_dropout": 0.1,
    }
    assert head_signature(MLP) == {
        "head": "mlp", "head_hidden": 64, "head_activation": "relu", "head_batchnorm": True, "head_dropout": 0.2,
    }


def test_rebuild_head_without_a_signature_keeps_the_timm_linear_head() -> None:
    model = create_model("test_resnet", num_classes=3, weights="none").model
    original = classifier_of(model)
    assert rebuild_head(model, None, 96, 3) is original and isinstance(original, nn.Linear)


def test_rebuild_head_rejects_a_damaged_signature() -> None:
    model = create_model("test_resnet", num_classes=3, weights="none").model
    with pytest.raises(CheckpointError, match="head signature"):
        rebuild_head(model, {"head": "mlp", "head_hidden": 8}, 96, 3)
    with pytest.raises(CheckpointError, match="head signature"):
        rebuild_head(model, {"head": "mlp", "head_hidden": 8, "head_activation": "swish", "head_batchnorm": False,
                             "head_dropout": 0.0}, 96, 3)
    with pytest.raises(CheckpointError, match="head signature"):
        rebuild_head(model, {"head": "transformer"}, 96, 3)


def test_a_model_with_two_classifiers_is_refused() -> None:
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=3, weights="none").model
    with pytest.raises(ConfigError, match=r"model\.backbone: .* 2 classifiers \(\('head', 'head_dist'\)\)"):
        install_head(model, create_head(ModelConfig(), 192, 3))
