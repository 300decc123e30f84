"""Reading a window cache from object storage: the index transfers only the small columns, and the subject files
are downloaded once per machine, then shared by every process there (search driver, trials, Ray Train workers).

The store is a local folder under an fsspec protocol pyarrow does not know (``counting://``, from
``bench/object_store.py``), so the cache is read through the same path as ``s3://`` and the bytes are counted.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bench.object_store import CountingFileSystem
from gbvnet.data.cache import LOCAL_COPY_ENV, MANIFEST, open_cache
from gbvnet.data.window_dataset import WindowDataset


@pytest.fixture
def remote_cache(small_mahnob_cache, tmp_path, monkeypatch):
    """A copy of ``small_mahnob_cache`` as a ``counting://`` URI; this test's own folder for local copies."""
    shutil.copytree(small_mahnob_cache, tmp_path / "store")
    monkeypatch.setenv(LOCAL_COPY_ENV, str(tmp_path / "node"))
    CountingFileSystem.bytes_read = 0
    return f"counting://{tmp_path / 'store'}"


def subject_bytes(uri: str) -> int:
    return sum(e.bytes for e in open_cache(uri).manifest.subjects.values())


def test_remote_index_reads_only_the_small_columns(remote_cache, small_mahnob_cache):
    total = subject_bytes(remote_cache)
    CountingFileSystem.bytes_read = 0
    index = open_cache(remote_cache).index()
    assert CountingFileSystem.bytes_read < 0.05 * total, (CountingFileSystem.bytes_read, total)
    local = open_cache(str(small_mahnob_cache)).index()
    for name in ("subject", "trial", "window", "t_start", "label_valence", "label_arousal", "has_face_rows"):
        np.testing.assert_array_equal(getattr(index, name), getattr(local, name), err_msg=name)


def test_remote_cache_is_downloaded_once_per_machine(remote_cache, small_mahnob_cache, tmp_path):
    total = subject_bytes(remote_cache)
    manifest_bytes = (tmp_path / "store" / MANIFEST).stat().st_size
    rows = np.arange(len(open_cache(str(small_mahnob_cache)).index().subject))
    expected = WindowDataset(open_cache(str(small_mahnob_cache))).batch(rows)

    CountingFileSystem.bytes_read = 0
    first = WindowDataset(open_cache(remote_cache)).batch(rows)  # the first process on this machine downloads
    assert total <= CountingFileSystem.bytes_read < total + 2 * manifest_bytes + 2**16
    CountingFileSystem.bytes_read = 0
    second = WindowDataset(open_cache(remote_cache)).batch(rows)  # another process: the manifest, nothing else
    assert CountingFileSystem.bytes_read == manifest_bytes
    for batch in (first, second):
        for key in ("bio", "face", "label"):
            assert np.array_equal(batch[key].numpy(), expected[key].numpy()), key


def test_damaged_local_copy_is_downloaded_again(remote_cache, tmp_path):
    cache = open_cache(remote_cache)
    copy = cache.local_path(cache.subjects[0])
    size = len(open(copy, "rb").read())
    with open(copy, "r+b") as f:
        f.truncate(size // 2)  # e.g. a disk that filled up
    assert open_cache(remote_cache).local_path(cache.subjects[0]) == copy
    assert len(open(copy, "rb").read()) == size
    assert [p.name for p in (tmp_path / "node").rglob("*.tmp")] == []
