"""GBV-Net model: shapes, gradients, gates, branch absence, determinism, input errors, learning."""

from __future__ import annotations

import pytest
import torch

from gbvnet.config import ConfigError, model_preset
from gbvnet.models import create_model
from gbvnet.models.summary import count_flops, example_inputs, parameter_counts

C, T = 6, 64
VARIANTS = [("face", "gated"), ("bio", "gated"), ("facebio", "gated"), ("facebio", "attn-concat"),
            ("facebio", "concat")]


def smoke(modality: str, fusion: str = "gated", seed: int = 0):
    torch.manual_seed(seed)
    return create_model("smoke", modality=modality, fusion=fusion, bio_channels=C, bio_samples=T)


@pytest.mark.parametrize("modality,fusion", VARIANTS)
def test_output_shapes_and_gates(modality, fusion):
    model = smoke(modality, fusion)
    out = model(**example_inputs(model, batch=3))
    assert out["logits"].shape == (3, 2)
    if modality == "facebio" and fusion == "gated":
        gates = out["gates"]
        assert gates.shape == (3, 2, model.cfg.fusion.dim)
        assert torch.isfinite(gates).all()
        torch.testing.assert_close(gates.sum(1), torch.ones(3, model.cfg.fusion.dim))
    else:
        assert "gates" not in out


def test_bio_attention_runs_the_fused_kernel_forward_and_backward():
    """The bio branch's self-attention reaches scaled_dot_product_attention's fused CPU kernel (faster than its
    matmul + softmax fallback, which strided inputs get) in the forward and the backward pass."""
    model = smoke("bio")
    with torch.profiler.profile() as prof:
        model(**example_inputs(model, batch=2))["logits"].sum().backward()
    ops = {event.key for event in prof.key_averages()}
    assert {"aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward"} <= ops
    assert "aten::_softmax" not in ops


@pytest.mark.parametrize("modality,fusion", VARIANTS)
def test_gradients_reach_every_parameter(modality, fusion):
    model = smoke(modality, fusion)
    model(**example_inputs(model, batch=2))["logits"].sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"no gradient for {missing}"


def test_gates_respond_to_inputs():
    model = smoke("facebio").eval()
    a, b = example_inputs(model, batch=1), example_inputs(model, batch=1)
    ga, gb = model(**a)["gates"], model(**b)["gates"]
    assert (ga - gb).abs().max() > 1e-4


def test_unused_branches_absent():
    face_names = {n for n, _ in smoke("face").named_parameters()}
    bio_names = {n for n, _ in smoke("bio").named_parameters()}
    assert not any(n.startswith("bio.") for n in face_names)
    assert not any(n.startswith("face.") for n in bio_names)
    assert smoke("face").bio is None and smoke("bio").face is None
    with pytest.raises(ValueError, match="takes no face input"):
        smoke("bio")(face=torch.randn(1, 4, 3, 64, 64), bio=torch.randn(1, C, T))


def test_same_seed_same_outputs():
    x = example_inputs(smoke("facebio"), batch=2)
    out1 = smoke("facebio", seed=7).eval()(**x)["logits"]
    out2 = smoke("facebio", seed=7).eval()(**x)["logits"]
    out3 = smoke("facebio", seed=8).eval()(**x)["logits"]
    torch.testing.assert_close(out1, out2)
    assert not torch.allclose(out1, out3)


def test_wrong_shapes_say_what_was_expected():
    model = smoke("facebio")
    good = example_inputs(model, batch=2)
    with pytest.raises(ValueError, match=rf"\(batch, {C} channels, {T} samples\)"):
        model(face=good["face"], bio=torch.randn(2, C + 1, T))
    with pytest.raises(ValueError, match=r"\(batch, 4 frames, 3, H, W\)"):
        model(face=torch.randn(2, 5, 3, 64, 64), bio=good["bio"])
    with pytest.raises(ValueError, match="64x64"):
        model(face=torch.randn(2, 4, 3, 96, 96), bio=good["bio"])
    with pytest.raises(ValueError, match="needs a bio input"):
        model(face=good["face"])


