"""Cached values -> model inputs, on the training device: one place for training, validation and test.

A batch from :meth:`gbvnet.data.window_dataset.WindowDataset.batch` arrives on the device as it is cached (faces
``uint8`` ``(B, F, H, W, 3)``, bio raw float32 ``(B, C, T)``). :class:`BatchTransform` then

* faces: converts to float, ImageNet-normalises (one multiply-add per value) and returns ``(B, F, 3, H, W)``
  (a channels-last view of the cached layout: no transpose copy);
* bio: standardises per channel with the training-rows :class:`~gbvnet.data.window_dataset.Normalizer`, then keeps
  the channels the model reads (``channels``: their positions; ``--channels``);
* with a ``generator`` (training only): augments as PAPER.md describes. Faces: horizontal flip (p = 0.5),
  contrast (per sample, +-20 % around the sample's per-channel mean) and brightness (per sample and channel,
  +-0.2 in normalised units). Bio: circular time shift (up to 10 % of the window) and Gaussian noise
  (sigma 0.05 in standardised units).

All randomness is drawn from the ``torch.Generator`` passed in, which lives on the same device as the data, so
a seed reproduces a run on that device exactly (CUDA and CPU generators give different streams). On
``device=cpu`` this is the host path: the same code.

Example:
    >>> import torch
    >>> t = BatchTransform("face", device=torch.device("cpu"))
    >>> x = t({"face": torch.full((2, 4, 8, 8, 3), 255, dtype=torch.uint8)})["face"]
    >>> tuple(x.shape), round(x[0, 0, 0, 0, 0].item(), 3)  # (1 - 0.485) / 0.229
    ((2, 4, 3, 8, 8), 2.249)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gbvnet.data.window_dataset import Normalizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augmentation:
    """Augmentation strengths (PAPER.md; the numbers are our choices)."""

    flip_p: float = 0.5
    jitter: float = 0.2
    noise_std: float = 0.05
    max_shift: float = 0.1


class BatchTransform:
    """Model inputs of a device batch for ``modality`` (see the module docstring)."""

    def __init__(self, modality: str, device: torch.device, normalizer: Normalizer | None = None,
                 channels: list[int] | None = None, augmentation: Augmentation = Augmentation()):
        self.modality, self.device, self.augmentation = modality, torch.device(device), augmentation
        # the bio channels the model reads, by position in the cached windows (None: all of them)
        self.channels = None if channels is None else torch.as_tensor(channels, device=self.device)
        std = torch.tensor(IMAGENET_STD, device=self.device)
        # (x / 255 - mean) / std as one multiply-add, shaped for (B, F, 3, H, W)
        self.face_scale = (1 / (255 * std)).view(1, 1, 3, 1, 1)
        self.face_shift = (-torch.tensor(IMAGENET_MEAN, device=self.device) / std).view(1, 1, 3, 1, 1)
        self.bio_mean = self.bio_scale = None
        if normalizer is not None:
            self.bio_mean = torch.as_tensor(normalizer.mean, dtype=torch.float32, device=self.device).view(1, -1, 1)
            self.bio_scale = (1 / torch.as_tensor(normalizer.std, dtype=torch.float64)).float().to(self.device)
            self.bio_scale = self.bio_scale.view(1, -1, 1)

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
        """``{"face": ..., "bio": ...}`` model inputs of ``batch`` (keys of the modality); augmented when a
        ``generator`` is given. The input tensors are left unchanged."""
        out = {}
        if "face" in batch and self.modality != "bio":
            out["face"] = self.face(batch["face"], generator)
        if "bio" in batch and self.modality != "face":
            out["bio"] = self.bio(batch["bio"], generator)
        return out

    def face(self, face: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = face.permute(0, 1, 4, 2, 3).float() * self.face_scale + self.face_shift  # (B, F, 3, H, W)
        if generator is None:
            return x
        a, b = self.augmentation, x.shape[0]
        flip = torch.rand(b, generator=generator, device=generator.device) < a.flip_p
        x = torch.where(flip.view(b, 1, 1, 1, 1), x.flip(-1), x)
        contrast = 1 + (torch.rand(b, 1, 1, 1, 1, generator=generator, device=generator.device) * 2 - 1) * a.jitter
        brightness = (torch.rand(b, 1, 3, 1, 1, generator=generator, device=generator.device) * 2 - 1) * a.jitter
        mean = x.mean(dim=(1, 3, 4), keepdim=True)
        return (x - mean) * contrast + mean + brightness

    def bio(self, bio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = bio if self.bio_mean is None else (bio - self.bio_mean).mul_(self.bio_scale)  # one new tensor
        if self.channels is not None:
            x = x.index_select(1, self.channels)
        if generator is None:
            return x
        a, (b, _, t) = self.augmentation, x.shape
        limit = int(a.max_shift * t)
        shift = torch.randint(-limit, limit + 1, (b, 1, 1), generator=generator, device=generator.device)
        index = (torch.arange(t, device=x.device).view(1, 1, t) - shift) % t
        x = x.gather(2, index.expand_as(x))
        return x + a.noise_std * torch.randn(x.shape, generator=generator, device=generator.device)
