"""MPANet's losses (spec section 2), each a plain function of tensors, and the weighted objective."""

from trainer.losses.center_cluster import CenterClusterTerms, center_cluster_loss
from trainer.losses.identity import identity_loss
from trainer.losses.mutual_mean import (
    ModalityIdentityTerms,
    mean_update_rate,
    modality_identity_loss,
    mutual_mean_kl,
)
from trainer.losses.objective import LossConfig, LossTerms, MPANetObjective
from trainer.losses.separation import pattern_separation_loss

__all__ = [
    "CenterClusterTerms",
    "LossConfig",
    "LossTerms",
    "MPANetObjective",
    "ModalityIdentityTerms",
    "center_cluster_loss",
    "identity_loss",
    "mean_update_rate",
    "modality_identity_loss",
    "mutual_mean_kl",
    "pattern_separation_loss",
]
