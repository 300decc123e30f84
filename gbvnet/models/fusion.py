"""Fusion of face and physiological tokens: gated attention (GBV-Net) and two concatenation baselines.

Gated attention is our reading of PAPER.md ("adaptively learns and modulates the contribution weight of each
modality"): each modality attends to the other's tokens (one multi-head cross-attention layer each way, with a
residual), both are mean-pooled, and a gate network on ``[f_face, f_bio]`` outputs one weight per modality and
feature, a softmax over the two modalities (so the weights sum to 1 per feature), and the fused vector is
``w_face * f_face + w_bio * f_bio``. The gate weights are returned so they can be logged and plotted.

A fusion module turns the two token sequences into one pooled feature vector of ``out_dim`` features; the
classifier (:func:`classifier`) belongs to the model (:class:`gbvnet.models.gbvnet.GBVNet`, timm's
``forward_features`` / ``forward_head`` split).

The ablations (``fusion.kind``; each kind is an entry of the registry :data:`gbvnet.config.FUSIONS`, which
names its class here):

* ``gated``: cross-attention, then the gate (:class:`GatedAttentionFusion`, the model);
* ``attn-concat``: the same cross-attention, then ``[f_face, f_bio]`` concatenated into the classifier
  (:class:`AttentionConcatFusion`): differs from ``gated`` only by the gate, so "gated vs attn-concat"
  measures the gate;
* ``concat``: no cross-attention, pooled features concatenated (:class:`ConcatFusion`): "gated vs concat"
  measures cross-attention and gate together.
"""

from __future__ import annotations

import torch
from torch import nn

from gbvnet.config import FusionConfig


def classifier(dim_in: int, num_classes: int, dropout: float) -> nn.Sequential:
    """LayerNorm, dropout and an MLP ``dim_in -> dim_in/2 -> num_classes``: the head of every model variant."""
    return nn.Sequential(nn.LayerNorm(dim_in), nn.Dropout(dropout), nn.Linear(dim_in, dim_in // 2), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(dim_in // 2, num_classes))


class CrossAttention(nn.Module):
    """One cross-attention layer each way (face attends to bio, then bio to the updated face), with residuals and
    LayerNorm; returns both modalities' mean-pooled features ``(B, d)``."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        d = cfg.dim
        self.face_to_bio = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.bio_to_face = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm_face = nn.LayerNorm(d)
        self.norm_bio = nn.LayerNorm(d)

    def forward(self, face: torch.Tensor, bio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        face = self.norm_face(face + self.face_to_bio(face, bio, bio, need_weights=False)[0])
        bio = self.norm_bio(bio + self.bio_to_face(bio, face, face, need_weights=False)[0])
        return face.mean(1), bio.mean(1)


class GatedAttentionFusion(nn.Module):
    """GBV-Net's fusion: :class:`CrossAttention`, then a gate MLP on ``[f_face, f_bio]`` giving one softmax weight
    per modality and feature; the output is ``w_face * f_face + w_bio * f_bio``.

    Args:
        cfg: its :class:`~gbvnet.config.FusionConfig` (width ``dim``, heads, gate width, dropout).

    Holds ``cross`` and ``gate``; ``out_dim`` is ``dim``.
    """

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        d = self.out_dim = cfg.dim
        self.cross = CrossAttention(cfg)
        self.gate = nn.Sequential(nn.Linear(2 * d, cfg.gate_hidden), nn.GELU(), nn.Linear(cfg.gate_hidden, 2 * d))

    def forward(self, face: torch.Tensor, bio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``face`` ``(B, F, d)`` and ``bio`` ``(B, T', d)`` tokens -> fused features ``(B, d)``, gates
        ``(B, 2, d)``."""
        f_face, f_bio = self.cross(face, bio)
        gates = self.gate(torch.cat([f_face, f_bio], -1)).view(-1, 2, f_face.shape[-1]).softmax(1)
        return gates[:, 0] * f_face + gates[:, 1] * f_bio, gates


class AttentionConcatFusion(nn.Module):
    """Ablation of the gate: the cross-attention of :class:`GatedAttentionFusion`, then ``[f_face, f_bio]``
    concatenated (no gate)."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.out_dim = 2 * cfg.dim
        self.cross = CrossAttention(cfg)

    def forward(self, face: torch.Tensor, bio: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.cat(self.cross(face, bio), -1), None


class ConcatFusion(nn.Module):
    """Baseline: the concatenated pooled features ``[f_face, f_bio]`` (no cross-attention, no gate)."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.out_dim = 2 * cfg.dim

    def forward(self, face: torch.Tensor, bio: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.cat([face.mean(1), bio.mean(1)], -1), None

