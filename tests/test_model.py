"""MPANet network: shapes, switches, the MAM definition, input-size errors."""

from __future__ import annotations

import pytest
import torch

from trainer.model import ModelConfig, MPANetOutput, build_mpanet
from trainer.model.alleviation import ModalityAlleviation


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_mpanet(arch="resnet18", height=128, width=64, num_classes=6)


def test_default_model_embeds_to_14336_at_384x128():
    model = build_mpanet().eval()
    assert model.config == ModelConfig()  # ResNet-50, 384x128, 395 ids
    assert model.classifier.out_features == 395
    with torch.no_grad():
        emb = model.embed(torch.randn(1, 3, 384, 128))  # batch of 1 in eval mode
    assert emb.shape == (1, 14336)
    assert torch.isfinite(emb).all()


def test_small_model_train_forward_gives_typed_output(small_model):
    small_model.train()
    modality = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0])
    out = small_model(torch.randn(8, 3, 128, 64), modality)
    assert isinstance(out, MPANetOutput)
    dim = 7 * 512
    assert out.features.shape == out.embeddings.shape == (8, dim)
    assert out.logits.shape == out.modality_logits.shape == out.teacher_logits.shape == (8, 6)
    assert out.pattern_maps.shape == (8, 6, 8, 4)  # output stride 16 with last stride 1
    assert ((out.pattern_maps > 0) & (out.pattern_maps < 1)).all()
    assert not out.teacher_logits.requires_grad and out.modality_logits.requires_grad
    # Own-modality rows come from the right classifier; teacher rows from the other modality's EMA copy.
    emb = out.embeddings.detach()
    infrared = modality == 1
    torch.testing.assert_close(
        out.modality_logits[infrared].detach(), small_model.classifier_infrared(emb[infrared])
    )
    torch.testing.assert_close(
        out.modality_logits[~infrared].detach(), small_model.classifier_visible(emb[~infrared])
    )
    torch.testing.assert_close(
        out.teacher_logits[infrared], emb[infrared] @ small_model.mean_classifier_visible.t()
    )
    torch.testing.assert_close(
        out.teacher_logits[~infrared], emb[~infrared] @ small_model.mean_classifier_infrared.t()
    )


def test_small_model_batch_of_one_in_eval_mode(small_model):
    small_model.eval()
    with torch.no_grad():
        emb = small_model.embed(torch.randn(1, 3, 128, 64))
        out = small_model(torch.randn(1, 3, 128, 64), torch.tensor([1]))
    assert emb.shape == (1, 3584)
    assert out.embeddings.shape == (1, 3584)


def test_embed_is_the_post_bn_feature(small_model):
    small_model.eval()
    x = torch.randn(3, 3, 128, 64)
    with torch.no_grad():
        out = small_model(x)
        torch.testing.assert_close(small_model.embed(x), out.embeddings)
        torch.testing.assert_close(small_model.neck(out.features), out.embeddings)


def test_pattern_features_are_masked_average_pools_with_global_last(small_model):
    small_model.eval()
    fmap = torch.randn(2, 512, 8, 4)
    feats, maps = small_model.pattern(fmap)
    p = 2
    expected = (maps[:, p : p + 1] * fmap).mean(dim=(2, 3))  # not divided by the mask sum
    torch.testing.assert_close(feats[:, p * 512 : (p + 1) * 512], expected)
    torch.testing.assert_close(feats[:, -512:], fmap.mean(dim=(2, 3)))


def test_switches_remove_components():
    plain = build_mpanet(
        arch="resnet18", height=64, width=32, num_classes=4, mam=False, pam=False, modality_classifiers=False
    )
    assert plain.backbone.mam3 is None and plain.backbone.mam4 is None and plain.pattern is None
    assert plain.classifier_visible is None
    out = plain(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
    assert out.embeddings.shape == (2, 512) and out.pattern_maps is None and out.modality_logits is None
    only4 = build_mpanet(arch="resnet18", height=64, width=32, num_classes=4, mam_stages=[4])
    assert only4.backbone.mam3 is None and isinstance(only4.backbone.mam4, ModalityAlleviation)


def test_bn_neck_bias_is_frozen_at_zero_and_classifiers_have_no_bias(small_model):
    assert not small_model.neck.bias.requires_grad and torch.all(small_model.neck.bias == 0)
    for head in (small_model.classifier, small_model.classifier_visible, small_model.classifier_infrared):
        assert head.bias is None
    names = dict(small_model.named_parameters())
    assert "mean_classifier_visible" not in names  # EMA copies are buffers, not trained
    assert "mean_classifier_visible" in small_model.state_dict()


def test_last_stride_one_gives_output_stride_16():
    model = build_mpanet(arch="resnet18", height=128, width=64, num_classes=3).eval()
    with torch.no_grad():
        assert model.backbone(torch.randn(1, 3, 128, 64)).shape == (1, 512, 8, 4)
    strided = build_mpanet(arch="resnet18", height=128, width=64, num_classes=3, last_stride=2).eval()
    with torch.no_grad():
        assert strided.backbone(torch.randn(1, 3, 128, 64)).shape == (1, 512, 4, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"height": 100}, "multiple of the output stride 16"),
        ({"width": 16}, "at least 32"),
        ({"arch": "resnet101"}, "model.arch must be one of"),
        ({"mam_stages": [2]}, "mam_stages"),
    ],
)
def test_bad_model_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_mpanet(**overrides)


def test_modality_flags_must_match_the_batch(small_model):
    with pytest.raises(ValueError, match="modality must have shape"):
        small_model(torch.randn(2, 3, 128, 64), torch.tensor([0, 1, 1]))


def test_mam_gate_one_is_identity_and_gate_zero_is_instance_norm():
    torch.manual_seed(0)
    mam = ModalityAlleviation(32, reduction=16)
    x = torch.randn(2, 32, 6, 4) * 3 + 1
    torch.testing.assert_close(mam.mix(x, torch.ones(2, 32, 1, 1)), x)
    normalised = mam.mix(x, torch.zeros(2, 32, 1, 1))
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(normalised, (x - mean) / torch.sqrt(var + 1e-5))
    # The full module mixes with its own gate, per image and per channel.
    gate = mam.gate(x)
    assert gate.shape == (2, 32, 1, 1)
    torch.testing.assert_close(mam(x), gate * x + (1 - gate) * normalised)
    # No affine parameters and per-instance statistics in eval mode too.
    assert mam.norm.weight is None and mam.norm.running_mean is None
    mam.eval()
    torch.testing.assert_close(mam.mix(x, torch.zeros(2, 32, 1, 1)), normalised)
