"""Prepare a dataset download into the window cache.

    python -m gbvnet.prepare --dataset deap --root ~/data/deap --cache data/cache/deap
    python -m gbvnet.prepare --dataset mahnob --root ~/data/mahnob-hci --cache s3://bucket/cache/mahnob --workers 4

Per subject: read its trials (the dataset's reader), filter / resample with mne, cut windows inside the
stimulus, sample ``--frames`` frames per window from the time-aligned face video, crop the face (Haar cascade,
see :mod:`gbvnet.data.video`), binarise labels (``rating > --threshold``), and write one Arrow file. A re-run
redoes only subjects whose source files (size, mtime) or preparation config changed. ``--on-error fail`` (default)
stops at the first bad input with an error naming the file, leaving the previous cache intact;
``--on-error skip`` warns, skips that subject and lists it in the report and the manifest.

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
from gbvnet.data.records import DataError
from gbvnet.data.video import FaceCropper, read_frames
from gbvnet.data.windows import binarise, cut

READERS = {"deap": deap, "mahnob": mahnob}


def dataset_config(dataset: str, **overrides) -> PrepareConfig:
    """The preparation defaults of ``dataset`` (see the module docstring) with ``overrides``."""
    base = {"deap": {"h_freq": None}, "mahnob": {"h_freq": 45.0}}[dataset]
    return PrepareConfig(**{**base, **overrides}).validate()


def config_hash(dataset: str, cfg: PrepareConfig, face: bool) -> str:
    payload = json.dumps({"dataset": dataset, "config": to_dict(cfg), "face": face,
                          "schema": cache_mod.SCHEMA_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def describe_sources(files: list[Path]) -> list[dict]:
    return [{"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]


def prepare_subject(dataset: str, root: str, subject: int, cfg: PrepareConfig, face: bool, cache_uri: str) -> dict:
    """Process one subject into a new Arrow file in the cache; returns its manifest entry (file not yet live)."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = READERS[dataset].read_subject(root, subject)
        if not records:
            raise DataError(root, f"subject {subject} has no usable trials")
        cropper = FaceCropper(cfg.face_size) if face else None
        columns: dict[str, list] = {k: [] for k in cache_mod.INDEX_COLUMNS}
        bio_parts, face_parts, face_valid = [], [], []
        channels = records[0].channels
        n_face = cfg.frames * cfg.face_size * cfg.face_size * 3
        raw_bytes = 0
        for rec in records:
            if rec.channels != channels:
                raise DataError(rec.source_files[0], f"channels differ from the subject's first trial: {rec.channels}")
            raw_bytes += rec.bio.nbytes
            w = cut(rec, cfg)
            n = len(w.t_start)
            for name, value in (("subject", rec.subject), ("trial", rec.trial), ("stim_start", rec.stim_start),
                                ("stim_end", rec.stim_end), ("valence", rec.valence), ("arousal", rec.arousal),
                                ("label_valence", binarise(rec.valence, cfg.threshold)),
                                ("label_arousal", binarise(rec.arousal, cfg.threshold))):
                columns[name].append(np.full(n, value))
            columns["window"].append(np.arange(n))
            columns["t_start"].append(w.t_start)
            bio_parts.append(w.bio.reshape(n, -1))
            if cropper is not None and rec.video is not None:
                cropper.reset()
                span = (rec.stim_end - rec.video_start, rec.duration - rec.video_start)
                frames = read_frames(rec.video, (w.frame_times - rec.video_start).ravel(), span)
                crops = np.stack([cropper.crop(f) for f in frames])
                face_parts.append(crops.reshape(n, -1))
                face_valid.append(np.ones(n, bool))
            else:
                face_parts.append(np.zeros((n, n_face), np.uint8))
                face_valid.append(np.zeros(n, bool))
    types = cache_mod.schema(bio_parts[0].shape[1], n_face)
    arrays = {name: pa.array(np.concatenate(columns[name]).astype(types.field(name).type.to_pandas_dtype()))
              for name in cache_mod.INDEX_COLUMNS}
    bio = np.concatenate(bio_parts)
    valid = np.concatenate(face_valid)
    arrays["bio"] = pa.FixedSizeListArray.from_arrays(pa.array(bio.ravel()), bio.shape[1])
    arrays["face"] = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(face_parts).ravel()), n_face,
                                                       mask=pa.array(~valid))
    table = pa.table([arrays[f.name] for f in types], schema=types)
    fs, base = cache_mod.filesystem(cache_uri)
    name = f"subject_{subject:02d}-{secrets.token_hex(4)}.arrow"
    written = cache_mod.write_table(fs, cache_mod.join(base, name), table)
    sources = sorted({p for rec in records for p in rec.source_files} | set(READERS[dataset].subject_files(root)
                                                                               .get(subject, [])))
    return {"file": name, "rows": table.num_rows, "trials": len(records), "bytes": written,
            "raw_bytes": raw_bytes, "channels": channels, "face_rows": int(valid.sum()),
            "face_frames": cropper.frames if cropper else 0, "face_fallbacks": cropper.fallbacks if cropper else 0,
            "warnings": [str(w.message) for w in caught], "seconds": time.perf_counter() - started,
            "sources": describe_sources(sources)}


