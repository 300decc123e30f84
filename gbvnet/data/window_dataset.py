"""A torch ``Dataset`` over the window cache, with vectorised batch reads and train-only normalisation.

At construction each subject file's ``bio`` / ``face`` buffers become numpy views shaped ``(n, C, T)`` and
``(n, F, H, W, 3)`` (zero-copy over the memory-mapped Arrow file); ``batch(rows)`` gathers many rows with one
fancy-indexing call per subject file, so reading needs no per-item Python parsing. Batches hold the cache's
values as they are: faces as ``uint8`` (a quarter of the bytes of float32 on their way to the device), bio as
raw float32. Everything numeric after that (float conversion, ImageNet normalisation, bio standardisation with
a :class:`Normalizer` fitted on training rows only by :func:`fit_normalizer`, augmentation) happens on the
training device, in :class:`gbvnet.data.transform.BatchTransform`.

Example:
    >>> ds = WindowDataset(open_cache("data/cache/mahnob-synthetic"), modality="bio")  # doctest: +SKIP
    >>> batch = ds.batch(np.arange(32))  # {"bio": (32, C, T) float32, "label": (32,) int64, ...}  # doctest: +SKIP
    >>> batch["face"].dtype  # doctest: +SKIP
    torch.uint8
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from gbvnet.data.cache import Cache


@dataclass
class Normalizer:
    """Per-channel mean and standard deviation, and the rows they were fitted on (for the leakage audit)."""

    mean: np.ndarray
    std: np.ndarray
    fitted_rows: np.ndarray


class WindowDataset(torch.utils.data.Dataset):
    """The windows of a cache as numpy views over its subject files, read in batches.

    Args:
        cache: an open :class:`~gbvnet.data.cache.Cache`.
        target: which rating's binary label ``labels`` holds (``valence`` | ``arousal``).
        modality: which inputs batches carry (``face`` | ``bio`` | ``facebio``); face modalities need face frames.

    Holds per row (the cache's row order): ``labels``, ``subjects``, ``trials`` ``(N,)``; per subject file the
    views ``bio`` ``(n, channels, samples)`` float32 and ``face`` ``(n, frames, face_size, face_size, 3)`` uint8
    (zeros for a subject without videos). ``batch(rows)`` returns tensors of those shapes for ``rows``.
    """

    def __init__(self, cache: Cache, target: str = "valence", modality: str = "facebio"):
        self.cache, self.modality = cache, modality
        m = cache.manifest
        self.channels, self.samples = len(m.channels), m.window_samples
        self.frames, self.face_size = m.frames, m.face_size
        self.offsets = np.cumsum([0] + [t.num_rows for t in cache.tables])
        self.labels = np.concatenate([t.column(f"label_{target}").to_numpy() for t in cache.tables]).astype(np.int64)
        self.subjects = np.concatenate([t.column("subject").to_numpy() for t in cache.tables])
        self.trials = np.concatenate([t.column("trial").to_numpy() for t in cache.tables])
        self._bio = [self._view(t, "bio", (self.channels, self.samples)) for t in cache.tables]
        self._face = [self._view(t, "face", (self.frames, self.face_size, self.face_size, 3)) for t in cache.tables]
        if modality not in ("face", "bio", "facebio"):
            raise ValueError(f"modality must be face, bio or facebio, got {modality!r}")
        if modality != "bio" and all(f is None for f in self._face):
            raise ValueError(f"modality {modality!r} needs face frames, but no subject in {cache.uri} has any "
                             "(prepared with --no-face, or no videos)")
        # A subject without videos (DEAP 23-32) reads as zeros, like a null row of a subject with videos: face
        # modalities never use such rows (gbvnet.folds.protocols.usable_rows restricts them to rows with faces).
        shape = (self.frames, self.face_size, self.face_size, 3)
        self._face = [np.broadcast_to(np.zeros(shape, np.uint8), (t.num_rows, *shape)) if f is None else f
                      for f, t in zip(self._face, cache.tables, strict=True)]

    @staticmethod
    def _view(table, column: str, shape: tuple[int, ...]) -> np.ndarray | None:
        col = table.column(column)
        if pa.types.is_null(col.type) or (col.length() and col.null_count == col.length()):
            return None
        chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        # ``values`` ignores the array's offset, so slice it; ``flatten()`` would drop the null rows' values.
        # Rows with a null face have undefined values; callers restrict face modalities to rows with faces.
        size = int(np.prod(shape))
        values = chunk.values.slice(chunk.offset * size, len(chunk) * size).to_numpy(zero_copy_only=False)
        return values.reshape((len(chunk),) + shape)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _gather(self, arrays: list[np.ndarray], rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``rows`` of the per-file arrays in one output array (``out``, or a new one): one ``take`` per file,
        straight into the output where that file's rows are consecutive in ``rows`` (the usual case), else a
        fancy-index copy."""
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows must lie in [0, {len(self)}), got {rows.min()}..{rows.max()}")
        files = np.searchsorted(self.offsets, rows, side="right") - 1
        if out is None:
            out = np.empty((len(rows),) + arrays[0].shape[1:], dtype=arrays[0].dtype)
        for f in np.unique(files):
            where = np.flatnonzero(files == f)
            local = rows[where] - self.offsets[f]
            if where[-1] - where[0] + 1 == len(where):
                np.take(arrays[f], local, axis=0, out=out[where[0]:where[-1] + 1], mode="clip")  # checked above
            else:
                out[where] = arrays[f][local]
        return out

    def bio_array(self, rows: np.ndarray) -> np.ndarray:
        """Raw (not normalised) bio windows of ``rows``, ``(n, C, T)`` float32."""
        return self._gather(self._bio, np.asarray(rows, dtype=np.int64))

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
    ds = WindowDataset(cache, modality="bio")
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
