"""Train-time augmentation on whole batches (PAPER.md): faces flip + colour jitter; bio noise + time shift.

All randomness comes from the ``torch.Generator`` passed in, so a seed reproduces the augmentation exactly.
Works on the (normalised) tensors of :meth:`gbvnet.data.dataset.WindowDataset.batch`; returns a new dict.
"""

from __future__ import annotations

import torch


def augment_batch(batch: dict[str, torch.Tensor], generator: torch.Generator, flip_p: float = 0.5,
                  jitter: float = 0.2, noise_std: float = 0.05, max_shift: float = 0.1) -> dict[str, torch.Tensor]:
    out = dict(batch)
    if "face" in batch:
        face = batch["face"]  # (B, F, 3, H, W)
        b = face.shape[0]
        flip = torch.rand(b, generator=generator) < flip_p
        face = torch.where(flip.view(b, 1, 1, 1, 1), face.flip(-1), face)
        contrast = 1 + (torch.rand(b, 1, 1, 1, 1, generator=generator) * 2 - 1) * jitter
        brightness = (torch.rand(b, 1, 3, 1, 1, generator=generator) * 2 - 1) * jitter
        mean = face.mean(dim=(1, 3, 4), keepdim=True)
        out["face"] = (face - mean) * contrast + mean + brightness
    if "bio" in batch:
        bio = batch["bio"]  # (B, C, T)
        b, _, t = bio.shape
        limit = int(max_shift * t)
        shift = torch.randint(-limit, limit + 1, (b, 1, 1), generator=generator)
        index = (torch.arange(t).view(1, 1, t) - shift) % t
        bio = bio.gather(2, index.expand_as(bio))
        out["bio"] = bio + noise_std * torch.randn(bio.shape, generator=generator)
    return out
