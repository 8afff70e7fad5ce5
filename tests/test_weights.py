"""ImageNet weight loading: from a file the test writes, never downloaded; clear errors otherwise."""

from __future__ import annotations

import pytest
import torch
import torchvision

from trainer.model import WeightsError, build_mpanet


@pytest.fixture()
def resnet18_file(tmp_path):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def test_weights_load_from_a_state_dict_file(resnet18_file):
    path, reference = resnet18_file
    model = build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained=str(path))
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(model.backbone.bn1.running_var, reference.bn1.running_var)
    # The MAM gates keep their own initialisation (not in ImageNet weights).
    assert model.backbone.mam4.reduce.weight.abs().sum() > 0


def test_weights_accept_wrapped_and_prefixed_state_dicts(tmp_path, resnet18_file):
    _, reference = resnet18_file
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped)
    model = build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained=str(wrapped))
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight)


def test_wrong_architecture_file_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not hold resnet18 ImageNet weights.*unexpected"):
        build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained=str(path))


def test_wrong_shapes_are_a_clear_error(tmp_path, resnet18_file):
    _, reference = resnet18_file
    state = reference.state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "bad-shape.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"wrong shape.*conv1.weight"):
        build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained=str(path))


def test_not_a_state_dict_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read ImageNet weights"):
        build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained=str(path))
    listy = tmp_path / "list.pth"
    torch.save([1, 2, 3], listy)
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained=str(listy))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_mpanet(
            arch="resnet18", height=64, width=32, num_classes=4, pretrained=str(tmp_path / "nope.pth")
        )


def test_imagenet_from_torchvision_cache_never_downloads(tmp_path, monkeypatch, resnet18_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(WeightsError, match=r"not in torchvision's cache.*Nothing is downloaded"):
        build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained="imagenet")
    path, reference = resnet18_file
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]).write_bytes(
        path.read_bytes()
    )
    model = build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, pretrained="imagenet")
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight)
