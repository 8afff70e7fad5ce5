"""The model's own small config: what :func:`trainer.model.build_mpanet` needs, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field

ARCHS = ("resnet18", "resnet34", "resnet50")
# Channels of layer3 / layer4 outputs per architecture (BasicBlock vs Bottleneck expansion).
STAGE_CHANNELS = {
    "resnet18": {3: 256, 4: 512},
    "resnet34": {3: 256, 4: 512},
    "resnet50": {3: 1024, 4: 2048},
}


@dataclass
class ModelConfig:
    """Architecture of MPANet (spec section 1). Defaults build the SYSU-MM01 model of the paper.

    Attributes:
        arch: torchvision ResNet depth: ``resnet50`` (paper), ``resnet18``/``resnet34`` for small runs.
        num_classes: training identities (395 for SYSU-MM01 train+val, 206 for RegDB).
        height, width: input size in pixels (384x128 SYSU, 256x128 RegDB); multiples of the output stride.
        last_stride: stride of layer4 (1 in MPANet: output stride 16, a 24x8 map at 384x128).
        mam: modality alleviation modules on/off (ablation switch).
        mam_stages: after which ResNet stages a MAM sits (official ``modality_attention: 2`` = [3, 4]).
        mam_reduction: channel reduction r of the MAM gate (16).
        pam: pattern alignment module on/off; off = global average pooled feature only.
        num_patterns: P pattern maps (6).
        modality_classifiers: build the visible/infrared classifiers and their EMA copies (needed by
            mutual mean learning; the trainer turns them off with ``loss.mml=false``).
        pretrained: ``None`` (random init), ``"imagenet"`` (torchvision's cache, never downloaded) or
            a path to a ResNet state-dict file.
    """

    arch: str = "resnet50"
    num_classes: int = 395
    height: int = 384
    width: int = 128
    last_stride: int = 1
    mam: bool = True
    mam_stages: list[int] = field(default_factory=lambda: [3, 4])
    mam_reduction: int = 16
    pam: bool = True
    num_patterns: int = 6
    modality_classifiers: bool = True
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1, got {self.num_classes}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"model.last_stride must be 1 or 2, got {self.last_stride}")
        stride = self.output_stride
        for name, size in (("height", self.height), ("width", self.width)):
            if size < 2 * stride or size % stride:
                raise ValueError(
                    f"model.{name}={size} cannot be taken by {self.arch} with last_stride={self.last_stride}: "
                    f"it must be a multiple of the output stride {stride} and at least {2 * stride}"
                )
        bad = [s for s in self.mam_stages if s not in (3, 4)]
        if bad:
            raise ValueError(f"model.mam_stages may hold 3 and/or 4, got {list(self.mam_stages)}")
        if self.mam_reduction < 1:
            raise ValueError(f"model.mam_reduction must be >= 1, got {self.mam_reduction}")
        if self.num_patterns < 1:
            raise ValueError(f"model.num_patterns must be >= 1, got {self.num_patterns}")

    @property
    def output_stride(self) -> int:
        """Total downsampling of the backbone: 16 with last stride 1, 32 with 2."""
        return 16 * self.last_stride

    @property
    def feature_channels(self) -> int:
        """Channels C of the final feature map (2048 for ResNet-50, 512 for ResNet-18/34)."""
        return STAGE_CHANNELS[self.arch][4]

    @property
    def embedding_dim(self) -> int:
        """Size of the test embedding: (P+1)*C with PAM (14336 by default), C without."""
        return (self.num_patterns + 1) * self.feature_channels if self.pam else self.feature_channels
