"""The device-side batch transform: normalisation and augmentation, against a host reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gbvnet.data.cache import open_cache
from gbvnet.data.transform import IMAGENET_MEAN, IMAGENET_STD, Augmentation, BatchTransform
from gbvnet.data.window_dataset import WindowDataset, fit_normalizer

ROWS = np.array([5, 0, 7, 1, 2])


@pytest.fixture(scope="module")
def cache(small_mahnob_cache):
    return open_cache(str(small_mahnob_cache))


def reference_host_transform(batch, norm, generator):
    """The host path this project had before the device-side transform, as the oracle: faces to float, scaled,
    ImageNet-normalised, then flip / contrast / brightness; bio standardised, then time shift and noise. Random
    numbers are drawn in the same order from a CPU generator."""
    a = Augmentation()
    face = batch["face"].permute(0, 1, 4, 2, 3).float().div(255)
    face = (face - torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    b = face.shape[0]
    flip = torch.rand(b, generator=generator) < a.flip_p
    face = torch.where(flip.view(b, 1, 1, 1, 1), face.flip(-1), face)
    contrast = 1 + (torch.rand(b, 1, 1, 1, 1, generator=generator) * 2 - 1) * a.jitter
    brightness = (torch.rand(b, 1, 3, 1, 1, generator=generator) * 2 - 1) * a.jitter
    mean = face.mean(dim=(1, 3, 4), keepdim=True)
    face = (face - mean) * contrast + mean + brightness
    bio = (batch["bio"].numpy() - norm.mean[:, None]) / norm.std[:, None]
    bio = torch.from_numpy(bio.astype(np.float32))
    t = bio.shape[2]
    limit = int(a.max_shift * t)
    shift = torch.randint(-limit, limit + 1, (b, 1, 1), generator=generator)
    bio = bio.gather(2, ((torch.arange(t).view(1, 1, t) - shift) % t).expand_as(bio))
    return {"face": face, "bio": bio + a.noise_std * torch.randn(bio.shape, generator=generator)}


def test_device_transform_matches_the_host_reference(cache):
    norm = fit_normalizer(cache, np.arange(4))
    batch = WindowDataset(cache, modality="facebio").batch(ROWS)
    original = {k: v.clone() for k, v in batch.items()}
    transform = BatchTransform("facebio", torch.device("cpu"), norm)
    got = transform(batch, torch.Generator().manual_seed(3))
    want = reference_host_transform(batch, norm, torch.Generator().manual_seed(3))
    for key in ("face", "bio"):
        assert got[key].dtype == torch.float32 and got[key].shape == want[key].shape
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
        assert torch.equal(batch[key], original[key])  # the input batch is left alone
    again = transform(batch, torch.Generator().manual_seed(3))
    other = transform(batch, torch.Generator().manual_seed(4))
    plain = transform(batch)  # no generator: validation / test, no augmentation
    for key in ("face", "bio"):
        assert torch.equal(got[key], again[key]) and not torch.equal(got[key], other[key])
        assert not torch.allclose(got[key], plain[key])


def test_horizontal_flip_and_time_shift():
    face = torch.randint(0, 256, (2, 3, 4, 5, 3), dtype=torch.uint8)  # (B, F, H, W, 3) as cached
    bio = torch.randn(6, 2, 50, generator=torch.Generator().manual_seed(0))
    batch = {"face": face, "bio": bio}
    cpu = torch.device("cpu")
    still = dict(jitter=0.0, noise_std=0.0, max_shift=0.0)
    plain = BatchTransform("facebio", cpu)(batch)
    flipped = BatchTransform("facebio", cpu, augmentation=Augmentation(flip_p=1.0, **still))(
        batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(flipped["face"][..., 0], plain["face"][..., 4])  # left column <- right column
    torch.testing.assert_close(flipped["face"][..., 1, :], plain["face"][..., 1, :].flip(-1))  # rows mirrored
    assert torch.equal(flipped["bio"], bio)
    kept = BatchTransform("facebio", cpu, augmentation=Augmentation(flip_p=0.0, **still))(
        batch, torch.Generator().manual_seed(0))
    torch.testing.assert_close(kept["face"], plain["face"])
    shifted = BatchTransform("bio", cpu, augmentation=Augmentation(noise_std=0.0, max_shift=0.2))(
        {"bio": bio}, torch.Generator().manual_seed(1))
    shifts = []
    for x, y in zip(bio, shifted["bio"], strict=True):  # each window is rolled in time by at most 10 samples
        shifts.append(next(s for s in range(-10, 11) if torch.equal(torch.roll(x, s, dims=-1), y)))
    assert any(shifts) and "face" not in shifted
