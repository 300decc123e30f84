"""The window cache: one Arrow IPC file per subject plus ``manifest.json``, on any ``pyarrow.fs`` filesystem.

Format: Arrow IPC (Feather v2), uncompressed, one record batch per file, so local files are memory-mapped and
read with zero copies: a ``bio`` column is a ``FixedSizeList<float32>`` of ``channels * samples`` values whose
buffer *is* the ``(n, channels, samples)`` array. Columns::

    subject int32, trial int32 (DEAP Experiment_id / MAHNOB session id), window int32 (index in the trial),
    t_start float32 (s, recording clock), stim_start / stim_end float32 (s, recording clock),
    valence / arousal float32 (ratings), label_valence / label_arousal int8 (rating > threshold),
    bio FixedSizeList<float32>[channels * samples], face FixedSizeList<uint8>[frames * size * size * 3] (null
    where the trial has no video)

A subject file without any face frames (``--no-face``, or no videos) stores ``face`` as a column of Arrow type
``null``: all rows null, no bytes on disk (a fixed-size list column would store its null rows as zeros).

``manifest.json`` says which files make up the cache and how they were prepared; it is read and written as a
:class:`Manifest` (one :class:`SubjectEntry` per subject) whose :meth:`Manifest.to_dict` gives back exactly the
JSON read, so a cache's digest (:attr:`CacheIndex.manifest_hash`) is that of its manifest's content. A manifest
of another schema version, or a damaged one, is a one-line ``ValueError`` naming the file and the field.

Atomicity: subject files are named by content generation (``subject_07-<token>.arrow``) and never overwritten;
``manifest.json`` (written to a temporary name and moved) is the single commit point that says which files
make up the cache; files it no longer names are deleted afterwards. A failed or interrupted preparation leaves
the previous cache intact.

Snapshots: a run plans on one manifest (its digest, :attr:`Manifest.digest`) and every process of it opens the
cache with that digest (``open_cache(uri, expect=digest)``): a cache re-prepared meanwhile is a one-line
:class:`CacheChanged` ("cache C changed since the run started (hash a -> b)"), never a run that mixes two caches
or a traceback about a missing file. Each subject file's size is checked against the manifest before it is
opened: a truncated or damaged file is a one-line :class:`~gbvnet.data.records.DataError` naming the subject and
the file (``gbvnet.prepare`` redoes it).

Paths may be local folders or URIs: whatever ``pyarrow.fs`` knows (``s3://``, ``gs://``, ``hdfs://``,
``file://``), else any fsspec protocol (``memory://``, ``abfs://`` with its package).

Reading a remote cache (object storage): the index (:meth:`Cache.index`) reads only the small columns, by range
requests; the bio / face data (:attr:`Cache.tables`) come from a copy of each subject file on the local disk
(:func:`local_copy_root`), downloaded once per machine and shared by every process there (search driver, trials,
Ray Train workers), then memory-mapped like a local cache. A copy never goes stale: subject file names are
content generations that are never rewritten; copies of older generations of a subject are deleted when a new
one is downloaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from gbvnet.config import PrepareConfig
from gbvnet.config import to_dict as plain_dict
from gbvnet.data.records import DataError
from gbvnet.data.storage import delete_quietly, filesystem, join, write_json

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
INDEX_COLUMNS = ["subject", "trial", "window", "t_start", "stim_start", "stim_end", "valence", "arousal",
                 "label_valence", "label_arousal"]
FIELDS = INDEX_COLUMNS + ["bio", "face"]  # the column order of every subject file (:func:`schema`)


LOCAL_COPY_ENV = "GBVNET_LOCAL_CACHE"


def local_copy_root() -> Path:
    """Where copies of remote caches live on this machine: ``$GBVNET_LOCAL_CACHE``, else ``~/.cache/gbvnet``."""
    return Path(os.environ.get(LOCAL_COPY_ENV) or Path.home() / ".cache" / "gbvnet").expanduser()


def schema(n_bio: int, n_face: int) -> pa.Schema:
    """The columns of a subject file; ``n_face = 0`` gives the null-typed ``face`` column (no face frames)."""
    return pa.schema([
        ("subject", pa.int32()), ("trial", pa.int32()), ("window", pa.int32()), ("t_start", pa.float32()),
        ("stim_start", pa.float32()), ("stim_end", pa.float32()), ("valence", pa.float32()),
        ("arousal", pa.float32()), ("label_valence", pa.int8()), ("label_arousal", pa.int8()),
        ("bio", pa.list_(pa.float32(), n_bio)), ("face", pa.list_(pa.uint8(), n_face) if n_face else pa.null()),
    ])


def write_table(fs: pafs.FileSystem, path: str, table: pa.Table) -> int:
    """Write ``table`` as an Arrow IPC file at ``path`` via a temporary name; returns bytes written.

    The file holds one record batch (so readers get one contiguous buffer per column). Nothing is left at
    either name if writing fails or is interrupted.
    """
    tmp = path + ".tmp"
    try:
        with fs.open_output_stream(tmp) as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(1, table.num_rows))
        fs.move(tmp, path)
    except BaseException:
        delete_quietly(fs, tmp)
        raise
    return fs.get_file_info(path).size


def _is(value: Any, hint: Any) -> bool:
    """Whether the JSON value ``value`` fits the annotation ``hint`` (containers: their type only)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_is(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float):  # JSON has one kind of number; a bool is not one
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if is_dataclass(hint):
        return isinstance(value, dict)
    return isinstance(value, typing.get_origin(hint) or hint)


