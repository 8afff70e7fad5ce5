"""ResNet backbone of MPANet (spec section 1.1): torchvision ResNet, last stride 1, MAMs after stages.

ImageNet weights are only ever read from disk (a file path, or torchvision's download cache); this
module never downloads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from trainer.model.alleviation import ModalityAlleviation
from trainer.model.config import STAGE_CHANNELS

# torchvision's ImageNet weights per architecture, by the enum torchvision itself uses for the URL.
_WEIGHT_ENUMS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
}
# File names of the original releases (MPANet used resnet50-19c8e357.pth); also accepted in the cache.
_LEGACY_FILES = {
    "resnet18": "resnet18-5c106cde.pth",
    "resnet34": "resnet34-333f7ec4.pth",
    "resnet50": "resnet50-19c8e357.pth",
}


class WeightsError(RuntimeError):
    """ImageNet weights that are missing or do not fit the backbone."""


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk (no avgpool/fc) with optional MAMs after layer3 and/or layer4.

    Input (B, 3, H, W) float, ImageNet-normalised; output (B, C, H/s, W/s) with s = 16 for last
    stride 1 (32 otherwise) and C = 2048 (ResNet-50) or 512 (ResNet-18/34).
    """

    def __init__(
        self, arch: str, last_stride: int = 1, mam_stages: Sequence[int] = (3, 4), mam_reduction: int = 16
    ):
        super().__init__()
        if arch not in _WEIGHT_ENUMS:
            raise ValueError(f"unknown backbone {arch!r}; expected one of {sorted(_WEIGHT_ENUMS)}")
        self.arch = arch
        # torchvision initialises convs kaiming-normal (fan_out, relu) and BN to (1, 0), as MPANet does.
        net = getattr(torchvision.models, arch)(weights=None)
        if last_stride == 1:
            _drop_last_stride(net.layer4)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        channels = STAGE_CHANNELS[arch]
        self.mam3 = ModalityAlleviation(channels[3], mam_reduction) if 3 in mam_stages else None
        self.mam4 = ModalityAlleviation(channels[4], mam_reduction) if 4 in mam_stages else None
        self.out_channels = channels[4]

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.mam3 is not None:
            x = self.mam3(x)
        x = self.layer4(x)
        if self.mam4 is not None:
            x = self.mam4(x)
        return x

    def resnet_state_keys(self) -> set[str]:
        """Names of the parameters/buffers that ImageNet weights provide (everything but the MAMs)."""
        return {k for k in self.state_dict() if not k.startswith(("mam3.", "mam4."))}

    def load_imagenet(self, source: str | os.PathLike[str]) -> Path:
        """Load ImageNet weights from ``"imagenet"`` (torchvision's cache) or a file path.

        The file may hold a plain state dict or one under ``state_dict``/``model``; ``module.``
        prefixes and the ``fc.*`` classifier are ignored. Every ResNet key of the backbone must be
        present with the right shape; the MAMs keep their own init (the official code loads with
        ``strict=False`` for the same reason).

        Returns:
            The file the weights came from.

        Raises:
            WeightsError: the file is missing/unreadable or its keys or shapes do not fit.
        """
        path = resolve_imagenet_file(self.arch) if str(source) == "imagenet" else Path(source)
        if not path.is_file():
            raise WeightsError(f"ImageNet weight file {path} does not exist")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot read ImageNet weights from {path}: {exc}") from exc
        state = _unwrap_state_dict(loaded, path)
        expected = self.resnet_state_keys()
        own = self.state_dict()
        missing = sorted(expected - state.keys())
        unexpected = sorted(k for k in state.keys() - expected if not k.startswith("fc."))
        if missing or unexpected:
            raise WeightsError(
                f"{path} does not hold {self.arch} ImageNet weights: "
                f"{len(missing)} keys missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        wrong = [
            (k, tuple(state[k].shape), tuple(own[k].shape))
            for k in expected
            if state[k].shape != own[k].shape
        ]
        if wrong:
            key, got, want = wrong[0]
            raise WeightsError(
                f"{path}: {len(wrong)} tensors have the wrong shape, e.g. {key}: {got} != {want}"
            )
        self.load_state_dict({k: state[k] for k in expected}, strict=False)
        return path


def resolve_imagenet_file(arch: str) -> Path:
    """Path of ``arch``'s ImageNet weights in torchvision's cache; a clear error if not there."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    names = [Path(_WEIGHT_ENUMS[arch].url).name, _LEGACY_FILES[arch]]
    for name in names:
        if (cache / name).is_file():
            return cache / name
    raise WeightsError(
        f"ImageNet weights for {arch} are not in torchvision's cache ({cache}; looked for {', '.join(names)}). "
        f"Nothing is downloaded at run time: fetch {_WEIGHT_ENUMS[arch].url} into that folder on a machine "
        f"with internet, or set model.pretrained=/path/to/weights.pth"
    )


def _drop_last_stride(layer4: nn.Sequential) -> None:
    """Give layer4 stride 1 (MPANet's ``drop_last_stride``): first block's strided conv and shortcut."""
    block = layer4[0]
    strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


def _unwrap_state_dict(loaded: object, path: Path) -> dict[str, Tensor]:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            inner = loaded.get(key)
            if isinstance(inner, Mapping):
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in loaded.items()}
