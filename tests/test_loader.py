"""The prefetching batch loader."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from gbvnet.data.cache import open_cache
from gbvnet.data.loader import BatchLoader
from gbvnet.data.window_dataset import WindowDataset


@pytest.fixture(scope="module")
def cache(small_mahnob_cache):
    return open_cache(str(small_mahnob_cache))


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
