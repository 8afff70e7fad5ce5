"""Modality Alleviation Module (MAM), spec section 1.2.

A channel gate chooses, per image and per channel, between a feature map and its affine-free
instance-normalised version: ``Y = m * X + (1 - m) * IN(X)`` with ``m = sigmoid(W2 relu(W1 GAP(X)))``.
Instance normalisation removes per-image channel statistics (style: colour in visible images, heat
distribution in infrared ones), so the gate lets the network discard modality-specific style where
that helps matching.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ModalityAlleviation(nn.Module):
    """MAM over a (B, C, H, W) float map; output has the same shape and dtype.

    Args:
        channels: C.
        reduction: r; the gate's bottleneck has C // r channels (16 in MPANet). Both gate convs are
            1x1 without bias, as in the official code.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        # Global average pooling via AdaptiveAvgPool2d exports as GlobalAveragePool: no input size is
        # baked into the graph (the official avg_pool2d(x, x.size()[2:]) would).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.expand = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)
        # affine=False and no running statistics: per-instance statistics in train and eval (pitfall 7).
        self.norm = nn.InstanceNorm2d(channels, affine=False, track_running_stats=False, eps=1e-5)
        for conv in (self.reduce, self.expand):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def gate(self, x: Tensor) -> Tensor:
        """Channel gate m of shape (B, C, 1, 1), values in (0, 1)."""
        return torch.sigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))

    def mix(self, x: Tensor, gate: Tensor) -> Tensor:
        """``gate * x + (1 - gate) * IN(x)``; ``gate`` broadcasts against (B, C, H, W)."""
        return gate * x + (1.0 - gate) * self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(x, self.gate(x))
