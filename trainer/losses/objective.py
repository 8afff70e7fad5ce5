"""The total MPANet training objective with the effective weights of the official code (spec 2.5):

    L = 0.5 L_sep + 1.0 L_cc + 1.0 L_id + 1.0 L_V + 1.0 L_I + 2.5 L_KL

L_V and L_I carry 1.0 because the official code adds ``weight_sid * (L_V + L_I)`` twice with
``weight_sid = 0.5`` (MPANet issue #6); set ``modality_id_weight=0.5`` for the literal paper reading.
Every term can be switched off for the ablation study.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from trainer.losses.center_cluster import center_cluster_loss
from trainer.losses.identity import identity_loss
from trainer.losses.mutual_mean import modality_identity_loss, mutual_mean_kl
from trainer.losses.separation import pattern_separation_loss
from trainer.model.mpanet import MPANetOutput


@dataclass
class LossConfig:
    """Which loss terms are on, and their weights (defaults: the official code's effective weights).

    Attributes:
        id, id_weight, label_smoothing: shared-classifier cross-entropy (no smoothing in MPANet).
        cc, cc_weight, cc_margin: centre cluster loss on pre-BN features (margin 0.7).
        sep, sep_weight: pattern separation loss (0.5); inactive when the model has no PAM.
        mml: mutual mean learning on/off (modality CE terms, KL, EMA classifiers).
        modality_id_weight: effective weight of L_V and of L_I (1.0 = 2 x 0.5, see module doc).
        kl_weight: weight of the KL consistency term (2.5).
        mean_update_rate, mean_rate_decay_epoch: EMA rate 0.2 * min(1, 100 / (epoch + 1)).
    """

    id: bool = True
    id_weight: float = 1.0
    label_smoothing: float = 0.0
    cc: bool = True
    cc_weight: float = 1.0
    cc_margin: float = 0.7
    sep: bool = True
    sep_weight: float = 0.5
    mml: bool = True
    modality_id_weight: float = 1.0
    kl_weight: float = 2.5
    mean_update_rate: float = 0.2
    mean_rate_decay_epoch: int = 100

    def __post_init__(self) -> None:
        for name in ("id_weight", "cc_weight", "cc_margin", "sep_weight", "modality_id_weight", "kl_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mean_update_rate <= 1.0:
            raise ValueError(f"loss.mean_update_rate must be in [0, 1], got {self.mean_update_rate}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (self.id or self.cc or self.mml):
            raise ValueError("at least one of loss.id, loss.cc, loss.mml must be on")


@dataclass
class LossTerms:
    """``total`` (scalar with graph) and each active term, detached, by name (unweighted values)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class MPANetObjective:
    """Callable computing :class:`LossTerms` from a forward pass.

    Args:
        config: the switches and weights.
        images_per_id: K, the identity block length the centre cluster loss anchors on.
    """

    def __init__(self, config: LossConfig, images_per_id: int) -> None:
        self.config = config
        self.images_per_id = images_per_id

    def __call__(self, out: MPANetOutput, labels: Tensor, modality: Tensor) -> LossTerms:
        """Args: ``out`` of ``model(images, modality)``; (B,) int64 labels; (B,) modality flags."""
        cfg = self.config
        weighted: list[Tensor] = []
        terms: dict[str, Tensor] = {}
        if cfg.id:
            terms["id"] = identity_loss(out.logits, labels, cfg.label_smoothing)
            weighted.append(cfg.id_weight * terms["id"])
        if cfg.cc:
            cc = center_cluster_loss(out.features, labels, self.images_per_id, cfg.cc_margin)
            terms.update(cc=cc.total, cc_intra=cc.intra, cc_inter=cc.inter)
            weighted.append(cfg.cc_weight * cc.total)
        if cfg.sep and out.pattern_maps is not None:
            terms["sep"] = pattern_separation_loss(out.pattern_maps)
            weighted.append(cfg.sep_weight * terms["sep"])
        if cfg.mml:
            if out.modality_logits is None or out.teacher_logits is None:
                raise ValueError(
                    "loss.mml needs modality logits: build the model with modality_classifiers=True "
                    "and pass the modality flags to forward()"
                )
            modality_terms = modality_identity_loss(out.modality_logits, labels, modality)
            terms["id_visible"] = modality_terms.visible
            terms["id_infrared"] = modality_terms.infrared
            terms["kl"] = mutual_mean_kl(out.modality_logits, out.teacher_logits)
            weighted.append(cfg.modality_id_weight * (modality_terms.visible + modality_terms.infrared))
            weighted.append(cfg.kl_weight * terms["kl"])
        total = weighted[0]
        for value in weighted[1:]:
            total = total + value
        return LossTerms(total=total, terms={k: v.detach() for k, v in terms.items()})