def _fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    """The values of ``data`` (parsed JSON) for the fields of the dataclass ``cls``, each checked against its
    annotation: a missing, unknown or mistyped field is a one-line ``ValueError`` naming ``where`` and the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    missing = [name for name in names if name not in data]
    wrong = [name for name in names if name in data and not _is(data[name], hints[name])]
    unknown = sorted(set(data) - set(names))
    if missing:
        problem = f"no field {missing[0]!r}"
    elif wrong:
        hint = hints[wrong[0]]
        problem = f"field {wrong[0]!r} is a {type(data[wrong[0]]).__name__}, not {getattr(hint, '__name__', hint)}"
    elif unknown:
        problem = f"unknown field {unknown[0]!r}"
    else:
        return {name: data[name] for name in names}
    raise ValueError(f"{where}: {problem}; written by another version of gbvnet, or damaged: prepare the cache again")


@dataclass(frozen=True)
class SubjectEntry:
    """One subject of the cache: its Arrow file and what its preparation found (a value of the manifest's
    ``subjects``)."""

    file: str  # the file's name in the cache folder (subject_NN-<token>.arrow)
    rows: int  # windows
    trials: int
    bytes: int  # the file's size
    raw_bytes: int  # the signals read to make it
    channels: list[str]
    face_rows: int  # windows with face frames
    face_frames: int  # frames cropped
    face_fallbacks: int  # frames without a detected face
    face_fallback_videos: list[dict]  # videos without a face in more than FALLBACK_WARN of their sampled frames
    skipped: list[dict]  # skip records (gbvnet.data.records.skip_record) of its trials
    warnings: list[str]
    seconds: float  # preparation time
    sources: list[dict]  # the source files it was made from: path, size, mtime_ns

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "subject") -> SubjectEntry:
        return cls(**_fields(cls, data, where))


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: which files make up the cache, and how they were prepared (see the module docstring).

    On disk it is :meth:`to_dict` as JSON (plus ``schema_version``); reading it back gives the same dict, so the
    cache's digest (:attr:`CacheIndex.manifest_hash`) is that of the file's content.
    """

    dataset: str
    root: str  # the dataset download it was prepared from
    config: PrepareConfig
    config_hash: str  # of the dataset, config and face flag (gbvnet.prepare.config_hash): a change redoes all
    face: bool  # prepared with face frames (--no-face: False)
    channels: list[str]
    rate: float  # Hz
    window_samples: int
    frames: int  # face frames per window
    face_size: int
    subjects: dict[int, SubjectEntry]
    skipped: list[dict]  # every skip record: the dataset's, the subjects' and their trials'

    @property
    def digest(self) -> str:
        """The cache's identity: a hash of the manifest's content (every file, config and count)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"schema_version": SCHEMA_VERSION, **data, "config": plain_dict(self.config),
                "subjects": {str(s): e.to_dict() for s, e in self.subjects.items()}}

    @classmethod
    def from_dict(cls, data: dict, source: str = MANIFEST) -> Manifest:
        """The manifest of the parsed JSON ``data``. A manifest of another schema version, or one with a missing,
        unknown or mistyped field (another version of gbvnet, or damage), is a one-line ``ValueError`` naming
        ``source`` (the file) and the field."""
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ValueError(f"{source}: cache schema version {version} is not {SCHEMA_VERSION}; prepare the cache "
                             "again")
        values = _fields(cls, {k: v for k, v in data.items() if k != "schema_version"}, source)
        subjects = {}
        for key, entry in values["subjects"].items():
            if not key.isdigit():
                raise ValueError(f"{source}: subject {key!r} is not a subject number; prepare the cache again")
            subjects[int(key)] = SubjectEntry.from_dict(entry, f"{source}: subject {key}")
        return cls(**{**values, "config": PrepareConfig(**_fields(PrepareConfig, values["config"],
                                                                    f"{source}: config")),
                      "subjects": subjects})


class CacheChanged(ValueError):
    """A cache prepared again since a run planned on it: its manifest digest is no longer the planned one."""

    def __init__(self, uri: str, planned: str, now: str):
        self.uri, self.planned, self.now = uri, planned, now
        super().__init__(f"cache {uri} changed since the run started (hash {planned} -> {now}): it was prepared "
                         "again; start the run again to use it (a new run: --resume cannot reuse what ran on the "
                         "old cache)")

    def __reduce__(self):  # picklable, so it crosses process (and Ray) boundaries intact
        return type(self), (self.uri, self.planned, self.now)


def check_snapshot(uri: str, planned: str) -> None:
    """Raise :class:`CacheChanged` unless the cache at ``uri`` still has the manifest digest ``planned``."""
    manifest = read_manifest(uri)
    now = manifest.digest if manifest is not None else "no manifest"
    if now != planned:
        raise CacheChanged(uri, planned, now)


def file_problem(fs: pafs.FileSystem, path: str, entry: SubjectEntry) -> str | None:
    """What is wrong with the subject file ``path`` that ``entry`` describes (missing, or not the size the
    manifest records), or None."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return "is missing"
    if info.size < entry.bytes:
        return f"is truncated ({info.size} of {entry.bytes} bytes)"
    if info.size != entry.bytes:
        return f"has {info.size} bytes, not the {entry.bytes} of {MANIFEST}"
    return None


