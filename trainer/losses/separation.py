"""Pattern separation (diversity) loss on the PAM's pattern maps, spec section 1.3.

``L_sep = sum_b sum_{i<j} <M_bi, M_bj> / (B * P(P-1)/2)``: the mean plain inner product of different
sigmoid pattern maps over the H*W positions (no normalisation, no square), pushed towards 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pattern_separation_loss(maps: Tensor) -> Tensor:
    """Mean pairwise overlap of (B, P, H, W) pattern maps; a scalar, 0 when P == 1."""
    batch, patterns = maps.shape[:2]
    if patterns < 2:
        return maps.sum() * 0.0
    flat = maps.float().flatten(2)  # (B, P, HW)
    gram = flat @ flat.transpose(1, 2)  # (B, P, P)
    upper = torch.triu(gram, diagonal=1).sum()
    return upper / (batch * patterns * (patterns - 1) / 2)
