"""Batches of cache rows on the training device, the next ones prepared while the device works.

:class:`BatchLoader` cuts ``rows`` into consecutive batches (in order; the last one may be shorter; the rows
within a batch in ascending order, so each subject file is read in one run), reads each
with :meth:`~gbvnet.data.window_dataset.WindowDataset.batch` and moves it to the device. With ``prefetch > 0`` a
background thread does the reading (and, on CUDA, gathers straight into page-locked memory and copies on its
own CUDA stream, without blocking), up to ``prefetch`` batches ahead, so host reads and copies overlap the
model's work. The batches are exactly those of the synchronous loader (``prefetch=0``), in the same order:
which rows a worker sees (its shard, the epoch's shuffle) is decided before the loader, not by it.

Example:
    >>> import numpy as np, torch
    >>> class Toy:  # anything with ``batch(rows, pin=False)``
    ...     def batch(self, rows, pin=False):
    ...         return {"row": torch.as_tensor(rows)}
    >>> [b["row"].tolist() for b in BatchLoader(Toy(), np.array([3, 1, 0, 4, 2]), 2, torch.device("cpu"))]
    [[1, 3], [0, 4], [2]]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from gbvnet.data.prefetch import read_ahead


class BatchLoader:
    """An iterable of ``ceil(len(rows) / batch_size)`` batches of ``ds`` (a window dataset) on ``device``
    (see the module docstring); ``prefetch`` batches are prepared ahead in a background thread (0: none).

    Args:
        ds: anything with ``batch(rows, pin=False)`` returning a dict of tensors.
        rows: the rows to read, in batch order.
        batch_size: rows per batch (the last batch may be shorter).
        device: where the batches go.
        prefetch: how many batches a background thread prepares ahead.
    """

    def __init__(self, ds, rows: np.ndarray, batch_size: int, device: torch.device, prefetch: int = 2):
        if batch_size < 1 or prefetch < 0:
            raise ValueError(f"batch_size must be >= 1 and prefetch >= 0, got {batch_size} and {prefetch}")
        self.ds, self.rows, self.batch_size = ds, np.asarray(rows), batch_size
        self.device, self.prefetch = torch.device(device), prefetch

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def _chunks(self) -> Iterator[np.ndarray]:
        """Consecutive slices of ``rows``, each sorted: a batch is a set of rows, and in cache order each
        subject file's rows are one run, gathered straight into the output (no temporary copy)."""
        for start in range(0, len(self.rows), self.batch_size):
            yield np.sort(self.rows[start:start + self.batch_size])

    def _load(self, rows: np.ndarray, stream) -> tuple[dict[str, torch.Tensor], object]:
        """One batch on the device, and the CUDA event its copy completes with (``None`` off CUDA)."""
        if self.device.type != "cuda":
            return {k: v.to(self.device) for k, v in self.ds.batch(rows).items()}, None
        host = self.ds.batch(rows, pin=True)
        with torch.cuda.stream(stream):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
            event = torch.cuda.Event()
            event.record(stream)
        return batch, event

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if self.prefetch == 0:
            for rows in self._chunks():
                yield self._ready(*self._load(rows, stream))
            return
        loads = (self._load(rows, stream) for rows in self._chunks())  # run by the prefetching thread
        for loaded in read_ahead(loads, self.prefetch, name="gbvnet-batch-loader"):
            yield self._ready(*loaded)

    @staticmethod
    def _ready(batch: dict[str, torch.Tensor], event) -> dict[str, torch.Tensor]:
        """Make the consumer's CUDA stream wait for the copy, and tell the allocator who uses the tensors."""
        if event is not None:
            current = torch.cuda.current_stream()
            current.wait_event(event)
            for tensor in batch.values():
                tensor.record_stream(current)
        return batch
