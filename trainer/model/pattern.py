"""Pattern Alignment Module (PAM), spec section 1.3.

P pattern maps ``M = sigmoid(conv1x1(F))`` (B, P, H, W) weight the final feature map F (B, C, H, W);
each pattern feature is the average over all H*W positions of ``M_p * F`` (not divided by the mask
sum, as in the official code). The global average-pooled feature is appended last, giving the
(P + 1) * C pre-BN embedding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class PatternFeatures(NamedTuple):
    """Output of :class:`PatternAlignment`.

    Attributes:
        features: (B, (P+1)*C) float: [f_1, ..., f_P, g], the global feature g last.
        maps: (B, P, H, W) float in (0, 1): the pattern maps.
    """

    features: Tensor
    maps: Tensor


class PatternAlignment(nn.Module):
    """Pattern maps and pattern-pooled features from a (B, C, H, W) map.

    Args:
        channels: C of the input map.
        num_patterns: P.
    """

    def __init__(self, channels: int, num_patterns: int = 6) -> None:
        super().__init__()
        self.num_patterns = num_patterns
        # Default PyTorch init for the weight (the head is outside the ResNet init loop), bias zero.
        self.conv = nn.Conv2d(channels, num_patterns, kernel_size=1, bias=True)
        nn.init.zeros_(self.conv.bias)

    def forward(self, fmap: Tensor) -> PatternFeatures:
        maps = torch.sigmoid(self.conv(fmap))  # (B, P, H, W)
        flat_maps = maps.flatten(2)  # (B, P, HW)
        flat_fmap = fmap.flatten(2)  # (B, C, HW)
        # Masked average pooling of every pattern at once: (B, P, HW) @ (B, HW, C) / HW -> (B, P, C).
        # The spatial size comes from the tensor, so export with any fixed H x W stays valid.
        pattern_feats = torch.matmul(flat_maps, flat_fmap.transpose(1, 2)) / flat_fmap.shape[-1]
        global_feat = flat_fmap.mean(dim=2)  # (B, C)
        features = torch.cat([pattern_feats.flatten(1), global_feat], dim=1)
        return PatternFeatures(features=features, maps=maps)
