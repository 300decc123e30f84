"""WindowDataset (batched, zero-copy reads of the cache), the train-only normaliser, the device-side batch transform
(normalisation and augmentation) and the prefetching batch loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_DEAP

from gbvnet.data import deap, synthetic
from gbvnet.data.cache import open_cache
from gbvnet.data.dataset import WindowDataset, fit_normalizer
from gbvnet.data.loader import BatchLoader
from gbvnet.data.transform import IMAGENET_MEAN, IMAGENET_STD, Augmentation, BatchTransform

ROWS = np.array([5, 0, 7, 1, 2])  # unsorted, both subjects, a run of consecutive rows of subject 1


@pytest.fixture(scope="module")
def cache(small_mahnob_cache):
    return open_cache(str(small_mahnob_cache))


def per_row(cache, column: str, shape: tuple[int, ...]) -> np.ndarray:
    """The reference: one row at a time through pyarrow's scalar API (what the dataset must not need)."""
    rows = [np.asarray(table.column(column)[i].values.to_numpy()).reshape(shape)
            for table in cache.tables for i in range(table.num_rows)]
    return np.stack(rows)


@pytest.mark.parametrize("modality", ["face", "bio", "facebio"])
def test_batch_shapes_and_dtypes(cache, modality):
    ds = WindowDataset(cache, target="arousal", modality=modality)
    index = cache.index()
    assert len(ds) == 8
    batch = ds.batch(ROWS)
    keys = {"face": {"face"}, "bio": {"bio"}, "facebio": {"face", "bio"}}[modality] | {"label", "row"}
    assert set(batch) == keys
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == index.label_arousal[ROWS].tolist()
    assert batch["row"].tolist() == ROWS.tolist()
    if "bio" in keys:
        assert batch["bio"].shape == (5, 38, 384) and batch["bio"].dtype == torch.float32
    if "face" in keys:
        assert batch["face"].shape == (5, 2, 32, 32, 3) and batch["face"].dtype == torch.uint8  # as cached
    item = ds[3]
    assert {k: tuple(v.shape) for k, v in item.items()} == {k: tuple(v.shape[1:]) for k, v in batch.items()}


def test_batches_are_gathered_from_memory_mapped_buffers(cache, monkeypatch):
    ds = WindowDataset(cache, modality="facebio")
    for table, bio, face in zip(cache.tables, ds._bio, ds._face, strict=True):  # views, not copies
        assert bio.ctypes.data == table.column("bio").chunk(0).values.buffers()[1].address
        assert face.ctypes.data == table.column("face").chunk(0).values.buffers()[1].address
        assert bio.shape == (4, 38, 384) and face.shape == (4, 2, 32, 32, 3)
    expected_bio = per_row(cache, "bio", (38, 384))
    expected_face = per_row(cache, "face", (2, 32, 32, 3))
    np.testing.assert_array_equal(ds.bio_array(ROWS), expected_bio[ROWS])
    np.testing.assert_array_equal(ds._gather(ds._face, ROWS), expected_face[ROWS])
    np.testing.assert_array_equal(ds.bio_array(np.arange(8)), expected_bio)
    with pytest.raises(IndexError):
        ds.bio_array(np.array([8]))

    def one_by_one(self, i):
        raise AssertionError("per-item read")

    monkeypatch.setattr(WindowDataset, "__getitem__", one_by_one)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=lambda batch: batch)  # uses __getitems__
    batches = list(loader)
    assert [len(b["row"]) for b in batches] == [3, 3, 2]
    np.testing.assert_array_equal(torch.cat([b["bio"] for b in batches]).numpy(), expected_bio)


def test_face_is_scaled_and_imagenet_normalised(cache):
    ds = WindowDataset(cache, modality="face")
    raw = torch.from_numpy(per_row(cache, "face", (2, 32, 32, 3))[ROWS]).permute(0, 1, 4, 2, 3).double() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    face = BatchTransform("face", torch.device("cpu"))(ds.batch(ROWS))["face"]
    assert face.shape == (5, 2, 3, 32, 32) and face.dtype == torch.float32
    torch.testing.assert_close(face.double(), (raw - mean) / std, rtol=1e-5, atol=1e-5)


def test_normaliser_uses_the_given_rows_only(cache):
    rows = np.array([6, 1, 2, 7, 4])
    norm = fit_normalizer(cache, rows, chunk=2)  # chunks of 2 rows: the merge of partial statistics is exercised
    x = WindowDataset(cache, modality="bio").bio_array(np.sort(rows)).astype(np.float64)
    mean, std = x.mean(axis=(0, 2)), x.std(axis=(0, 2))
    assert norm.mean.dtype == norm.std.dtype == np.float32 and norm.mean.shape == (38,)
    # EEG is in volts (~1e-5), skin resistance in ohms (~1e6): relative to the spread, plus float32 rounding
    assert (np.abs(norm.mean - mean) <= 1e-5 * std + 1e-7 * np.abs(mean)).all()
    np.testing.assert_allclose(norm.std, std, rtol=1e-5)
    assert norm.fitted_rows.tolist() == [1, 2, 4, 6, 7]
    whole = fit_normalizer(cache, np.arange(8))
    assert not np.allclose(whole.mean, norm.mean, rtol=1e-3, atol=0)
    np.testing.assert_allclose(fit_normalizer(cache, rows, chunk=512).std, norm.std, rtol=1e-6)
    ds = WindowDataset(cache, modality="bio")
    z = BatchTransform("bio", torch.device("cpu"), norm)(ds.batch(rows))["bio"].double().numpy()
    np.testing.assert_allclose(z, (x[[3, 0, 1, 4, 2]] - mean[:, None]) / std[:, None], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1, rtol=1e-4)
    with pytest.raises(ValueError, match="zero rows"):
        fit_normalizer(cache, np.array([], dtype=int))