def _unchanged(entry: dict | None, fs, base: str) -> bool:
    if entry is None or fs.get_file_info(cache_mod.join(base, entry["file"])).type.name == "NotFound":
        return False
    try:
        return entry["sources"] == describe_sources([Path(s["path"]) for s in entry["sources"]])
    except OSError:
        return False


def prepare_dataset(dataset: str, root: str | Path, cache: str, cfg: PrepareConfig | None = None, *,
                    on_error: str = "fail", face: bool = True, subjects: list[int] | None = None,
                    workers: int = 1, progress: bool = True) -> dict:
    """Bring the cache at ``cache`` up to date with ``root``; returns the report (also in the manifest)."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    cfg = (cfg or dataset_config(dataset)).validate()
    root = str(Path(root).expanduser())
    reader = READERS[dataset]
    all_files = reader.subject_files(root)
    wanted = sorted(subjects or all_files)
    unknown = set(wanted) - set(all_files)
    if unknown:
        raise DataError(root, f"subject(s) {sorted(unknown)} not found")
    fs, base = cache_mod.filesystem(cache)
    fs.create_dir(base, recursive=True)
    chash = config_hash(dataset, cfg, face)
    old = cache_mod.read_manifest(cache)
    old_subjects = old["subjects"] if old and old.get("config_hash") == chash else {}
    entries = {s: old_subjects[str(s)] for s in wanted if _unchanged(old_subjects.get(str(s)), fs, base)}
    todo = [s for s in wanted if s not in entries]
    skipped, new_files = [], []
    started = time.perf_counter()
    args = [(dataset, root, s, cfg, face, cache) for s in todo]
    try:
        with ProcessPoolExecutor(workers) if workers > 1 and len(todo) > 1 else _Inline() as pool:
            futures = {s: pool.submit(prepare_subject, *a) for s, a in zip(todo, args, strict=True)}
            for s in tqdm(todo, desc=f"prepare {dataset}", unit="subject", disable=not progress or not todo,
                          file=sys.stderr):
                try:
                    entries[s] = futures[s].result()
                    new_files.append(entries[s]["file"])
                except DataError as exc:
                    if on_error == "fail":
                        raise
                    warnings.warn(f"skipped subject {s}: {exc}", stacklevel=2)
                    skipped.append({"subject": s, "path": exc.path, "problem": exc.problem})
    except BaseException:
        for name in new_files:  # the old manifest stays the truth; drop what this run wrote
            fs.delete_file(cache_mod.join(base, name))
        raise
    if not entries:
        raise DataError(root, "no subject could be prepared" + (f": {skipped}" if skipped else ""))
    channel_sets = {tuple(e["channels"]) for e in entries.values()}
    if len(channel_sets) > 1:
        raise DataError(root, f"subjects have different channel lists: {channel_sets}")
    manifest = {
        "schema_version": cache_mod.SCHEMA_VERSION, "dataset": dataset, "root": root, "config": to_dict(cfg),
        "config_hash": chash, "face": face, "channels": list(channel_sets.pop()), "rate": cfg.rate,
        "window_samples": cfg.window_samples, "frames": cfg.frames, "face_size": cfg.face_size,
        "subjects": {str(s): entries[s] for s in sorted(entries)}, "skipped": skipped,
    }
    cache_mod.write_json(fs, cache_mod.join(base, cache_mod.MANIFEST), manifest)
    live = {e["file"] for e in entries.values()}
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.base_name.startswith("subject_") and info.base_name not in live:
            fs.delete_file(info.path)
    redone = [entries[s] for s in todo if s in entries]
    report = {
        "subjects": len(entries), "redone": [s for s in todo if s in entries],
        "unchanged": [s for s in wanted if s not in todo], "windows": sum(e["rows"] for e in entries.values()),
        "windows_redone": sum(e["rows"] for e in redone), "raw_mb_redone": sum(e["raw_bytes"] for e in redone) / 1e6,
        "face_frames": sum(e["face_frames"] for e in redone),
        "face_fallbacks": sum(e["face_fallbacks"] for e in redone), "skipped": skipped,
        "warnings": [w for e in redone for w in e["warnings"]], "seconds": time.perf_counter() - started,
    }
    return report


class _Inline:
    """Runs ``submit`` immediately in this process (the one-worker path), with the executor interface."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # delivered through .result(), as a process pool would
            future.set_exception(exc)
        return future


def format_report(report: dict) -> str:
    lines = [f"cache: {report['subjects']} subjects, {report['windows']} windows "
             f"(redone: {report['redone'] or 'none'}; unchanged: {report['unchanged'] or 'none'})",
             f"prepared {report['windows_redone']} windows from {report['raw_mb_redone']:.1f} MB of signals in "
             f"{report['seconds']:.1f} s"]
    if report["face_frames"]:
        lines.append(f"faces: {report['face_frames']} frames cropped, {report['face_fallbacks']} without a "
                     "detection (last box or centre crop used)")
    for item in report["skipped"]:
        lines.append(f"SKIPPED subject {item['subject']}: {item['path']}: {item['problem']}")
    for w in report["warnings"]:
        lines.append(f"warning: {w}")
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

