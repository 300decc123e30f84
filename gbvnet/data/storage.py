"""Files on any filesystem: local paths or URIs (``s3://``, ``gs://``, any fsspec protocol), written atomically.

Every module that reads or writes a file by path or URI (the window cache, configs, results, Ray storage paths)
goes through these helpers, so local and remote storage behave alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs


def filesystem(uri: str, fs: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or a URI such as ``s3://bucket/prefix``; given ``fs``, ``uri`` is a
    path on it (a Tune trial's or result's path on its storage filesystem: on remote storage, a bucket path
    without the scheme) and comes back as it is.

    URIs that ``pyarrow.fs`` does not know are handed to fsspec (wrapped in a ``pyarrow.fs.PyFileSystem``).
    """
    if fs is not None:
        return fs, uri
    uri = str(uri)
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(pafs.LocalFileSystem().normalize_path(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as exc:
        if "Unrecognized filesystem type" not in str(exc):
            raise
        try:
            import fsspec.core
        except ImportError:
            raise ValueError(f"{uri}: pyarrow does not know this filesystem and fsspec is not installed") from exc
        fs, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def absolute(uri: str) -> str:
    """A local path made absolute (Ray workers and trials run in other directories); URIs unchanged."""
    uri = str(uri)
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def join(base: str, name: str) -> str:
    """``name`` under the folder ``base`` (a path or URI; a URI's query, such as ``?endpoint_override=...``, stays at
    the end)."""
    base, query, options = base.partition("?")
    return f"{base.rstrip('/')}/{name}{query}{options}"


def delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    """Delete ``path`` if it exists (cleaning up must not hide the error that made it necessary)."""
    try:
        fs.delete_file(path)
    except OSError:
        pass


def delete_quietly_dir(fs: pafs.FileSystem, path: str) -> None:
    """Delete the folder ``path`` if it can be (cleaning up must not hide the error that made it necessary)."""
    try:
        fs.delete_dir(path)
    except OSError:
        pass


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, then move)."""
    tmp = path + ".tmp"
    try:
        with fs.open_output_stream(tmp) as sink:
            sink.write(data)
        fs.move(tmp, path)
    except BaseException:
        delete_quietly(fs, tmp)
        raise


def write_json(fs: pafs.FileSystem, path: str, data: dict) -> None:
    write_bytes(fs, path, json.dumps(data, indent=1, sort_keys=True).encode())


def write_text(uri: str, text: str) -> None:
    """Write a small text file (a result, a config) to a local path or a URI, atomically, creating folders."""
    fs, path = filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rpartition("/")[0] or ".", recursive=True)
    write_bytes(fs, path, text.encode())


def read_text(uri: str, fs: pafs.FileSystem | None = None) -> str:
    """Read a small text file from a local path or a URI, or from the path ``uri`` on ``fs`` (:func:`filesystem`)."""
    fs, path = filesystem(uri, fs)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def missing_folder(uri: str) -> str | None:
    """The outermost folder that writing the local file ``uri`` creates (:func:`write_text`), or ``None`` when its
    folder exists or ``uri`` is remote."""
    fs, path = filesystem(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        return None
    missing = None
    for folder in Path(path).absolute().parents:
        if folder.exists():
            break
        missing = folder
    return None if missing is None else str(missing)