def test_bio_only_cache_refuses_face_modalities(prepared_cache):
    c = open_cache(str(prepared_cache("deap", SMALL_DEAP, face=False, subjects=[1])))
    assert not c.index().has_face and WindowDataset(c, modality="bio").batch(np.arange(3))["bio"].shape == (3, 40, 384)
    for modality in ("face", "facebio"):
        with pytest.raises(ValueError, match=r"needs face frames, but no subject in"):
            WindowDataset(c, modality=modality)
    with pytest.raises(ValueError, match="modality must be"):
        WindowDataset(c, modality="audio")


def constant_temperature(root: Path) -> None:
    """Subject 1's temperature sensor (channel 39) never moves."""
    data, labels = deap.load_dat(deap.dat_path(root, 1))
    data = data.copy()
    data[:, 39] = 32.5
    synthetic.write_deap_dat(deap.dat_path(root, 1), {"labels": labels, "data": data})


def test_normaliser_leaves_a_constant_channel_unscaled(prepared_cache):
    c = open_cache(str(prepared_cache("deap", SMALL_DEAP, edit=constant_temperature, face=False, subjects=[1])))
    norm = fit_normalizer(c, np.arange(40), chunk=7)
    assert norm.mean[39] == np.float32(32.5) and norm.std[39] == 1.0
    assert np.isfinite(norm.std).all() and (norm.std[:39] != 1.0).all()
    z = BatchTransform("bio", torch.device("cpu"), norm)(WindowDataset(c, modality="bio").batch(np.arange(40)))["bio"]
    assert torch.equal(z[:, 39], torch.zeros_like(z[:, 39]))


# ------------------------------------------------------------------------------------------------ augmentation
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


# ------------------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize("prefetch", [1, 3])
def test_prefetching_loader_yields_the_synchronous_batches_in_order(cache, prefetch):
    ds = WindowDataset(cache, modality="facebio")
    rows = np.array([7, 2, 5, 0, 1, 6, 3])
    sync = list(BatchLoader(ds, rows, 3, torch.device("cpu"), prefetch=0))
    assert [b["row"].tolist() for b in sync] == [[2, 5, 7], [0, 1, 6], [3]]  # each batch in cache order
    for b, chunk in zip(sync, ([2, 5, 7], [0, 1, 6], [3]), strict=True):
        for key, value in ds.batch(np.array(chunk)).items():
            assert torch.equal(b[key], value)
    prefetched = list(BatchLoader(ds, rows, 3, torch.device("cpu"), prefetch=prefetch))
    assert len(prefetched) == len(sync) == len(BatchLoader(ds, rows, 3, torch.device("cpu")))
    for a, b in zip(prefetched, sync, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_raises_read_errors_and_stops_its_thread_when_left_early(cache):
    import threading

    class Failing:
        def batch(self, rows, pin=False):
            if rows[0] >= 4:
                raise OSError("disk gone")
            return {"row": torch.as_tensor(rows)}

    loader = BatchLoader(Failing(), np.arange(8), 2, torch.device("cpu"))
    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for b in loader:
            seen.append(b["row"].tolist())
    assert seen == [[0, 1], [2, 3]]
    for _ in BatchLoader(WindowDataset(cache, modality="bio"), np.arange(8), 1, torch.device("cpu"), prefetch=1):
        break  # the consumer leaves; the producer thread must not stay blocked
    assert not any(t.name == "gbvnet-batch-loader" for t in threading.enumerate())


def test_small_files_round_trip_through_uris(tmp_path):
    """Result JSON and best configs may live on object storage (any pyarrow/fsspec URI), written atomically."""
    from gbvnet.config import ConfigError, load_yaml
    from gbvnet.storage import read_text, write_text

    write_text("memory://gbvnet-test/runs/best.yaml", "train:\n  lr: 0.001\n")
    assert load_yaml("memory://gbvnet-test/runs/best.yaml") == {"train": {"lr": 0.001}}
    local = tmp_path / "new" / "folder" / "out.json"
    write_text(str(local), "{}")
    assert read_text(str(local)) == "{}" and [p.name for p in local.parent.iterdir()] == ["out.json"]
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config"):
        load_yaml(str(tmp_path / "missing.yaml"))
