"""Prepare a dataset download into the window cache (the command, ``python -m gbvnet.prepare``:
:mod:`gbvnet.prepare.cli`).

Per subject: read its trials (the dataset's reader), filter / resample with mne, cut windows inside the
stimulus, sample ``--frames`` frames per window from the time-aligned face video, crop the face (Haar cascade,
see :mod:`gbvnet.data.video`), binarise labels (``rating > --threshold``), and write one Arrow file (see
:mod:`gbvnet.data.cache`). A re-run redoes only subjects whose source files (the set of files, their sizes and
mtimes) or preparation config changed, or whose file is not the size the manifest records (truncated); an
unchanged cache is not touched at all.

A cache is an asset (a face cache of the real DEAP takes hours to prepare): it is never replaced by one of other
options. Preparing an existing cache with another dataset, root or preparation option stops with a one-line
error naming both option sets (:class:`CacheConflict`), before anything is touched; ``--rebuild`` replaces it.
``--no-face`` means "faces not needed": a cache with faces and the same signal options is kept as it is, faces
and all (a bio model needs nothing a face cache lacks), so a bio-only command never rebuilds it bio-only.

Bad input: ``--on-error fail`` (default) stops at the first bad input with a one-line error naming the file and
the problem, leaving the previous cache byte-for-byte intact (files this run wrote are removed; the manifest is
only replaced at the end). ``--on-error skip`` warns, skips the smallest broken unit and lists each skip in the
report and in the manifest's ``skipped`` as a record naming its unit (``subject N trial T``, ``subject N``,
``face videos of subject N``, or a ``file`` that belongs to no subject; see
:func:`gbvnet.data.records.skip_record`). A MAHNOB subject without any rated session is skipped in either mode
(not an error). Video/signal duration mismatches, missing DEAP videos and face-detection fallbacks (per video,
``face_fallback_videos`` where more than 20 % of the sampled frames had no face) are reported, not errors.
``--no-face`` on a new or bio-only cache never opens a video or the DEAP ratings CSV.

``--processes N`` prepares N subjects at a time in worker processes (the platform's default start method); with
fewer subjects to redo than processes, each subject crops its videos in ``N // subjects`` threads.
Ctrl-C (once or more) and SIGTERM stop the workers and remove every file this run wrote (exit code 130).

Each dataset's reader and preparation defaults come from the registry, :mod:`gbvnet.data.registry` (DEAP's
``data_preprocessed_python`` is already band-passed and at 128 Hz, so it is not filtered again; MAHNOB-HCI raw
BDFs are low-passed at 45 Hz and resampled from 256 to 128 Hz), and so do the readers' own options, each a flag
here (AMIGOS: ``--videos short|long|all``, ``--face-names``). The window cache and its manifest
(:class:`gbvnet.data.cache.Manifest`) are :mod:`gbvnet.data.cache`'s.

Code: :func:`prepare_subject` makes one subject's file (read and cut its trials, crop the faces, build the
table, write it); :func:`prepare_dataset` plans (what to redo), runs (the subjects to redo, in a pool) and
commits (the manifest, then the report).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from tqdm import tqdm

from gbvnet.config import PrepareConfig, to_dict
from gbvnet.data import cache as cache_mod
from gbvnet.data import storage
from gbvnet.data.cache import Manifest, SubjectEntry
from gbvnet.data.records import (
    DataError,
    ReadReport,
    TrialRecord,
    check_on_error,
    describe,
    skip_record,
)
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


class CacheConflict(DataError):
    """A cache prepared with other options than a preparation asks for: it is kept, the preparation refused."""


class _WorkerDataError(DataError):
    """A :class:`DataError` raised in a worker process, in a form that pickles (``DataError`` does not)."""

    def __reduce__(self):
        return type(self), (self.path, self.problem)


def _subject_job(*args) -> SubjectEntry:
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


# ------------------------------------------------------------------------------------------------ one subject
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


def _unchanged(subject: int, entry: SubjectEntry | None, fs, base: str, files: list[Path], on_error: str) -> bool:
    """Whether ``entry`` (from the old manifest) still stands: its file has the size the manifest records (a
    truncated or missing one is warned about and redone), its sources and the subject's current source files are
    the same set with the same sizes and mtimes, and (under ``on_error="fail"``) it skipped nothing."""
    if entry is None:
        return False
    path = storage.join(base, entry.file)
    problem = cache_mod.file_problem(fs, path, entry)
    if problem:
        warnings.warn(f"{path}: subject {subject}'s file {problem}: preparing it again", stacklevel=4)
        return False
    if on_error == "fail" and entry.skipped:
        return False
    recorded = [s["path"] for s in entry.sources]
    current = sorted(set(recorded) | {str(p) for p in files})
    try:
        return entry.sources == describe_sources([Path(p) for p in current])
    except OSError:
        return False


# --------------------------------------------------------------------------------- worker processes, cleanup
class _Lazy:
    """A future for the one-process path: the work runs when ``result()`` is first called."""

    def __init__(self, fn, args):
        self._fn, self._args = fn, args

    def result(self):
        return self._fn(*self._args)


class _Inline:
    """The executor interface, running each job in this process when its result is asked for."""

    def submit(self, fn, *args) -> _Lazy:
        return _Lazy(fn, args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _pool(workers: int, subjects: int) -> ProcessPoolExecutor | _Inline:
    """Worker processes for ``subjects`` subjects to prepare, or this process where one worker is asked for or
    one subject is to be done.

    The platform's default start method (fork on Linux before Python 3.14): workers start at once, without
    re-importing the caller's __main__ (torch, for a training script); they run numpy/pyarrow/OpenCV only.
    """
    if workers > 1 and subjects > 1:
        return ProcessPoolExecutor(min(workers, subjects), initializer=_worker_signals)
    return _Inline()


def _worker_signals() -> None:
    """Worker start-up: Ctrl-C (sent to the whole terminal process group) is the main process's to handle (it
    stops the workers and removes what they wrote); SIGTERM ends a worker quietly (the main process's handler,
    inherited by fork, is not the worker's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(pool) -> None:
    """Cancel what has not started and stop the worker processes now (a subject with faces takes minutes)."""
    if isinstance(pool, ProcessPoolExecutor):
        for process in list((pool._processes or {}).values()):  # Python < 3.14 has no public terminate_workers()
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _remove_run_files(fs, base: str, token: str) -> None:
    """Delete every file this run wrote (its token is in their names), temporary ones included."""
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if f"-{token}." in info.base_name:
            storage.delete_quietly(fs, info.path)


def _signals_ignored():
    """Ignore SIGINT / SIGTERM while cleaning up (a second Ctrl-C must not cut the cleanup short; masking them
    in this thread would not do: the kernel hands them to another thread, Python raises them here anyway);
    returns the callable that restores the handlers. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, handler) for sig, handler in held.items()]


def _open_cache_folder(fs, base: str, cache: str, token: str) -> bool:
    """Create the cache folder if needed and check that files can be written there; returns whether it was
    created. Problems are one-line :class:`DataError`\\ s naming the cache."""
    try:
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.File:
            raise DataError(cache, "--cache is a file; give a folder (or a URI) for the cache")
        created = info.type == pafs.FileType.NotFound
        fs.create_dir(base, recursive=True)
        probe = storage.join(base, f".write-test-{token}")
        storage.write_bytes(fs, probe, b"")
        fs.delete_file(probe)
    except OSError as exc:
        raise DataError(cache, f"cannot write the cache folder ({exc}); check the path and its permissions") from None
    return created


def _nothing_prepared(root: str, skipped: list[dict]) -> DataError:
    if not skipped:
        return DataError(root, "no subject could be prepared")
    return DataError(root, f"no subject could be prepared: {len(skipped)} unit(s) skipped, the first: "
                           f"{describe(skipped[0])}")


# ------------------------------------------------------------------------------------------------ the options
FACE_OPTIONS = ("frames", "face_size")  # the PrepareConfig fields that only face frames depend on


def _options(dataset: str, root: str, cfg: PrepareConfig, face: bool) -> dict:
    """What makes a cache what it is: its dataset, root, preparation config and whether it has faces (the face
    frames' options only where it has them)."""
    options = {"dataset": dataset, "root": root, "face": face,
               **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}}
    return options if face else {k: v for k, v in options.items() if k not in FACE_OPTIONS}


def _keep_options(old: Manifest, cache: str, dataset: str, root: str, cfg: PrepareConfig,
                  face: bool) -> tuple[PrepareConfig, bool]:
    """The options to bring the existing cache ``old`` up to date with: those asked for, where they are the
    cache's. A preparation without faces (faces not needed) takes the cache's face options, so a face cache is
    kept with its faces. Any other difference is a :class:`CacheConflict` naming both option sets."""
    if not face:
        cfg, face = dataclasses.replace(cfg, frames=old.config.frames, face_size=old.config.face_size), old.face
    held, asked = _options(old.dataset, old.root, old.config, old.face), _options(dataset, root, cfg, face)
    differ = [k for k in {**held, **asked} if held.get(k) != asked.get(k)]
    if differ:
        def shown(options: dict) -> str:
            return ", ".join(f"{k}={options[k]}" for k in differ if k in options)

        raise CacheConflict(cache, f"prepared with {shown(held)}; this command asks {shown(asked)}: the cache is "
                                   "kept; use it as prepared (--cache without --root), prepare into another "
                                   "--cache, or add --rebuild to replace it")
    return cfg, face


# ------------------------------------------------------------------------------------------------ the dataset
@dataclass
class _Plan:
    """What a preparation run (re)does, and where it writes."""

    dataset: str
    root: str
    cache: str
    cfg: PrepareConfig
    face: bool
    on_error: str
    files: dict[int, list[Path]]  # every subject's source files, as its reader lists them
    wanted: list[int]  # the subjects the cache is to hold
    unchanged: dict[int, SubjectEntry]  # the old manifest's entries that still stand
    todo: list[int]  # the subjects to (re)do
    skipped: list[dict]  # what checking the root skipped
    old: Manifest | None
    config_hash: str
    fs: pafs.FileSystem
    base: str
    token: str  # in the name of every file this run writes
    created: bool  # whether this run created the cache folder


def prepare_dataset(dataset: str, root: str | Path, cache: str, cfg: PrepareConfig | None = None, *,
                    on_error: str = "fail", face: bool = True, subjects: list[int] | None = None,
                    workers: int = 1, progress: bool = True, rebuild: bool = False) -> dict:
    """Bring the cache at ``cache`` up to date with ``root``; returns the report.

    The cache then holds exactly ``subjects`` (default: every subject under ``root``) minus those skipped.
    An existing cache of other options (dataset, root, ``cfg``; faces where ``face``) is refused with a
    :class:`CacheConflict` before anything is touched, unless ``rebuild`` (every subject then prepared again with
    these options). ``face=False`` asks for no faces: a cache that has them, with the same other options, is
    brought up to date with its own face options (:func:`_keep_options`).

    The manifest is the commit point: it is replaced (atomically) only once every subject to redo has been
    written, so an error or an interruption (Ctrl-C, twice too; SIGTERM where the caller turns it into
    ``KeyboardInterrupt`` as the CLI does) leaves the previous cache as it was: every file this run wrote is
    removed. The manifest's ``skipped`` lists what ``on_error="skip"`` left out and why (one record per smallest
    unit, see :func:`gbvnet.data.records.skip_record`); the report adds what was redone, the warnings and the
    face-detection fallbacks. ``face=False`` on a new or bio-only cache never opens a video or the DEAP ratings
    CSV.

    Stages: :func:`_plan` (what to redo), :func:`_run` (the subjects to redo, in worker processes),
    :func:`_commit` (the manifest), then the files the manifest no longer lists are deleted and :func:`_report`.
    """
    check_on_error(on_error)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg = (cfg or get_dataset(dataset).prepare_config()).validate()
    plan = _plan(dataset, str(Path(root).expanduser().absolute()), cache, cfg, on_error, face, subjects, rebuild)
    started = time.perf_counter()
    pool = _pool(workers, len(plan.todo))
    video_threads = max(1, workers // max(1, len(plan.todo)))  # fewer subjects than workers: videos in parallel
    try:
        redone, skipped = _run(plan, pool, video_threads, progress)
        manifest = _commit(plan, {**plan.unchanged, **redone}, skipped)
    except BaseException:
        _undo(plan, pool)
        raise
    pool.shutdown(wait=True)
    live = {e.file for e in manifest.subjects.values()}
    for info in plan.fs.get_file_info(pafs.FileSelector(plan.base, allow_not_found=True)):
        if info.base_name.startswith("subject_") and info.base_name not in live:
            storage.delete_quietly(plan.fs, info.path)  # replaced files, and leftovers of killed runs (SIGKILL)
    return _report(plan, manifest, time.perf_counter() - started)


def _plan(dataset: str, root: str, cache: str, cfg: PrepareConfig, on_error: str, face: bool,
          subjects: list[int] | None, rebuild: bool) -> _Plan:
    """Check the root and the subjects asked for (before the cache is touched), check that an existing cache has
    the options asked for (:func:`_keep_options`; ``rebuild`` replaces it), open the cache folder, and compare the
    old manifest with the sources: a subject is redone unless its entry still stands (:func:`_unchanged`, same
    config hash)."""
    reader = get_dataset(dataset).reader
    root_report = ReadReport()
    reader.check_root(root, on_error, root_report)
    files = reader.subject_files(root, face, **cfg.reader)
    wanted = sorted(subjects or files)
    unknown = set(wanted) - set(files)
    if unknown:
        raise DataError(root, f"subject(s) {sorted(unknown)} not found (found: {sorted(files)})")
    try:
        old = cache_mod.read_manifest(cache)
    except ValueError as exc:  # another schema version, or a damaged manifest: prepare everything again
        warnings.warn(f"{cache}: ignoring the old manifest ({exc})", stacklevel=3)
        old = None
    if old is not None and not rebuild:
        cfg, face = _keep_options(old, cache, dataset, root, cfg, face)
    token = secrets.token_hex(4)
    fs, base = storage.filesystem(cache)
    created = _open_cache_folder(fs, base, cache, token)
    chash = config_hash(dataset, cfg, face)
    old_subjects = old.subjects if old and old.config_hash == chash and not rebuild else {}
    unchanged = {s: old_subjects[s] for s in wanted
                 if _unchanged(s, old_subjects.get(s), fs, base, files[s], on_error)}
    return _Plan(dataset=dataset, root=root, cache=cache, cfg=cfg, face=face, on_error=on_error, files=files,
                 wanted=wanted, unchanged=unchanged, todo=[s for s in wanted if s not in unchanged],
                 skipped=list(root_report.skipped), old=old, config_hash=chash, fs=fs, base=base, token=token,
                 created=created)


def _run(plan: _Plan, pool: ProcessPoolExecutor | _Inline, video_threads: int,
         progress: bool) -> tuple[dict[int, SubjectEntry], list[dict]]:
    """Prepare the subjects to redo in ``pool``; returns their entries and the skip records of the subjects left
    out (``on_error="skip"``, or no rated trials). Their files are written, not yet live."""
    job = _subject_job if isinstance(pool, ProcessPoolExecutor) else prepare_subject
    futures = {s: pool.submit(job, plan.dataset, plan.root, s, plan.cfg, plan.face, plan.cache, plan.on_error,
                              plan.files[s], plan.token, video_threads) for s in plan.todo}
    entries: dict[int, SubjectEntry] = {}
    skipped: list[dict] = []
    for s in tqdm(plan.todo, desc=f"prepare {plan.dataset}", unit="subject", disable=not progress or not plan.todo,
                  file=sys.stderr):
        try:
            entries[s] = futures[s].result()
            for item in entries[s].skipped:
                warnings.warn(f"skipped {describe(item)}", stacklevel=3)
        except SubjectSkipped as exc:  # under "fail" only a subject without rated trials gets here
            warnings.warn(f"skipped subject {s}: {exc}", stacklevel=3)
            skipped += exc.items
        except DataError as exc:
            if plan.on_error == "fail":
                raise
            warnings.warn(f"skipped subject {s}: {exc}", stacklevel=3)
            skipped.append(skip_record(exc, "subject", s))
    return entries, skipped


def _commit(plan: _Plan, entries: dict[int, SubjectEntry], skipped: list[dict]) -> Manifest:
    """The manifest of ``entries`` (every subject the cache is to hold), written in place of the old one: the
    commit point. An unchanged cache is left untouched, manifest included."""
    skipped = plan.skipped + skipped
    if not entries:
        raise _nothing_prepared(plan.root, skipped)
    channel_sets = {tuple(e.channels) for e in entries.values()}
    if len(channel_sets) > 1:
        raise DataError(plan.root, f"subjects have different channel lists: {channel_sets}")
    cfg = plan.cfg
    manifest = Manifest(
        dataset=plan.dataset, root=plan.root, config=cfg, config_hash=plan.config_hash, face=plan.face,
        channels=list(channel_sets.pop()), rate=cfg.rate, window_samples=cfg.window_samples, frames=cfg.frames,
        face_size=cfg.face_size, subjects={s: entries[s] for s in sorted(entries)},
        skipped=skipped + [item for s in sorted(entries) for item in entries[s].skipped])
    if manifest != plan.old:
        cache_mod.write_manifest(plan.fs, plan.base, manifest)
    return manifest


def _undo(plan: _Plan, pool: ProcessPoolExecutor | _Inline) -> None:
    """After an error or an interruption: stop the workers and drop what this run wrote (the old manifest stays
    the truth), with Ctrl-C and SIGTERM ignored meanwhile."""
    release = _signals_ignored()
    try:
        _stop(pool)
        _remove_run_files(plan.fs, plan.base, plan.token)
        if plan.created and not plan.fs.get_file_info(pafs.FileSelector(plan.base, allow_not_found=True)):
            storage.delete_quietly_dir(plan.fs, plan.base)  # a failed first run leaves no empty cache folder behind
    finally:
        release()


def _report(plan: _Plan, manifest: Manifest, seconds: float) -> dict:
    """What the run did (see :func:`format_report`)."""
    entries = manifest.subjects
    redone = [entries[s] for s in plan.todo if s in entries]
    return {
        "subjects": len(entries), "redone": [s for s in plan.todo if s in entries], "unchanged": list(plan.unchanged),
        "windows": sum(e.rows for e in entries.values()), "windows_redone": sum(e.rows for e in redone),
        "raw_mb_redone": sum(e.raw_bytes for e in redone) / 1e6, "face_frames": sum(e.face_frames for e in redone),
        "face_fallbacks": sum(e.face_fallbacks for e in redone),
        "face_fallback_videos": [v for e in redone for v in e.face_fallback_videos], "skipped": manifest.skipped,
        "warnings": [w for e in redone for w in e.warnings], "seconds": seconds,
    }


def format_report(report: dict, max_warnings: int = 20) -> str:
    lines = [f"cache: {report['subjects']} subjects, {report['windows']} windows "
             f"(redone: {report['redone'] or 'none'}; unchanged: {report['unchanged'] or 'none'})",
             f"prepared {report['windows_redone']} windows from {report['raw_mb_redone']:.1f} MB of signals in "
             f"{report['seconds']:.1f} s"]
    if report["face_frames"]:
        lines.append(f"faces: {report['face_frames']} frames cropped, {report['face_fallbacks']} without a "
                     "detection (last box or centre crop used)")
        if report["face_fallback_videos"]:
            lines.append(f"faces: {len(report['face_fallback_videos'])} video(s) without a face in more than "
                         f"{FALLBACK_WARN:.0%} of their sampled frames (the manifest's face_fallback_videos)")
    lines += [f"SKIPPED {describe(item)}" for item in report["skipped"]]
    shown = report["warnings"][:max_warnings]
    lines += [f"warning: {w}" for w in shown]
    if len(report["warnings"]) > len(shown):
        lines.append(f"... and {len(report['warnings']) - len(shown)} more warnings (see the returned report)")
    return "\n".join(lines)
