"""GBV-Net assembly: face branch, physiological branch and fusion, for one modality or both.

``modality`` is ``face``, ``bio`` or ``facebio``; a model built for one modality has no parameters of the
other. ``fusion`` (a kind of :data:`gbvnet.config.FUSIONS`: ``gated`` | ``attn-concat`` | ``concat``, see
:mod:`gbvnet.models.fusion`) applies to ``facebio`` only. Use :func:`create_model`.

Like timm's models, the forward pass is :meth:`GBVNet.forward_features` (branches, then fusion or pooling, to one
feature vector per sample, plus the gate weights of gated fusion) followed by :meth:`GBVNet.forward_head` (the
model's classifier: LayerNorm, dropout and an MLP ``d -> d/2 -> classes``).

Example:
    >>> import torch
    >>> model = create_model("smoke", modality="bio", bio_channels=8, bio_samples=64)
    >>> out = model(bio=torch.randn(2, 8, 64))
    >>> tuple(out["logits"].shape)
    (2, 2)
"""

from __future__ import annotations

import torch
from torch import nn

from gbvnet.config import FUSIONS, ModelConfig, model_preset
from gbvnet.models.bio import BioEncoder
from gbvnet.models.face import FaceEncoder
from gbvnet.models.fusion import classifier


class GBVNet(nn.Module):
    """GBV-Net for one modality or both: ``face`` (:class:`~gbvnet.models.face.FaceEncoder`) and / or ``bio``
    (:class:`~gbvnet.models.bio.BioEncoder`) branches, with ``facebio`` the ``fusion`` module of the configured
    kind, and the classifier ``head``.

    Args:
        cfg: its :class:`~gbvnet.config.ModelConfig` (validated here); a branch it does not use is ``None``.

    ``forward(face, bio)`` takes faces ``(B, F, 3, H, W)`` and / or bio ``(B, C, T)`` and returns
    ``{"logits": (B, num_classes)}``, plus ``"gates": (B, 2, d)`` when the fusion kind emits gates.
    ``num_features`` is the width of the features the head reads.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        uses_face, uses_bio = cfg.modality in ("face", "facebio"), cfg.modality in ("bio", "facebio")
        self.face = FaceEncoder(cfg.face) if uses_face else None
        self.bio = BioEncoder(cfg.bio) if uses_bio else None
        if cfg.modality == "facebio":
            if cfg.face.dim != cfg.fusion.dim or cfg.bio.dim != cfg.fusion.dim:
                raise ValueError(f"face.dim ({cfg.face.dim}) and bio.dim ({cfg.bio.dim}) must equal "
                                 f"fusion.dim ({cfg.fusion.dim})")
            self.fusion = FUSIONS[cfg.fusion.kind].module_class()(cfg.fusion)
            self.num_features = self.fusion.out_dim
        else:
            self.num_features = cfg.face.dim if uses_face else cfg.bio.dim
        self.head = classifier(self.num_features, cfg.num_classes, cfg.fusion.dropout)

    def forward_features(self, face: torch.Tensor | None = None, bio: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features ``(B, num_features)``: the fused vector (``facebio``) or the mean-pooled tokens of the one
        branch; and the gate weights ``(B, 2, d)`` (face, bio) of gated fusion, else None."""
        for name, branch, x in (("face", self.face, face), ("bio", self.bio, bio)):
            if branch is not None and x is None:
                raise ValueError(f"modality {self.cfg.modality!r} needs a {name} input")
            if branch is None and x is not None:
                raise ValueError(f"modality {self.cfg.modality!r} takes no {name} input")
        if self.cfg.modality == "facebio":
            return self.fusion(self.face(face), self.bio(bio))
        tokens = self.face(face) if self.face is not None else self.bio(bio)
        return tokens.mean(1), None

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` from :meth:`forward_features`' features."""
        return self.head(features)

    def forward(self, face: torch.Tensor | None = None, bio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Returns ``{"logits": (B, K)}`` plus ``"gates": (B, 2, d)`` (face, bio) for gated fusion."""
        features, gates = self.forward_features(face, bio)
        logits = self.forward_head(features)
        return {"logits": logits} if gates is None else {"logits": logits, "gates": gates}


def create_model(preset: str | ModelConfig = "smoke", **overrides) -> GBVNet:
    """Build GBV-Net from a preset name (``smoke`` | ``paper``) with overrides, or from a ``ModelConfig``."""
    if isinstance(preset, ModelConfig):
        if overrides:
            raise ValueError("overrides apply to preset names only; edit the ModelConfig instead")
        return GBVNet(preset)
    return GBVNet(model_preset(preset, **overrides))
