"""Mutual mean learning (MML), spec section 2.4.

- modality-specific identity losses: CE of the own-modality classifier, averaged per modality;
- the mean (EMA) classifiers are updated every iteration at rate ``0.2 * min(1, 100 / (epoch + 1))``
  (epoch 1-based), see :meth:`trainer.model.MPANet.update_mean_classifiers`;
- cross-modal consistency ``KL(p || q)``: p = softmax(own-modality online classifier) is the student
  and carries the gradient; q = softmax(other modality's EMA classifier) is the teacher, detached.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from trainer.losses.identity import identity_loss


class ModalityIdentityTerms(NamedTuple):
    """Scalars: L_V over the visible rows and L_I over the infrared rows (0 if a modality is absent)."""

    visible: Tensor
    infrared: Tensor


def mean_update_rate(epoch: int, base_rate: float = 0.2, decay_epoch: int = 100) -> float:
    """EMA rate for 1-based ``epoch``: ``base_rate * min(1, decay_epoch / (epoch + 1))``.

    0.2 up to epoch 99, 0.198 at epoch 100, about 0.142 at epoch 140 (spec 2.4).
    """
    if epoch < 1:
        raise ValueError(f"epoch is 1-based, got {epoch}")
    return base_rate * min(1.0, decay_epoch / (epoch + 1))


def modality_identity_loss(
    modality_logits: Tensor, labels: Tensor, modality: Tensor
) -> ModalityIdentityTerms:
    """L_V and L_I from (B, N) own-modality logits, (B,) labels and (B,) modality flags (1 = infrared)."""
    infrared = modality != 0
    return ModalityIdentityTerms(
        visible=identity_loss(modality_logits[~infrared], labels[~infrared]),
        infrared=identity_loss(modality_logits[infrared], labels[infrared]),
    )


def mutual_mean_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``(1/B) sum_i sum_c p_ic (log p_ic - log q_ic)``, gradient through the student p only.

    Args:
        student_logits: (B, N) logits of each sample's own-modality online classifier.
        teacher_logits: (B, N) logits of the other modality's EMA classifier (detached here).

    Equals ``KLDivLoss(reduction='batchmean')(log q, p)`` as called in the official code.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p = F.log_softmax(student_logits.float(), dim=1)
    log_q = F.log_softmax(teacher_logits.detach().float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum() / student_logits.shape[0]