def test_bad_config_values_are_refused():
    with pytest.raises(ConfigError, match="modality"):
        model_preset("smoke", modality="eeg")
    with pytest.raises(ConfigError, match="fusion.kind"):
        model_preset("smoke", fusion="sum")
    with pytest.raises(ConfigError, match="bio.channels"):
        model_preset("smoke", bio_channels=0)
    with pytest.raises(ConfigError, match="convnextv2"):
        cfg = model_preset("smoke")
        cfg.face.backbone = "resnet18"
        cfg.validate()


def test_local_checkpoint_is_loaded(tmp_path):
    """The offline path: backbone weights from a local file through timm's pretrained_cfg_overlay."""
    source = smoke("face", seed=1)
    path = tmp_path / "atto.pth"
    torch.save(source.face.backbone.state_dict(), path)
    cfg = model_preset("smoke", modality="face")
    cfg.face.checkpoint = str(path)
    torch.manual_seed(2)
    loaded = create_model(cfg)
    for (name, a), (_, b) in zip(source.face.backbone.state_dict().items(), loaded.face.backbone.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_pretrained_goes_through_timms_normal_path(monkeypatch):
    """``face.pretrained`` asks timm for its own weights (no download here: the call is recorded, then built
    without weights); no local-file overlay is passed."""
    import timm

    calls, real = [], timm.create_model

    def record(name, pretrained=False, **kwargs):
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", record)
    cfg = model_preset("smoke", modality="face")
    cfg.face.pretrained = True
    create_model(cfg)
    assert calls == [{"name": "convnextv2_atto", "pretrained": True, "num_classes": 0}]
    assert cfg.face.weights == "timm-pretrained"


def test_attn_concat_differs_from_gated_only_by_the_gate():
    """The gate ablation keeps gated fusion's cross-attention (same parameters) and swaps the gate for a concat."""
    gated, attn_concat = smoke("facebio", "gated"), smoke("facebio", "attn-concat")
    cross = {n: p.shape for n, p in gated.fusion.named_parameters() if n.startswith("cross.")}
    assert cross and cross == {n: p.shape for n, p in attn_concat.fusion.named_parameters() if n.startswith("cross.")}
    assert hasattr(gated.fusion, "gate") and not hasattr(attn_concat.fusion, "gate")
    assert not any(n.startswith("cross.") for n, _ in smoke("facebio", "concat").fusion.named_parameters())
    head_in = {name: m.head[0].normalized_shape[0] for name, m in (("gated", gated), ("attn", attn_concat))}
    assert head_in == {"gated": gated.cfg.fusion.dim, "attn": 2 * gated.cfg.fusion.dim}


@pytest.mark.parametrize("modality,fusion", VARIANTS)
def test_forward_is_features_then_head(modality, fusion):
    """timm's split: forward = forward_head(forward_features(...)); the model owns the one classifier."""
    model = smoke(modality, fusion).eval()
    inputs = example_inputs(model, batch=3)
    features, gates = model.forward_features(**inputs)
    assert features.shape == (3, model.num_features)
    torch.testing.assert_close(model.forward_head(features), model(**inputs)["logits"])
    assert (gates is not None) == (modality == "facebio" and fusion == "gated")
    assert not any(".head" in n for n, _ in model.named_modules() if not n.startswith("face.backbone"))


def test_flops_and_parameter_counts_are_real():
    bio, both = smoke("bio"), smoke("facebio")
    assert 0 < count_flops(bio) < count_flops(both)
    assert count_flops(bio, batch=2) == 2 * count_flops(bio)
    counts = parameter_counts(both)
    assert counts["total"] == counts["face"] + counts["bio"] + counts["fusion"] + counts["head"]


@pytest.mark.parametrize("modality", ["bio", "facebio"])
def test_smoke_model_overfits_fixed_batch(modality):
    torch.manual_seed(0)
    model = smoke(modality)
    x = example_inputs(model, batch=8)
    y = torch.tensor([0, 1] * 4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):  # at most 60 steps; it needs about 13 (each one seconds long on a loaded machine)
        loss = torch.nn.functional.cross_entropy(model(**x)["logits"], y)
        if loss.item() < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