def damaged(subject: int, path: str, problem: str) -> DataError:
    """The one-line error for a damaged subject file."""
    return DataError(path, f"subject {subject}'s file {problem}: run gbvnet.prepare again")


def read_manifest(uri: str) -> Manifest | None:
    """The manifest of the cache at ``uri``, or None where there is none."""
    fs, base = filesystem(uri)
    path = join(base, MANIFEST)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        try:
            data = json.loads(f.read())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc}); prepare the cache again") from None
    return Manifest.from_dict(data, path)


def write_manifest(fs: pafs.FileSystem, base: str, manifest: Manifest) -> None:
    """Replace the manifest of the cache folder ``base`` (atomically: this is the cache's commit point)."""
    write_json(fs, join(base, MANIFEST), manifest.to_dict())


@dataclass
class CacheIndex:
    """The small columns of every row (cache order: subjects ascending, then file order), no bio/face data."""

    subject: np.ndarray
    trial: np.ndarray
    window: np.ndarray
    t_start: np.ndarray
    stim_start: np.ndarray
    stim_end: np.ndarray
    label_valence: np.ndarray
    label_arousal: np.ndarray
    has_face_rows: np.ndarray
    manifest: Manifest

    def labels(self, target: str) -> np.ndarray:
        return {"valence": self.label_valence, "arousal": self.label_arousal}[target].astype(np.int64)

    @property
    def has_face(self) -> bool:
        return bool(self.has_face_rows.any())

    @property
    def manifest_hash(self) -> str:
        return self.manifest.digest


