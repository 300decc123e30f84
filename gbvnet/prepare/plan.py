"""A dataset into the cache: :func:`prepare_dataset` plans (what to redo), runs (the subjects to redo, in a pool)
and commits (the manifest, then the report: :func:`format_report`).

The manifest is the commit point: an error or an interruption before it is written leaves the previous cache as it
was, every file the run wrote removed (their names carry the run's token).
"""

from __future__ import annotations

import secrets
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
from tqdm import tqdm

from gbvnet.config import PrepareConfig
from gbvnet.data import cache as cache_mod
from gbvnet.data import storage
from gbvnet.data.cache import Manifest, SubjectEntry
from gbvnet.data.records import DataError, ReadReport, check_on_error, describe, skip_record
from gbvnet.data.registry import get_dataset
from gbvnet.data.video import FALLBACK_WARN
from gbvnet.prepare.options import keep_options
from gbvnet.prepare.pool import Inline, signals_ignored, stop_workers, worker_pool
from gbvnet.prepare.subject import SubjectSkipped, config_hash, describe_sources, prepare_subject, subject_job


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


def _remove_run_files(fs, base: str, token: str) -> None:
    """Delete every file this run wrote (its token is in their names), temporary ones included."""
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if f"-{token}." in info.base_name:
            storage.delete_quietly(fs, info.path)


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
    :class:`~gbvnet.prepare.options.CacheConflict` before anything is touched, unless ``rebuild`` (every subject
    then prepared again with these options). ``face=False`` asks for no faces: a cache that has them, with the
    same other options, is brought up to date with its own face options
    (:func:`~gbvnet.prepare.options.keep_options`).

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
    pool = worker_pool(workers, len(plan.todo))
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
    the options asked for (:func:`~gbvnet.prepare.options.keep_options`; ``rebuild`` replaces it), open the cache
    folder, and compare the old manifest with the sources: a subject is redone unless its entry still stands
    (:func:`_unchanged`, same config hash)."""
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
        cfg, face = keep_options(old, cache, dataset, root, cfg, face)
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


def _run(plan: _Plan, pool: ProcessPoolExecutor | Inline, video_threads: int,
         progress: bool) -> tuple[dict[int, SubjectEntry], list[dict]]:
    """Prepare the subjects to redo in ``pool``; returns their entries and the skip records of the subjects left
    out (``on_error="skip"``, or no rated trials). Their files are written, not yet live."""
    job = subject_job if isinstance(pool, ProcessPoolExecutor) else prepare_subject
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


def _undo(plan: _Plan, pool: ProcessPoolExecutor | Inline) -> None:
    """After an error or an interruption: stop the workers and drop what this run wrote (the old manifest stays
    the truth), with Ctrl-C and SIGTERM ignored meanwhile."""
    release = signals_ignored()
    try:
        stop_workers(pool)
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
