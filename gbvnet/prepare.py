"""Prepare a dataset download into the window cache.

    python -m gbvnet.prepare --dataset deap --root ~/data/deap --cache data/cache/deap
    python -m gbvnet.prepare --dataset mahnob --root ~/data/mahnob-hci --cache s3://bucket/cache/mahnob --workers 4

Per subject: read its trials (the dataset's reader), filter / resample with mne, cut windows inside the
stimulus, sample ``--frames`` frames per window from the time-aligned face video, crop the face (Haar cascade,
see :mod:`gbvnet.data.video`), binarise labels (``rating > --threshold``), and write one Arrow file (see
:mod:`gbvnet.data.cache`). A re-run redoes only subjects whose source files (the set of files, their sizes and
mtimes) or preparation config changed; an unchanged cache is not touched at all.

Bad input: ``--on-error fail`` (default) stops at the first bad input with an error naming the file, leaving the
previous cache byte-for-byte intact (files this run wrote are removed; the manifest is only replaced at the
end). ``--on-error skip`` warns, skips the smallest broken unit (a trial or session: unreadable, stimulus shorter
than a window, video missing or unreadable; a whole subject when its file is) and lists each skip with its file
and problem in the report and in the manifest's ``skipped``. A MAHNOB subject without any rated session is
skipped in either mode (not an error). Video/signal duration mismatches, missing DEAP videos and face-detection
fallbacks are reported, not errors.

``--workers N`` prepares N subjects at a time in worker processes (the platform's default start method).

Dataset defaults: DEAP's ``data_preprocessed_python`` is already band-passed (4-45 Hz) and at 128 Hz, so it is
not filtered again; MAHNOB-HCI raw BDFs are low-passed at 45 Hz and resampled from 256 to 128 Hz.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from tqdm import tqdm

from gbvnet.config import PrepareConfig, to_dict
from gbvnet.data import cache as cache_mod
from gbvnet.data import deap, mahnob
from gbvnet.data.records import DataError, ReadReport, check_on_error
from gbvnet.data.video import FaceCropper, read_frames
from gbvnet.data.windows import binarise, windows

READERS = {"deap": deap, "mahnob": mahnob}


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


def _subject_job(*args) -> dict:
    """:func:`prepare_subject` as a worker process runs it (errors made picklable)."""
    try:
        return prepare_subject(*args)
    except SubjectSkipped:
        raise
    except DataError as exc:
        raise _WorkerDataError(exc.path, exc.problem) from None


def dataset_config(dataset: str, **overrides) -> PrepareConfig:
    """The preparation defaults of ``dataset`` (see the module docstring) with ``overrides``."""
    base = {"deap": {"h_freq": None}, "mahnob": {"h_freq": 45.0}}[dataset]
    return PrepareConfig(**{**base, **overrides}).validate()


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


def _is_video_note(message: str) -> bool:
    """Reader warnings about face videos (irrelevant to a bio-only cache)."""
    return "video" in message


def prepare_subject(dataset: str, root: str, subject: int, cfg: PrepareConfig, face: bool, cache_uri: str,
                    on_error: str = "fail", files: list[Path] | None = None) -> dict:
    """Process one subject into a new Arrow file in the cache; returns its manifest entry (file not yet live).

    ``on_error="skip"`` skips broken trials (reader errors, stimulus shorter than a window, unreadable video)
    and lists them in the entry's ``skipped``; a subject left without trials raises :class:`SubjectSkipped`.
    ``files``: the subject's source files as the reader lists them (looked up when not given).
    """
    started = time.perf_counter()
    check_on_error(on_error)
    reader = READERS[dataset]
    skipped: list[dict] = []

    def bad(exc: DataError, trial: int | None) -> None:
        if on_error == "fail":
            raise exc
        warnings.warn(f"skipping {exc}", stacklevel=3)
        skipped.append({"subject": subject, "trial": trial, "path": exc.path, "problem": exc.problem})

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_report = ReadReport()
        records = reader.read_subject(root, subject, on_error, read_report)
        skipped += [{"subject": subject, "trial": None, "path": path, "problem": problem}
                    for path, problem in read_report.skipped]
        cropper = FaceCropper(cfg.face_size) if face else None
        n_face = cfg.frames * cfg.face_size * cfg.face_size * 3
        channels = records[0].channels if records else []
        kept = []  # (record, windows, face crops (n, n_face) or None)
        for rec in records:
            try:
                if rec.channels != channels:
                    raise DataError(rec.source_files[0] if rec.source_files else root,
                                    f"channels of trial {rec.trial} differ from the subject's first trial: "
                                    f"{rec.channels}")
                w = windows(rec, cfg)
                crops = None
                if cropper is not None and rec.video is not None:
                    cropper.reset()
                    span = (rec.stim_end - rec.video_start, rec.duration - rec.video_start)
                    frames = read_frames(rec.video, (w.frame_times - rec.video_start).ravel(), span)
                    crops = np.stack([cropper.crop(f) for f in frames]).reshape(len(w.t_start), n_face)
            except DataError as exc:
                bad(exc, rec.trial)
                continue
            kept.append((rec, w, crops))
    if not kept:
        if skipped:
            raise SubjectSkipped(skipped[0]["path"], f"subject {subject}: every trial skipped "
                                                     f"({skipped[0]['problem']})", skipped)
        item = {"subject": subject, "trial": None, "path": str(root),
                "problem": f"subject {subject} has no rated trials"}
        raise SubjectSkipped(root, item["problem"], [item])

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
    arrays = {name: pa.array(columns[name].astype(types.field(name).type.to_pandas_dtype(), copy=False))
              for name in cache_mod.INDEX_COLUMNS}
    arrays["bio"] = pa.FixedSizeListArray.from_arrays(pa.array(bio.reshape(-1)), bio[0].size)
    valid = np.repeat([c is not None for _, _, c in kept], counts)
    if has_face:
        faces = np.concatenate([c if c is not None else np.zeros((k, n_face), np.uint8)
                                for (_, _, c), k in zip(kept, counts, strict=True)])
        validity = pa.array(valid).buffers()[1]  # a bool array's data is a validity bitmap
        arrays["face"] = pa.Array.from_buffers(types.field("face").type, n, [validity],
                                               null_count=int(n - valid.sum()), children=[pa.array(faces.ravel())])
    else:
        arrays["face"] = pa.nulls(n, pa.null())
    table = pa.table([arrays[f.name] for f in types], schema=types)
    fs, base = cache_mod.filesystem(cache_uri)
    name = f"subject_{subject:02d}-{secrets.token_hex(4)}.arrow"
    written = cache_mod.write_table(fs, cache_mod.join(base, name), table)
    if files is None:
        files = reader.subject_files(root).get(subject, [])
    sources = sorted({str(p) for r, _, _ in kept for p in r.source_files} | {str(p) for p in files})
    notes = [str(w.message) for w in caught if (face or not _is_video_note(str(w.message)))
             and not str(w.message).startswith("skipping ")]  # skips are listed in "skipped"
    return {"file": name, "rows": n, "trials": len(kept), "bytes": written,
            "raw_bytes": int(sum(r.bio.nbytes for r, _, _ in kept)), "channels": channels,
            "face_rows": int(valid.sum()), "face_frames": cropper.frames if cropper else 0,
            "face_fallbacks": cropper.fallbacks if cropper else 0, "skipped": skipped, "warnings": notes,
            "seconds": time.perf_counter() - started, "sources": describe_sources([Path(p) for p in sources])}


def _unchanged(entry: dict | None, fs, base: str, files: list[Path], on_error: str) -> bool:
    """Whether ``entry`` (from the old manifest) still stands: its file exists, its sources and the subject's
    current source files are the same set with the same sizes and mtimes, and (under ``on_error="fail"``) it
    skipped nothing."""
    if entry is None or fs.get_file_info(cache_mod.join(base, entry["file"])).type == pafs.FileType.NotFound:
        return False
    if on_error == "fail" and entry.get("skipped"):
        return False
    recorded = [s["path"] for s in entry["sources"]]
    current = sorted(set(recorded) | {str(p) for p in files})
    try:
        return entry["sources"] == describe_sources([Path(p) for p in current])
    except OSError:
        return False


class _Lazy:
    """A future for the one-process path: the work runs when ``result()`` is first called."""

    def __init__(self, fn, args):
        self._fn, self._args, self._done, self._value, self._error = fn, args, False, None, None

    def result(self):
        if not self._done:
            self._done = True
            try:
                self._value = self._fn(*self._args)
            except BaseException as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._value

    def done(self) -> bool:
        return self._done

    def cancel(self) -> bool:
        return not self._done

    def exception(self):
        return self._error


class _Inline:
    """The executor interface, running each job in this process when its result is asked for."""

    def submit(self, fn, *args) -> _Lazy:
        return _Lazy(fn, args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _written_file(future) -> str | None:
    """The file a finished, successful subject job wrote (None otherwise)."""
    if not future.done() or (hasattr(future, "cancelled") and future.cancelled()) or future.exception():
        return None
    return future.result()["file"]


def prepare_dataset(dataset: str, root: str | Path, cache: str, cfg: PrepareConfig | None = None, *,
                    on_error: str = "fail", face: bool = True, subjects: list[int] | None = None,
                    workers: int = 1, progress: bool = True) -> dict:
    """Bring the cache at ``cache`` up to date with ``root``; returns the report.

    The cache then holds exactly ``subjects`` (default: every subject under ``root``) minus those skipped.

    The manifest is the commit point: it is replaced (atomically) only once every subject to redo has been
    written, so an error or an interruption leaves the previous cache as it was (files this run wrote are
    removed). The manifest's ``skipped`` lists what ``on_error="skip"`` left out and why; the report adds what
    was redone, the warnings and the face-detection fallbacks.
    """
    check_on_error(on_error)
    cfg = (cfg or dataset_config(dataset)).validate()
    root = str(Path(root).expanduser().absolute())
    reader = READERS[dataset]
    all_files = reader.subject_files(root)
    wanted = sorted(subjects or all_files)
    unknown = set(wanted) - set(all_files)
    if unknown:
        raise DataError(root, f"subject(s) {sorted(unknown)} not found")
    fs, base = cache_mod.filesystem(cache)
    fs.create_dir(base, recursive=True)
    chash = config_hash(dataset, cfg, face)
    try:
        old = cache_mod.read_manifest(cache)
    except ValueError as exc:  # another schema version, or a damaged manifest: prepare everything again
        warnings.warn(f"{cache}: ignoring the old manifest ({exc})", stacklevel=2)
        old = None
    old_subjects = old["subjects"] if old and old.get("config_hash") == chash else {}
    entries = {s: old_subjects[str(s)] for s in wanted
               if _unchanged(old_subjects.get(str(s)), fs, base, all_files[s], on_error)}
    todo = [s for s in wanted if s not in entries]
    skipped: list[dict] = []
    started = time.perf_counter()
    parallel = workers > 1 and len(todo) > 1
    # The platform's default start method (fork on Linux before Python 3.14): workers start at once, without
    # re-importing the caller's __main__ (torch, for a training script); they run numpy/pyarrow/OpenCV only.
    pool = ProcessPoolExecutor(min(workers, len(todo))) if parallel else _Inline()
    futures = {}
    try:
        for s in todo:
            futures[s] = pool.submit(_subject_job if parallel else prepare_subject, dataset, root, s, cfg, face,
                                     cache, on_error, all_files[s])
        for s in tqdm(todo, desc=f"prepare {dataset}", unit="subject", disable=not progress or not todo,
                      file=sys.stderr):
            try:
                entries[s] = futures[s].result()
                for item in entries[s]["skipped"]:
                    warnings.warn(f"skipped {_describe(item)}", stacklevel=2)
            except SubjectSkipped as exc:  # under "fail" only a subject without rated trials gets here
                warnings.warn(f"skipped subject {s}: {exc}", stacklevel=2)
                skipped += exc.items
            except DataError as exc:
                if on_error == "fail":
                    raise
                warnings.warn(f"skipped subject {s}: {exc}", stacklevel=2)
                skipped.append({"subject": s, "trial": None, "path": exc.path, "problem": exc.problem})
        if not entries:
            raise DataError(root, "no subject could be prepared" + (f": {skipped}" if skipped else ""))
        channel_sets = {tuple(e["channels"]) for e in entries.values()}
        if len(channel_sets) > 1:
            raise DataError(root, f"subjects have different channel lists: {channel_sets}")
        manifest = {
            "schema_version": cache_mod.SCHEMA_VERSION, "dataset": dataset, "root": root, "config": to_dict(cfg),
            "config_hash": chash, "face": face, "channels": list(channel_sets.pop()), "rate": cfg.rate,
            "window_samples": cfg.window_samples, "frames": cfg.frames, "face_size": cfg.face_size,
            "subjects": {str(s): entries[s] for s in sorted(entries)},
            "skipped": skipped + [item for s in sorted(entries) for item in entries[s].get("skipped", [])],
        }
        if manifest != old:  # an unchanged cache is left untouched, manifest included
            cache_mod.write_json(fs, cache_mod.join(base, cache_mod.MANIFEST), manifest)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for future in futures.values():  # the old manifest stays the truth; drop what this run wrote
            name = _written_file(future)
            if name is not None:
                cache_mod.delete_quietly(fs, cache_mod.join(base, name))
        raise
    finally:
        pool.shutdown(wait=True)
    live = {e["file"] for e in entries.values()}
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.base_name.startswith("subject_") and info.base_name not in live:
            cache_mod.delete_quietly(fs, info.path)  # replaced files, and leftovers of interrupted runs
    redone = [entries[s] for s in todo if s in entries]
    return {
        "subjects": len(entries), "redone": [s for s in todo if s in entries],
        "unchanged": [s for s in wanted if s not in todo], "windows": sum(e["rows"] for e in entries.values()),
        "windows_redone": sum(e["rows"] for e in redone), "raw_mb_redone": sum(e["raw_bytes"] for e in redone) / 1e6,
        "face_frames": sum(e["face_frames"] for e in redone),
        "face_fallbacks": sum(e["face_fallbacks"] for e in redone), "skipped": manifest["skipped"],
        "warnings": [w for e in redone for w in e["warnings"]], "seconds": time.perf_counter() - started,
    }


def _describe(item: dict) -> str:
    trial = f" trial {item['trial']}" if item.get("trial") is not None else ""
    return f"subject {item['subject']}{trial}: {item['path']}: {item['problem']}"


def format_report(report: dict, max_warnings: int = 20) -> str:
    lines = [f"cache: {report['subjects']} subjects, {report['windows']} windows "
             f"(redone: {report['redone'] or 'none'}; unchanged: {report['unchanged'] or 'none'})",
             f"prepared {report['windows_redone']} windows from {report['raw_mb_redone']:.1f} MB of signals in "
             f"{report['seconds']:.1f} s"]
    if report["face_frames"]:
        lines.append(f"faces: {report['face_frames']} frames cropped, {report['face_fallbacks']} without a "
                     "detection (last box or centre crop used)")
    lines += [f"SKIPPED {_describe(item)}" for item in report["skipped"]]
    shown = report["warnings"][:max_warnings]
    lines += [f"warning: {w}" for w in shown]
    if len(report["warnings"]) > len(shown):
        lines.append(f"... and {len(report['warnings']) - len(shown)} more warnings (see the returned report)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m gbvnet.prepare", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(READERS), required=True)
    p.add_argument("--root", required=True, help="the dataset folder as downloaded")
    p.add_argument("--cache", required=True, help="cache folder or URI (s3://...)")
    p.add_argument("--window", type=float, default=PrepareConfig.window)
    p.add_argument("--stride", type=float, default=PrepareConfig.stride)
    p.add_argument("--rate", type=float, default=PrepareConfig.rate)
    p.add_argument("--frames", type=int, default=PrepareConfig.frames)
    p.add_argument("--face-size", type=int, default=PrepareConfig.face_size)
    p.add_argument("--threshold", type=float, default=PrepareConfig.threshold)
    p.add_argument("--baseline-norm", action="store_true", help="z-score trials by their pre-stimulus baseline")
    p.add_argument("--no-face", action="store_true", help="bio-only cache (no video decoding)")
    p.add_argument("--subjects", type=int, nargs="+")
    p.add_argument("--workers", type=int, default=1, help="processes (one subject each)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail")
    args = p.parse_args(argv)
    cfg = dataset_config(args.dataset, window=args.window, stride=args.stride, rate=args.rate, frames=args.frames,
                         face_size=args.face_size, threshold=args.threshold, baseline_norm=args.baseline_norm)
    try:
        report = prepare_dataset(args.dataset, args.root, args.cache, cfg, on_error=args.on_error,
                                 face=not args.no_face, subjects=args.subjects, workers=args.workers)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    print(format_report(report))
    return report


if __name__ == "__main__":
    main()

