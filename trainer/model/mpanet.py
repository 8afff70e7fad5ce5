"""MPANet: backbone (+MAM) -> pattern alignment -> BN neck -> bias-free classifiers (spec section 1).

The network knows neither datasets nor losses (design principle 8): it returns features, and in
training the logits the losses need, in one typed container; modality is an input tensor of flags.
:meth:`MPANet.embed` is the deployable path (what the engines export).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer.model.backbone import ResNetBackbone
from trainer.model.config import ModelConfig
from trainer.model.pattern import PatternAlignment


@dataclass
class MPANetOutput:
    """What one forward pass gives the losses. B = batch, D = embedding size, N = identities.

    Attributes:
        features: (B, D) float32 pre-BN embedding (centre cluster loss).
        embeddings: (B, D) post-BN embedding, the test feature.
        logits: (B, N) shared identity classifier on ``embeddings``.
        modality_logits: (B, N) row i from the classifier of sample i's own modality
            (W_V for visible, W_I for infrared); ``None`` without modality classifiers or flags.
        teacher_logits: (B, N) row i from the EMA classifier of the *other* modality, computed
            without gradient (the mutual mean learning teacher); ``None`` like ``modality_logits``.
        pattern_maps: (B, P, h, w) sigmoid maps of the PAM, ``None`` when PAM is off.
    """

    features: Tensor
    embeddings: Tensor
    logits: Tensor
    modality_logits: Tensor | None = None
    teacher_logits: Tensor | None = None
    pattern_maps: Tensor | None = None


class MPANet(nn.Module):
    """The MPANet network. Build it with :func:`build_mpanet`.

    Inputs are (B, 3, H, W) float ImageNet-normalised images; ``modality`` is a (B,) integer tensor of
    flags (0 visible, 1 infrared, see :class:`common.Modality`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        stages = list(config.mam_stages) if config.mam else []
        self.backbone = ResNetBackbone(config.arch, config.last_stride, stages, config.mam_reduction)
        channels = self.backbone.out_channels
        self.pattern = PatternAlignment(channels, config.num_patterns) if config.pam else None
        dim = config.embedding_dim
        # BN neck: learnable weight (starts at 1), bias fixed at 0 (pitfall: frozen zero bias).
        self.neck = nn.BatchNorm1d(dim)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)
        # Bias-free classifiers with PyTorch's default Linear init.
        self.classifier = nn.Linear(dim, config.num_classes, bias=False)
        if config.modality_classifiers:
            self.classifier_visible = nn.Linear(dim, config.num_classes, bias=False)
            self.classifier_infrared = nn.Linear(dim, config.num_classes, bias=False)
            # EMA ("mean") copies are buffers: saved and moved with the model, never seen by the
            # optimizer, updated only by update_mean_classifiers().
            self.register_buffer("mean_classifier_visible", self.classifier_visible.weight.detach().clone())
            self.register_buffer("mean_classifier_infrared", self.classifier_infrared.weight.detach().clone())
        else:
            self.classifier_visible = self.classifier_infrared = None

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def _pooled(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        fmap = self.backbone(images)
        if self.pattern is None:
            return fmap.flatten(2).mean(dim=2), None
        out = self.pattern(fmap)
        return out.features, out.maps

    def embed(self, images: Tensor) -> Tensor:
        """Test embedding: (B, 3, H, W) -> (B, D) post-BN feature, not L2-normalised.

        D = (P+1)*C = 14336 for the default model. Use in eval mode (the BN neck's running stats).
        """
        features, _ = self._pooled(images)
        return self.neck(features)

    def forward(self, images: Tensor, modality: Tensor | None = None) -> MPANetOutput:
        """Everything the losses need, in train or eval mode alike.

        Args:
            images: (B, 3, H, W) float.
            modality: (B,) int flags, needed for the modality/teacher logits; if ``None`` they are ``None``.
        """
        features, maps = self._pooled(images)
        embeddings = self.neck(features)
        logits = self.classifier(embeddings)
        modality_logits = teacher_logits = None
        if modality is not None and self.classifier_visible is not None:
            if modality.shape != (images.shape[0],):
                raise ValueError(
                    f"modality must have shape ({images.shape[0]},), got {tuple(modality.shape)}"
                )
            infrared = (modality != 0).unsqueeze(1)  # (B, 1)
            modality_logits = torch.where(
                infrared, self.classifier_infrared(embeddings), self.classifier_visible(embeddings)
            )
            with torch.no_grad():
                # A visible sample is scored by the mean *infrared* classifier and vice versa.
                teacher_logits = torch.where(
                    infrared,
                    embeddings.detach() @ self.mean_classifier_visible.t(),
                    embeddings.detach() @ self.mean_classifier_infrared.t(),
                )
        return MPANetOutput(
            features=features.float(),
            embeddings=embeddings,
            logits=logits,
            modality_logits=modality_logits,
            teacher_logits=teacher_logits,
            pattern_maps=maps,
        )

    @torch.no_grad()
    def update_mean_classifiers(self, rate: float) -> None:
        """EMA step ``W~ <- (1 - rate) W~ + rate W`` for both modality classifiers.

        Call once per iteration *before* the forward pass (spec 2.4: the official code updates inside
        the forward, before the teacher logits; the online weights do not change in between, so the
        result is the same).
        """
        if self.classifier_visible is None:
            raise RuntimeError(
                "this MPANet was built without modality classifiers (modality_classifiers=False)"
            )
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"EMA rate must be in [0, 1], got {rate}")
        self.mean_classifier_visible.lerp_(self.classifier_visible.weight.detach(), rate)
        self.mean_classifier_infrared.lerp_(self.classifier_infrared.weight.detach(), rate)


class EmbeddingHead(nn.Module):
    """``images -> model.embed(images)`` as a plain module: the graph the engines export."""

    def __init__(self, model: MPANet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.embed(images)


def build_mpanet(config: ModelConfig | None = None, **overrides: object) -> MPANet:
    """Build MPANet. With no arguments: the default SYSU-MM01 model (ResNet-50, 384x128, 395 ids).

    Args:
        config: the architecture; defaults to ``ModelConfig()``.
        **overrides: field replacements, e.g. ``build_mpanet(arch="resnet18", height=128, width=64)``.

    ImageNet weights are loaded when ``config.pretrained`` is set (from disk only).
    """
    config = dataclasses.replace(config or ModelConfig(), **overrides)  # re-runs validation
    model = MPANet(config)
    if config.pretrained:
        model.backbone.load_imagenet(config.pretrained)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (EMA classifier buffers are not parameters and are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
