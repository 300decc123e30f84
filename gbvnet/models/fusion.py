"""Fusion of face and physiological tokens: gated attention (GBV-Net) and a plain concatenation baseline.

Gated attention is our reading of PAPER.md ("adaptively learns and modulates the contribution weight of each
modality"): each modality attends to the other's tokens (one multi-head cross-attention layer each way, with a
residual), both are mean-pooled, and a gate network on ``[f_face, f_bio]`` outputs one weight per modality and
feature, a softmax over the two modalities (so the weights sum to 1 per feature). The fused vector
``w_face * f_face + w_bio * f_bio`` goes through LayerNorm, dropout and an MLP classifier (d -> d/2 -> classes).
The gate weights are returned so they can be logged and plotted.
"""

from __future__ import annotations

import torch
from torch import nn

from gbvnet.config import FusionConfig


def classifier(dim_in: int, num_classes: int, dropout: float) -> nn.Sequential:
    """LayerNorm, dropout and an MLP ``dim_in -> dim_in/2 -> num_classes``: the head of every model variant."""
    return nn.Sequential(nn.LayerNorm(dim_in), nn.Dropout(dropout), nn.Linear(dim_in, dim_in // 2), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(dim_in // 2, num_classes))


class GatedAttentionFusion(nn.Module):
    def __init__(self, cfg: FusionConfig, num_classes: int):
        super().__init__()
        d = cfg.dim
        self.face_to_bio = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.bio_to_face = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm_face = nn.LayerNorm(d)
        self.norm_bio = nn.LayerNorm(d)
        self.gate = nn.Sequential(nn.Linear(2 * d, cfg.gate_hidden), nn.GELU(), nn.Linear(cfg.gate_hidden, 2 * d))
        self.head = classifier(d, num_classes, cfg.dropout)

    def forward(self, face: torch.Tensor, bio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``face`` ``(B, F, d)`` and ``bio`` ``(B, T', d)`` tokens -> logits ``(B, K)``, gates ``(B, 2, d)``."""
        face = self.norm_face(face + self.face_to_bio(face, bio, bio, need_weights=False)[0])
        bio = self.norm_bio(bio + self.bio_to_face(bio, face, face, need_weights=False)[0])
        f_face, f_bio = face.mean(1), bio.mean(1)
        gates = self.gate(torch.cat([f_face, f_bio], -1)).view(-1, 2, f_face.shape[-1]).softmax(1)
        fused = gates[:, 0] * f_face + gates[:, 1] * f_bio
        return self.head(fused), gates


class ConcatFusion(nn.Module):
    """Baseline: an MLP on the concatenated pooled features ``[f_face, f_bio]``."""

    def __init__(self, cfg: FusionConfig, num_classes: int):
        super().__init__()
        self.head = classifier(2 * cfg.dim, num_classes, cfg.dropout)

    def forward(self, face: torch.Tensor, bio: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.head(torch.cat([face.mean(1), bio.mean(1)], -1)), None


FUSION_MODULES = {"gated": GatedAttentionFusion, "concat": ConcatFusion}
