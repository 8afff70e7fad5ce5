"""Center cluster loss (MPANet's ``CenterTripletLoss``), spec section 2.3.

On pre-BN features f (B, D): batch centres c_y are the means of each identity's features (both
modalities pooled). The loss is

    mean_i ||f_i - c_{y_i}||_2  +  mean_anchors mean_{j: y_j != y_a} [margin - ||c_{y_a} - c_{y_j}||_2]_+

with one anchor per identity block (batch positions 0, K, 2K, ...): the batch must hold P contiguous
blocks of K samples of one identity each, which the cross-modality sampler guarantees.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class CenterClusterTerms(NamedTuple):
    """Scalars: ``total = intra + inter``."""

    total: Tensor
    intra: Tensor
    inter: Tensor


def center_cluster_loss(features: Tensor, labels: Tensor, k: int, margin: float = 0.7) -> CenterClusterTerms:
    """Center cluster loss of (B, D) features with (B,) labels in contiguous K-blocks.

    Args:
        features: (B, D) pre-BN embeddings; cast to float32.
        labels: (B,) int identity labels; positions b*K..b*K+K-1 share one identity.
        k: K, the block length (images per identity in the batch).
        margin: rho, the minimum distance wanted between batch centres (0.7).

    Raises:
        ValueError: B is not a multiple of K or a block mixes identities.
    """
    f = features.float()
    batch = f.shape[0]
    if k < 1 or batch % k:
        raise ValueError(f"center cluster loss needs a batch of P blocks of K={k} samples, got B={batch}")
    blocks = labels.view(-1, k)
    if not bool((blocks == blocks[:, :1]).all()):
        raise ValueError("center cluster loss needs each identity's K samples contiguous in the batch")
    ids, index = torch.unique(labels, return_inverse=True)  # index: (B,) position of each label in ids
    onehot = F.one_hot(index, ids.numel()).to(f.dtype)  # (B, U)
    centres = (onehot.t() @ f) / onehot.sum(0).unsqueeze(1)  # (U, D)
    # Distances as sqrt(max(d^2, 1e-12)): finite gradients even when a feature sits on its centre.
    intra = (f - centres[index]).pow(2).sum(1).clamp_min(1e-12).sqrt().mean()
    centre_dist = torch.cdist(centres, centres).pow(2).clamp_min(1e-12).sqrt()  # (U, U)
    anchor_ids = index[::k]  # (A,)
    dist = centre_dist[anchor_ids][:, index]  # (A, B): each other centre repeated once per sample
    negative = index.unsqueeze(0) != anchor_ids.unsqueeze(1)  # (A, B)
    hinge = (margin - dist).clamp_min(0.0) * negative
    has_negative = negative.any(1)
    if bool(has_negative.any()):
        per_anchor = hinge.sum(1) / negative.sum(1).clamp_min(1)
        inter = per_anchor[has_negative].mean()
    else:  # a single identity in the batch: no centre to push away from
        inter = f.sum() * 0.0
    return CenterClusterTerms(total=intra + inter, intra=intra, inter=inter)
