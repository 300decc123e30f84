"""WindowDataset (batched, zero-copy reads of the cache) and the train-only normaliser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_DEAP

from gbvnet.data import deap, synthetic
from gbvnet.data.cache import open_cache
from gbvnet.data.transform import IMAGENET_MEAN, IMAGENET_STD, BatchTransform
from gbvnet.data.window_dataset import WindowDataset, fit_normalizer

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
