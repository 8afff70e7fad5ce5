"""Loss definitions against hand-computed cases, gradient paths, and one optimisation step."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import (
    LossConfig,
    MPANetObjective,
    center_cluster_loss,
    mean_update_rate,
    modality_identity_loss,
    mutual_mean_kl,
    pattern_separation_loss,
)
from trainer.model import build_mpanet

# ------------------------------------------------------------------------------------ centre cluster


def test_center_cluster_is_zero_on_centres_far_apart():
    # Two identities, K = 2: each feature sits on its centre; centres 5 apart > margin 0.7.
    f = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [3.0, 4.0]])
    terms = center_cluster_loss(f, torch.tensor([7, 7, 9, 9]), k=2, margin=0.7)
    assert terms.intra.item() == pytest.approx(0.0, abs=1e-5)  # sqrt(1e-12) floor
    assert terms.inter.item() == 0.0
    assert terms.total.item() == pytest.approx(0.0, abs=1e-5)


def test_center_cluster_hand_computed():
    # id 0: features (0,0),(2,0) -> centre (1,0); id 1: (1,1),(1,-0.2)... centre (1, 0.4)
    f = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, -0.2]])
    labels = torch.tensor([0, 0, 1, 1])
    terms = center_cluster_loss(f, labels, k=2, margin=0.7)
    intra = (1.0 + 1.0 + 0.6 + 0.6) / 4  # Euclidean, not squared
    centre_gap = 0.4
    inter = 0.7 - centre_gap  # both anchors see the other centre (repeated K times) at 0.4
    assert terms.intra.item() == pytest.approx(intra, rel=1e-6)
    assert terms.inter.item() == pytest.approx(inter, rel=1e-6)
    assert terms.total.item() == pytest.approx(intra + inter, rel=1e-6)


def test_center_cluster_inter_mean_is_over_samples_of_other_identities():
    # Three ids, K=2. Anchor of id 0 sees centres of ids 1 and 2 at 0.5 and 1.0 -> hinge 0.2 and 0.
    f = torch.tensor([[0.0], [0.0], [0.5], [0.5], [1.0], [1.0]])
    terms = center_cluster_loss(f, torch.tensor([0, 0, 1, 1, 2, 2]), k=2, margin=0.7)
    per_anchor = [(0.2 + 0.0) / 2, (0.2 + 0.2) / 2, (0.0 + 0.2) / 2]
    assert terms.inter.item() == pytest.approx(sum(per_anchor) / 3, rel=1e-6)


def test_center_cluster_rejects_a_broken_block_layout():
    f = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="contiguous"):
        center_cluster_loss(f, torch.tensor([0, 1, 0, 1]), k=2)
    with pytest.raises(ValueError, match="blocks of K=3"):
        center_cluster_loss(f, torch.tensor([0, 0, 1, 1]), k=3)


# -------------------------------------------------------------------------------------- separation


def test_separation_is_zero_for_disjoint_maps_and_positive_for_overlap():
    disjoint = torch.zeros(1, 3, 2, 3)
    disjoint[0, 0, 0, :] = 1.0
    disjoint[0, 1, 1, :2] = 1.0
    disjoint[0, 2, 1, 2] = 1.0
    assert pattern_separation_loss(disjoint).item() == 0.0
    overlap = disjoint.clone()
    overlap[0, 1, 0, 0] = 0.5  # pattern 1 now overlaps pattern 0 at one position: <M0, M1> = 0.5
    assert pattern_separation_loss(overlap).item() == pytest.approx(0.5 / 3)


def test_separation_hand_computed_over_batch():
    maps = torch.full((2, 2, 1, 2), 0.5)  # every pair: 0.5*0.5*2 positions = 0.5
    assert pattern_separation_loss(maps).item() == pytest.approx((0.5 + 0.5) / (2 * 1))


# ------------------------------------------------------------------------------- mutual mean learning


def test_kl_is_zero_when_teacher_and_student_agree():
    logits = torch.randn(5, 7)
    assert mutual_mean_kl(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_matches_kldivloss_batchmean_as_called_officially():
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    p = torch.softmax(student, 1)
    expected = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(teacher, 1), p)
    assert mutual_mean_kl(student, teacher).item() == pytest.approx(expected.item(), rel=1e-5)
    manual = (p * (p.log() - torch.log_softmax(teacher, 1))).sum() / 6
    assert mutual_mean_kl(student, teacher).item() == pytest.approx(manual.item(), rel=1e-5)


def test_kl_gradient_reaches_only_the_student():
    torch.manual_seed(0)
    model = build_mpanet(arch="resnet18", height=64, width=32, num_classes=5)
    modality = torch.tensor([0, 0, 1, 1])
    model.update_mean_classifiers(0.2)
    out = model(torch.randn(4, 3, 64, 32), modality)
    mutual_mean_kl(out.modality_logits, out.teacher_logits).backward()
    assert out.teacher_logits.grad_fn is None
    assert model.classifier_visible.weight.grad.abs().sum() > 0  # student of the visible rows
    assert model.classifier_infrared.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad is None  # shared classifier takes no part in KL
    for name in ("mean_classifier_visible", "mean_classifier_infrared"):
        buffer = getattr(model, name)
        assert not buffer.requires_grad and buffer.grad is None


def test_ema_update_moves_copies_by_exactly_the_rate():
    model = build_mpanet(arch="resnet18", height=64, width=32, num_classes=3)
    torch.testing.assert_close(model.mean_classifier_visible, model.classifier_visible.weight.detach())
    with torch.no_grad():
        model.classifier_visible.weight.add_(1.0)
        model.classifier_infrared.weight.mul_(-2.0)
    old_v = model.mean_classifier_visible.clone()
    old_i = model.mean_classifier_infrared.clone()
    model.update_mean_classifiers(0.2)
    torch.testing.assert_close(
        model.mean_classifier_visible, 0.8 * old_v + 0.2 * model.classifier_visible.weight.detach()
    )
    torch.testing.assert_close(
        model.mean_classifier_infrared, 0.8 * old_i + 0.2 * model.classifier_infrared.weight.detach()
    )


def test_mean_update_rate_schedule():
    assert mean_update_rate(1) == pytest.approx(0.2)
    assert mean_update_rate(99) == pytest.approx(0.2)
    assert mean_update_rate(100) == pytest.approx(0.2 * 100 / 101)
    assert mean_update_rate(140) == pytest.approx(0.2 * 100 / 141)
    with pytest.raises(ValueError):
        mean_update_rate(0)


def test_modality_identity_loss_averages_per_modality():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    terms = modality_identity_loss(logits, labels, torch.tensor([0, 1, 1]))
    ce = lambda z, y: -torch.log_softmax(z, 0)[y].item()  # noqa: E731
    assert terms.visible.item() == pytest.approx(ce(logits[0], 0))
    assert terms.infrared.item() == pytest.approx((ce(logits[1], 0) + ce(logits[2], 1)) / 2)
    only_visible = modality_identity_loss(logits, labels, torch.zeros(3, dtype=torch.long))
    assert only_visible.infrared.item() == 0.0  # no NaN when a modality is absent


# -------------------------------------------------------------------------------------- objective


def _batch(p: int, k: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(classes, generator=g)[:p]
    labels = ids.repeat_interleave(k)
    modality = torch.tensor([1, 0] * (k // 2)).repeat(p)  # interleaved IR, RGB like the sampler
    images = torch.randn(p * k, 3, 64, 32, generator=g)
    return images, labels, modality


def test_objective_uses_the_official_effective_weights():
    torch.manual_seed(0)
    model = build_mpanet(arch="resnet18", height=64, width=32, num_classes=8)
    images, labels, modality = _batch(3, 4, 8)
    model.update_mean_classifiers(0.2)
    out = model(images, modality)
    result = MPANetObjective(LossConfig(), images_per_id=4)(out, labels, modality)
    t = result.terms
    expected = 0.5 * t["sep"] + t["cc"] + t["id"] + t["id_visible"] + t["id_infrared"] + 2.5 * t["kl"]
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(t) == {"id", "cc", "cc_intra", "cc_inter", "sep", "id_visible", "id_infrared", "kl"}
    ablated = MPANetObjective(LossConfig(mml=False, sep=False), images_per_id=4)(out, labels, modality)
    assert set(ablated.terms) == {"id", "cc", "cc_intra", "cc_inter"}
    assert ablated.total.item() == pytest.approx((t["id"] + t["cc"]).item(), rel=1e-5)


def test_one_optimisation_step_reduces_the_loss_and_reaches_every_trainable_parameter():
    torch.manual_seed(0)
    model = build_mpanet(arch="resnet18", height=64, width=32, num_classes=10)
    images, labels, modality = _batch(4, 4, 10, seed=1)
    objective = MPANetObjective(LossConfig(), images_per_id=4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def total() -> torch.Tensor:
        model.update_mean_classifiers(0.2)
        return objective(model(images, modality), labels, modality).total

    model.train()
    before = total()
    optimizer.zero_grad()
    before.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert missing == []
    assert model.neck.bias.grad is None  # frozen
    optimizer.step()
    # Same batch, BN in train mode as well: the step must lower the objective.
    with torch.no_grad():
        after = total()
    assert math.isfinite(before.item()) and after.item() < before.item()


def test_loss_config_rejects_nonsense():
    with pytest.raises(ValueError, match="kl_weight"):
        LossConfig(kl_weight=-1)
    with pytest.raises(ValueError, match="at least one"):
        LossConfig(id=False, cc=False, mml=False)
