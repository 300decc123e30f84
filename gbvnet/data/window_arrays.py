"""The windows of a cache as numpy arrays: zero-copy views over its memory-mapped subject files, gathered by row.

:class:`WindowArrays` needs numpy and pyarrow only, so a process that reads windows without training (the
baselines' :class:`~gbvnet.evaluation.baselines.FoldScorer`) starts without importing torch;
:class:`~gbvnet.data.window_dataset.WindowDataset` is the same reader as a torch ``Dataset`` of tensor batches.

Example:
    >>> windows = WindowArrays(open_cache("data/cache/mahnob-synthetic"), modality="bio")  # doctest: +SKIP
    >>> windows.bio_array(np.arange(32)).shape  # (32, C, T) float32, raw as cached  # doctest: +SKIP
    (32, 40, 384)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from gbvnet.data.cache import Cache


class WindowArrays:
    """The windows of a cache as numpy views over its subject files.

    Args:
        cache: an open :class:`~gbvnet.data.cache.Cache`.
        target: which rating's binary label ``labels`` holds (``valence`` | ``arousal``).
        modality: which inputs it serves (``face`` | ``bio`` | ``facebio``); face modalities need face frames.

    Holds per row (the cache's row order): ``labels``, ``subjects``, ``trials`` ``(N,)``; per subject file the
    views ``bio`` ``(n, channels, samples)`` float32 and ``face`` ``(n, frames, face_size, face_size, 3)`` uint8
    (zeros for a subject without videos). ``bio_array(rows)`` gathers raw bio windows;
    :class:`~gbvnet.data.window_dataset.WindowDataset` adds torch batches.
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
