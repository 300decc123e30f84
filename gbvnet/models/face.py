"""Face branch: a timm ConvNeXt V2 applied per frame, then a lightweight temporal Transformer.

Frames are folded into the batch for the backbone (``(B*F, 3, H, W)``), the pooled per-frame features are
projected to ``dim``, given learned temporal position embeddings and passed through a pre-norm Transformer
encoder. The branch returns the frame tokens ``(B, F, dim)``; pooling happens in the fusion/head so that
cross-modal attention can see every frame. Sizes are our choices (PAPER.md: "modified ConvNeXt V2 combined with
lightweight Transformers"); see :class:`gbvnet.config.FaceConfig`.
"""

from __future__ import annotations

import torch
from torch import nn

from gbvnet.config import FaceConfig


def create_backbone(cfg: FaceConfig) -> nn.Module:
    """The ConvNeXt V2 backbone without its classifier (``num_classes=0`` returns pooled features).

    ``cfg.pretrained`` uses timm's normal download path; ``cfg.checkpoint`` loads a local weights file through
    timm's ``pretrained_cfg_overlay`` (the same loading code, no network).
    """
    import timm  # here, not at module level: it pulls in torchvision (seconds per Ray worker), bio-only runs skip it

    kwargs: dict = {"num_classes": 0}
    if cfg.checkpoint:
        kwargs["pretrained_cfg_overlay"] = {"file": str(cfg.checkpoint)}
    return timm.create_model(cfg.backbone, pretrained=cfg.pretrained or bool(cfg.checkpoint), **kwargs)


class FaceEncoder(nn.Module):
    """The face branch: a timm ConvNeXt V2 backbone per frame, a linear projection to ``dim`` with a learned
    position per frame, then a temporal Transformer over the frames.

    Args:
        cfg: its :class:`~gbvnet.config.FaceConfig` (backbone, weights, frames, image size, width, depth).

    Input ``(B, frames, 3, image_size, image_size)`` normalised frames; output frame tokens ``(B, frames, dim)``.
    """

    def __init__(self, cfg: FaceConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg)
        self.proj = nn.Linear(self.backbone.num_features, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(1, cfg.frames, cfg.dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.dim, cfg.heads, dim_feedforward=int(cfg.dim * cfg.mlp_ratio), dropout=cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.temporal = nn.TransformerEncoder(layer, cfg.depth, norm=nn.LayerNorm(cfg.dim),
                                              enable_nested_tensor=False)

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        """``face``: ``(B, F, 3, H, W)`` normalised frames -> frame tokens ``(B, F, dim)``."""
        c = self.cfg
        if face.ndim != 5 or face.shape[1] != c.frames or face.shape[2] != 3:
            raise ValueError(
                f"face input must be (batch, {c.frames} frames, 3, H, W); got {tuple(face.shape)}"
            )
        if face.shape[-2:] != (c.image_size, c.image_size):
            raise ValueError(
                f"face frames must be {c.image_size}x{c.image_size} (face.image_size); got "
                f"{face.shape[-2]}x{face.shape[-1]}"
            )
        b, f = face.shape[:2]
        feats = self.backbone(face.flatten(0, 1))  # (B*F, num_features)
        tokens = self.proj(feats).view(b, f, -1) + self.pos
        return self.temporal(tokens)