class Cache:
    """A prepared window cache (see the module docstring). ``open_cache(uri)`` is the way in."""

    def __init__(self, uri: str, expect: str | None = None):
        self.uri = str(uri)
        manifest = read_manifest(self.uri)
        if manifest is None:
            raise FileNotFoundError(f"{self.uri}: no {MANIFEST}; run python -m gbvnet.prepare first")
        if expect is not None and manifest.digest != expect:
            raise CacheChanged(self.uri, expect, manifest.digest)
        self.manifest = manifest
        self.fs, self.base = filesystem(self.uri)
        self.subjects = sorted(manifest.subjects)

    def path(self, subject: int) -> str:
        """The subject's Arrow file (a path on ``self.fs``)."""
        return join(self.base, self.manifest.subjects[subject].file)

    def checked_path(self, subject: int) -> str:
        """The subject's file after checking it has the size the manifest records. A file gone because the cache
        was prepared again since it was opened is :class:`CacheChanged`; a missing or truncated file otherwise a
        one-line :class:`DataError` naming the subject and the file."""
        path = self.path(subject)
        problem = file_problem(self.fs, path, self.manifest.subjects[subject])
        if problem:
            check_snapshot(self.uri, self.manifest.digest)
            raise damaged(subject, path, problem)
        return path

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def local_path(self, subject: int) -> str:
        """The subject's file on this machine (checked: :meth:`checked_path`): the file itself for a local cache;
        for a remote cache a copy under :func:`local_copy_root`, downloaded (under a lock, to a temporary name)
        only if this machine lacks it."""
        if self.is_local:
            return self.checked_path(subject)
        entry = self.manifest.subjects[subject]
        folder = local_copy_root() / hashlib.sha256(self.uri.rstrip("/").encode()).hexdigest()[:16]
        target = folder / entry.file
        if target.is_file() and target.stat().st_size == entry.bytes:
            return str(target)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one download per file and machine; the others wait, then reuse it
            if not (target.is_file() and target.stat().st_size == entry.bytes):
                tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                try:
                    with self.fs.open_input_stream(self.checked_path(subject)) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 16 * 2**20)
                    if tmp.stat().st_size != entry.bytes:
                        raise damaged(subject, self.path(subject), f"read {tmp.stat().st_size} bytes, not the "
                                      f"{entry.bytes} of {MANIFEST} (changed while read?)")
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
                generation = entry.file.rsplit("-", 1)[0]
                for stale in folder.glob(f"{generation}-*.arrow"):
                    if stale != target:
                        stale.unlink(missing_ok=True)
        return str(target)

    def _read(self, subject: int, source: pa.NativeFile, options: pa.ipc.IpcReadOptions | None = None) -> pa.Table:
        """The subject file open at ``source`` as a table; a file that is not a readable Arrow file is a one-line
        :class:`DataError` naming it."""
        with source:
            try:
                return pa.ipc.open_file(source, options=options).read_all()
            except pa.ArrowInvalid as exc:
                reason = str(exc).splitlines()[0]
                raise damaged(subject, self.path(subject), f"is damaged ({reason})") from None

    @cached_property
    def tables(self) -> list[pa.Table]:
        """One table per subject, in ``self.subjects`` order, memory-mapped (a remote cache from its local copy:
        :meth:`local_path`)."""
        return [self._read(s, pa.memory_map(self.local_path(s), "r")) for s in self.subjects]

    def _index_columns(self, subject: int) -> pa.Table:
        """The index columns of one subject file (plus ``face`` when only some of its rows have faces): a column
        projection, so a remote cache transfers just these columns' bytes."""
        entry = self.manifest.subjects[subject]
        names = INDEX_COLUMNS + (["face"] if 0 < entry.face_rows < entry.rows else [])
        options = pa.ipc.IpcReadOptions(included_fields=[FIELDS.index(n) for n in names])
        path = self.checked_path(subject)
        return self._read(subject, pa.memory_map(path, "r") if self.is_local else self.fs.open_input_file(path),
                          options)

    @cached_property
    def _index(self) -> CacheIndex:
        tables = [self._index_columns(s) for s in self.subjects]
        cols = {name: np.concatenate([t.column(name).to_numpy() for t in tables]) for name in INDEX_COLUMNS}
        has_face = []
        for subject, table in zip(self.subjects, tables, strict=True):
            entry = self.manifest.subjects[subject]
            if "face" in table.column_names:
                has_face.append(table.column("face").is_valid().to_numpy(zero_copy_only=False))
            else:
                has_face.append(np.full(table.num_rows, entry.face_rows == entry.rows))
        return CacheIndex(subject=cols["subject"], trial=cols["trial"], window=cols["window"],
                          t_start=cols["t_start"], stim_start=cols["stim_start"], stim_end=cols["stim_end"],
                          label_valence=cols["label_valence"], label_arousal=cols["label_arousal"],
                          has_face_rows=np.concatenate(has_face), manifest=self.manifest)

    def index(self) -> CacheIndex:
        """The small columns of every row, read once per :class:`Cache` (bio / face data are not read)."""
        return self._index


def open_cache(uri: str, expect: str | None = None) -> Cache:
    """The cache at ``uri``; with ``expect`` (the manifest digest a run planned with), a cache prepared again
    since is :class:`CacheChanged`."""
    return Cache(uri, expect)
