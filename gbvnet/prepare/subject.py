"""One subject into one Arrow file of the window cache: :func:`prepare_subject` reads and cuts its trials, crops
the faces, builds the table and writes it (the file is not live until :mod:`gbvnet.prepare.plan` commits the
manifest); :func:`subject_job` is the same as a worker process runs it.

A subject left without windows is :class:`SubjectSkipped` (every trial skipped, or no rated trials at all).
:func:`config_hash` and :func:`describe_sources` are what the manifest records to tell whether a subject's file
still stands.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from gbvnet.config import PrepareConfig, to_dict
from gbvnet.data import cache as cache_mod
from gbvnet.data import storage
from gbvnet.data.cache import SubjectEntry
from gbvnet.data.records import DataError, ReadReport, TrialRecord, check_on_error, skip_record
from gbvnet.data.registry import get_dataset
from gbvnet.data.video import FALLBACK_WARN, face_crops, opencv_threads
from gbvnet.data.windows import TrialWindows, binarise, window_times, windows


class SubjectSkipped(DataError):
    """A subject that yields no windows: every trial was skipped (``items`` says why), or it has no rated trials
    at all (MAHNOB subjects with only implicit-tagging sessions; not an error, skipped in either mode)."""

    def __init__(self, path: str | Path, problem: str, items: list[dict]):
        super().__init__(path, problem)
        self.items = items

    def __reduce__(self):  # survives the trip back from a worker process
        return type(self), (self.path, self.problem, self.items)



class _WorkerDataError(DataError):
    """A :class:`DataError` raised in a worker process, in a form that pickles (``DataError`` does not)."""

    def __reduce__(self):
        return type(self), (self.path, self.problem)


def subject_job(*args) -> SubjectEntry:
    """:func:`prepare_subject` as a worker process runs it (errors made picklable)."""
    try:
        return prepare_subject(*args)
    except SubjectSkipped:
        raise
    except DataError as exc:
        raise _WorkerDataError(exc.path, exc.problem) from None


def config_hash(dataset: str, cfg: PrepareConfig, face: bool) -> str:
    payload = json.dumps({"dataset": dataset, "config": to_dict(cfg), "face": face,
                          "schema": cache_mod.SCHEMA_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def describe_sources(files: list[Path]) -> list[dict]:
    out = []
    for p in files:
        st = Path(p).stat()
        out.append({"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def subject_file_name(subject: int, token: str) -> str:
    """The Arrow file of ``subject`` written by the run ``token`` (every file a run writes carries its token)."""
    return f"subject_{subject:02d}-{token}.arrow"


BadTrial = Callable[[DataError, int], None]  # a broken trial: raised under on_error="fail", else recorded
Kept = list[tuple[TrialRecord, TrialWindows, np.ndarray | None]]  # trials with their windows and face crops


@dataclass
class _FaceStats:
    """What cropping a subject's faces found (the manifest entry's ``face_*`` fields)."""

    frames: int = 0
    fallbacks: int = 0
    poor_videos: list[dict] = field(default_factory=list)  # videos where most sampled frames had no detection


def prepare_subject(dataset: str, root: str, subject: int, cfg: PrepareConfig, face: bool, cache_uri: str,
                    on_error: str = "fail", files: list[Path] | None = None, token: str | None = None,
                    video_threads: int = 1) -> SubjectEntry:
    """Process one subject into a new Arrow file in the cache; returns its manifest entry (file not yet live).

    ``on_error="skip"`` skips broken trials (reader errors, stimulus shorter than a window, unreadable video)
    and lists them in the entry's ``skipped``; a subject left without trials raises :class:`SubjectSkipped`.
    ``files``: the subject's source files as the reader lists them (looked up when not given). ``token``: the
    run's token, part of the file name (default: a new one). ``video_threads``: face videos cropped at once.
    """
    started = time.perf_counter()
    check_on_error(on_error)
    reader = get_dataset(dataset).reader
    skipped: list[dict] = []

    def bad(exc: DataError, trial: int) -> None:
        if on_error == "fail":
            raise exc
        warnings.warn(f"skipping {exc}", stacklevel=3)
        skipped.append(skip_record(exc, "trial", subject, trial))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_report = ReadReport()
        records = reader.read_subject(root, subject, on_error, read_report, face=face, **cfg.reader)
        skipped += read_report.skipped
        channels, kept, faces = _cut_and_crop(records, root, cfg, face, video_threads, bad)
    if not kept:
        raise _no_trials(root, subject, skipped)
    table = _subject_table(kept, channels, cfg)
    fs, base = storage.filesystem(cache_uri)
    name = subject_file_name(subject, token or secrets.token_hex(4))
    written = cache_mod.write_table(fs, storage.join(base, name), table)
    if files is None:
        files = reader.subject_files(root, face, **cfg.reader).get(subject, [])
    sources = sorted({str(p) for r, _, _ in kept for p in r.source_files} | {str(p) for p in files})
    notes = [str(w.message) for w in caught if not str(w.message).startswith("skipping ")]  # in "skipped"
    return SubjectEntry(
        file=name, rows=table.num_rows, trials=len(kept), bytes=written,
        raw_bytes=int(sum(r.bio.nbytes for r, _, _ in kept)), channels=channels,
        face_rows=table.num_rows - table.column("face").null_count, face_frames=faces.frames,
        face_fallbacks=faces.fallbacks, face_fallback_videos=faces.poor_videos, skipped=skipped, warnings=notes,
        seconds=time.perf_counter() - started, sources=describe_sources([Path(p) for p in sources]))


CropJob = Callable[[TrialRecord, np.ndarray], Future | None]  # starts cropping a trial's faces at these times


def _cut_trials(records: list[TrialRecord], root: str, cfg: PrepareConfig, bad: BadTrial,
                crop: CropJob) -> tuple[list[str], list[tuple[TrialRecord, TrialWindows, Future | None]]]:
    """The subject's channels (its first trial's), and each trial's windows with its face job, started by ``crop``
    as soon as the window times are known, before the trial's signals are filtered and cut (and the next trials
    are read on); a trial with other channels, or a stimulus shorter than a window, is bad."""
    channels = records[0].channels if records else []
    cut = []
    for rec in records:
        future = None
        try:
            if rec.channels != channels:
                raise DataError(rec.source_files[0] if rec.source_files else root,
                                f"channels of trial {rec.trial} differ from the subject's first trial: "
                                f"{rec.channels}")
            future = crop(rec, window_times(rec, cfg)[1])
            cut.append((rec, windows(rec, cfg), future))
        except DataError as exc:
            if future is not None:
                future.cancel()
            bad(exc, rec.trial)
    return channels, cut


def _cut_and_crop(records: list[TrialRecord], root: str, cfg: PrepareConfig, face: bool, video_threads: int,
                  bad: BadTrial) -> tuple[list[str], Kept, _FaceStats]:
    """The subject's channels and the trials kept, each with its windows and their face crops (``(windows,
    frames * size * size * 3)``, or None without a video or with ``face=False``); a trial whose video cannot be
    read is bad.

    Videos are read in ``video_threads`` parallel threads (OpenCV decodes and detects without the GIL), each by
    one OpenCV thread, while the signals are cut.
    """
    n_face = cfg.frames * cfg.face_size * cfg.face_size * 3
    kept: Kept = []
    stats = _FaceStats()
    with opencv_threads(1):
        threads = ThreadPoolExecutor(video_threads)

        def crop(rec: TrialRecord, frame_times: np.ndarray) -> Future | None:
            if not face or rec.video is None:
                return None
            return threads.submit(face_crops, rec.video, (frame_times - rec.video_start).ravel(), cfg.face_size,
                                  (rec.stim_end - rec.video_start, rec.duration - rec.video_start))

        try:
            channels, cut = _cut_trials(records, root, cfg, bad, crop)
            for rec, w, future in cut:
                crops = None
                if future is not None:
                    try:
                        faces = future.result()
                    except DataError as exc:
                        bad(exc, rec.trial)
                        continue
                    crops = faces.crops.reshape(len(w.t_start), n_face)
                    stats.frames, stats.fallbacks = stats.frames + faces.frames, stats.fallbacks + faces.fallbacks
                    if faces.fallbacks > FALLBACK_WARN * faces.frames:
                        stats.poor_videos.append({"video": str(rec.video), "trial": rec.trial,
                                                  "frames": faces.frames, "fallbacks": faces.fallbacks})
                kept.append((rec, w, crops))
        finally:  # an error or Ctrl-C waits for the videos being read, not for the queued ones
            threads.shutdown(wait=True, cancel_futures=True)
    return channels, kept, stats


def _no_trials(root: str, subject: int, skipped: list[dict]) -> SubjectSkipped:
    """Why a subject kept no trial: all were skipped, or it has no rated trials (not an error)."""
    if skipped:
        return SubjectSkipped(skipped[0]["path"], f"subject {subject}: every trial skipped "
                                                  f"({skipped[0]['problem']})", skipped)
    item = skip_record(DataError(root, f"subject {subject} has no rated trials"), "subject", subject)
    return SubjectSkipped(root, item["problem"], [item])


def _subject_table(kept: Kept, channels: list[str], cfg: PrepareConfig) -> pa.Table:
    """The subject file: one row per window of the kept trials, in the columns of :func:`gbvnet.data.cache.schema`
    (``face`` null where a trial has no crops, of type null where none has)."""
    n_face = cfg.frames * cfg.face_size * cfg.face_size * 3
    counts = np.array([len(w.t_start) for _, w, _ in kept])
    n, ends = int(counts.sum()), np.cumsum(counts)
    bio = np.empty((n, len(channels), cfg.window_samples), np.float32)
    for (_, w, _), end, count in zip(kept, ends, counts, strict=True):
        bio[end - count:end] = w.bio  # the one copy: strided float64 view -> contiguous float32
    per_trial = {
        "subject": [r.subject for r, _, _ in kept], "trial": [r.trial for r, _, _ in kept],
        "stim_start": [r.stim_start for r, _, _ in kept], "stim_end": [r.stim_end for r, _, _ in kept],
        "valence": [r.valence for r, _, _ in kept], "arousal": [r.arousal for r, _, _ in kept],
        "label_valence": [binarise(r.valence, cfg.threshold) for r, _, _ in kept],
        "label_arousal": [binarise(r.arousal, cfg.threshold) for r, _, _ in kept],
    }
    has_face = any(c is not None for _, _, c in kept)
    types = cache_mod.schema(bio[0].size, n_face if has_face else 0)
    columns = {name: np.repeat(np.asarray(values), counts) for name, values in per_trial.items()}
    columns["window"] = np.arange(n) - np.repeat(ends - counts, counts)
    columns["t_start"] = np.concatenate([w.t_start for _, w, _ in kept])
    arrays = {name: _arrow(columns[name], types.field(name).type) for name in cache_mod.INDEX_COLUMNS}
    arrays["bio"] = pa.FixedSizeListArray.from_arrays(_arrow(bio.reshape(-1), pa.float32()), bio[0].size)
    if has_face:
        valid = np.repeat([c is not None for _, _, c in kept], counts)
        faces = np.concatenate([c if c is not None else np.zeros((k, n_face), np.uint8)
                                for (_, _, c), k in zip(kept, counts, strict=True)])
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        arrays["face"] = pa.Array.from_buffers(types.field("face").type, n, [validity],
                                               null_count=int(n - valid.sum()),
                                               children=[_arrow(faces.ravel(), pa.uint8())])
    else:
        arrays["face"] = pa.nulls(n, pa.null())
    return pa.table([arrays[f.name] for f in types], schema=types)


_NUMPY = {pa.from_numpy_dtype(np.dtype(t)): np.dtype(t) for t in ("int8", "int32", "uint8", "float32")}


def _arrow(values: np.ndarray, type: pa.DataType) -> pa.Array:
    """``values`` as an Arrow array of the primitive ``type``, wrapping their buffer (``pa.array`` on a numpy
    array imports pandas: half a second per process)."""
    data = np.ascontiguousarray(values, dtype=_NUMPY[type])
    return pa.Array.from_buffers(type, len(data), [None, pa.py_buffer(data)])

