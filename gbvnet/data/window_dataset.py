"""A torch ``Dataset`` over the window cache, with vectorised batch reads and train-only normalisation.

Reading is :class:`~gbvnet.data.window_arrays.WindowArrays` (numpy only): at construction each subject file's
``bio`` / ``face`` buffers become numpy views shaped ``(n, C, T)`` and ``(n, F, H, W, 3)`` (zero-copy over the
memory-mapped Arrow file); ``batch(rows)`` gathers many rows with one fancy-indexing call per subject file, so
reading needs no per-item Python parsing. Batches hold the cache's values as they are: faces as ``uint8`` (a
quarter of the bytes of float32 on their way to the device), bio as raw float32. Everything numeric after that
(float conversion, ImageNet normalisation, bio standardisation with a :class:`Normalizer` fitted on training
rows only by :func:`fit_normalizer`, augmentation) happens on the training device, in
:class:`gbvnet.data.transform.BatchTransform`.

Example:
    >>> ds = WindowDataset(open_cache("data/cache/mahnob-synthetic"), modality="bio")  # doctest: +SKIP
    >>> batch = ds.batch(np.arange(32))  # {"bio": (32, C, T) float32, "label": (32,) int64, ...}  # doctest: +SKIP
    >>> batch["face"].dtype  # doctest: +SKIP
    torch.uint8
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gbvnet.data.cache import Cache
from gbvnet.data.window_arrays import WindowArrays


@dataclass
class Normalizer:
    """Per-channel mean and standard deviation, and the rows they were fitted on (for the leakage audit)."""

    mean: np.ndarray
    std: np.ndarray
    fitted_rows: np.ndarray


class WindowDataset(WindowArrays, torch.utils.data.Dataset):
    """:class:`~gbvnet.data.window_arrays.WindowArrays` as a torch ``Dataset`` (same arguments): ``batch(rows)``
    returns tensors of the views' shapes for ``rows``, with the inputs of ``modality``."""

    def batch(self, rows: np.ndarray, pin: bool = False) -> dict[str, torch.Tensor]:
        """The cached values of ``rows`` (global row numbers) as tensors, plus ``label`` and ``row``.

        ``bio`` is ``(n, C, T)`` float32 as cached (not standardised), ``face`` is ``(n, frames, H, W, 3)``
        uint8 as cached; :class:`gbvnet.data.transform.BatchTransform` makes model inputs of them. ``label``
        and ``row`` are int64. ``pin``: gather straight into page-locked memory (for asynchronous copies to a
        GPU), with no extra copy.
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = {"label": torch.from_numpy(self.labels[rows]), "row": torch.from_numpy(rows)}
        for key in {"face": ("face",), "bio": ("bio",), "facebio": ("bio", "face")}[self.modality]:
            arrays = self._bio if key == "bio" else self._face
            dtype = torch.from_numpy(np.empty(0, arrays[0].dtype)).dtype
            out[key] = torch.empty((len(rows),) + arrays[0].shape[1:], dtype=dtype, pin_memory=pin)
            self._gather(arrays, rows, out=out[key].numpy())
        if pin:
            out = {k: v if v.is_pinned() else v.pin_memory() for k, v in out.items()}
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.batch(np.array([i])).items()}

    def __getitems__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Batched fetch used by ``DataLoader`` (torch >= 2.2) instead of one ``__getitem__`` per row."""
        return self.batch(np.asarray(rows))


def fit_normalizer(cache: Cache, rows: np.ndarray, chunk: int = 512) -> Normalizer:
    """Per-channel mean / std (population) of the bio windows in ``rows`` only (pass the *training* rows).

    Chunked, with per-chunk mean and sum of squared deviations merged exactly (Chan et al.), in float64, so it
    stays accurate for signals with a large offset (skin resistance in ohms) or in volts (EEG ~1e-5).
    A constant channel gets std 1 (it is then only centred).
    """
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if rows.size == 0:
        raise ValueError("cannot fit a normaliser on zero rows")
    ds = WindowArrays(cache, modality="bio")
    count, mean, m2 = 0, np.zeros(ds.channels), np.zeros(ds.channels)
    for start in range(0, len(rows), chunk):
        x = ds.bio_array(rows[start:start + chunk])
        n = x.shape[0] * x.shape[2]
        chunk_mean = x.sum(axis=(0, 2), dtype=np.float64) / n
        chunk_m2 = np.square(x - chunk_mean[None, :, None]).sum(axis=(0, 2))
        delta = chunk_mean - mean
        total = count + n
        mean = mean + delta * n / total
        m2 = m2 + chunk_m2 + delta**2 * count * n / total
        count = total
    std = np.sqrt(m2 / count)
    std = np.where(std > 1e-6 * np.abs(mean) + np.finfo(np.float32).tiny, std, 1.0)  # float32 rounding: constant
    return Normalizer(mean.astype(np.float32), std.astype(np.float32), rows)
