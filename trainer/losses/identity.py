"""Identity (softmax cross-entropy) loss, spec section 2.1: mean reduction, ignore_index -1, no smoothing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def identity_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of (B, N) logits against (B,) int64 labels; computed in float32 (AMP-safe).

    Returns a scalar; 0 (with a graph) for an empty batch instead of NaN.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=-1, label_smoothing=label_smoothing)
