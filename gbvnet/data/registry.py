"""The dataset registry: every dataset the project knows, with its reader, its preparation defaults and its
synthetic demo corpus. Where a run's window cache comes from (a prepared cache, a real download, or a synthetic
corpus) is :mod:`gbvnet.data.sources`.

:data:`DATASETS` is the one list: ``gbvnet.prepare`` reads a dataset's files with its reader and prepares it with
its defaults, ``python -m gbvnet.data.synthetic --dataset NAME`` writes a corpus in its layout, and the
``--dataset`` choices of every front-end (``gbvnet.prepare``, ``evaluation.*``, ``tune/search.py``) are its keys.

A dataset is one module: its reader (the :class:`Reader` functions), the writer of a synthetic corpus in its
layout (built from :mod:`gbvnet.data.synthetic`'s signals and file helpers) and, at its bottom, its entry,
``register_dataset(Dataset(name, reader_module=__name__, ...))``. The built-in modules
(:data:`BUILTIN_DATASETS`: ``gbvnet.data.deap``, ``mahnob``, ``amigos``) and those named by the
``GBVNET_DATASETS`` environment variable (comma-separated module names, importable from ``sys.path``) are
imported on the first look at :data:`DATASETS`; a module imported by other means registers its dataset as well.
A reader's own options (AMIGOS: which videos) are declared in its entry (:class:`ReaderOption`):
``gbvnet.prepare`` offers each as a flag, the cache's preparation config records them (``PrepareConfig.reader``,
so a change re-prepares) and the reader receives them as keyword arguments.

Listing the datasets is cheap (no mne, OpenCV or scipy): the CLIs list them before they know whether they will
prepare anything, so the dataset modules import those inside the functions that read or write files.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gbvnet.config import ConfigError, PrepareConfig


@dataclass(frozen=True)
class ReaderOption:
    """An option of a dataset's reader: ``--<name>`` (underscores as dashes) on ``gbvnet.prepare``, kept in
    ``PrepareConfig.reader`` and passed to the reader's ``read_subject`` and ``subject_files`` as ``name=value``."""

    name: str
    default: str
    help: str
    choices: tuple[str, ...] | None = None  # None: any string (the reader checks it)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

if TYPE_CHECKING:
    from gbvnet.data.records import ReadReport, TrialRecord


@runtime_checkable
class Reader(Protocol):
    """What ``gbvnet.prepare`` needs of a dataset's reader: a module (``gbvnet.data.deap``, ...) with these
    three functions. Bad input is a :class:`~gbvnet.data.records.DataError` naming the file, or, with
    ``on_error="skip"``, a skip recorded in ``report``."""

    def check_root(self, root: str | Path, on_error: str = "fail", report: ReadReport | None = None) -> None:
        """Refuse a ``root`` that is not this dataset's download; report files that belong to no subject."""

    def subject_files(self, root: str | Path, face: bool = True) -> dict[int, list[Path]]:
        """Each subject's source files (with ``face``, its videos too): what decides whether it is prepared
        again."""

    def read_subject(self, root: str | Path, subject: int, on_error: str = "fail",
                     report: ReadReport | None = None, face: bool = True) -> list[TrialRecord]:
        """One record per trial of ``subject`` (signals, ratings, the stimulus span, the face video's path)."""


@dataclass(frozen=True)
class Dataset:
    """One dataset: how to read it, how to prepare it by default, and how to write a synthetic corpus of it."""

    name: str
    # The reader module, a Reader: the dataset's own module registers itself as reader_module=__name__; its
    # reader options, as reader_options declares, reach subject_files and read_subject as keyword arguments.
    reader_module: str
    # Preparation defaults: the PrepareConfig fields that differ from PrepareConfig's own defaults.
    prepare_defaults: dict[str, Any]
    # The function that writes a synthetic corpus in this dataset's layout, writer(out, subjects=, seed=,
    # video=, label_noise=, video_size=, video_fps=, ...) -> its truth manifest (gbvnet.data.synthetic), and the
    # size of the --synthetic demo corpus (its keyword arguments).
    writer: Callable[..., dict]
    demo_size: dict[str, Any]
    # The real face camera: (width, height) and frames per second (python -m gbvnet.data.synthetic
    # --video-size camera writes videos at it).
    camera_size: tuple[int, int]
    camera_fps: float
    reader_options: tuple[ReaderOption, ...] = ()

    @property
    def reader(self) -> Reader:
        """The reader module, checked to provide the :class:`Reader` functions."""
        module = importlib.import_module(self.reader_module)
        if not isinstance(module, Reader):
            missing = [name for name in ("check_root", "subject_files", "read_subject") if not hasattr(module, name)]
            raise TypeError(f"dataset {self.name!r}: reader module {self.reader_module} lacks {', '.join(missing)}")
        return module

    def prepare_config(self, **overrides: Any) -> PrepareConfig:
        """The preparation defaults of this dataset with ``overrides`` (validated); ``reader`` overrides the
        reader options given (the others keep their defaults); an undeclared one, or a value outside its
        choices, is a :class:`~gbvnet.config.ConfigError`."""
        declared = {o.name: o for o in self.reader_options}
        given = overrides.pop("reader", None) or {}
        for name, value in given.items():
            if name not in declared:
                raise ConfigError(f"{self.name} has no reader option {name!r} (its options: "
                                  f"{', '.join(declared) or 'none'})")
            if declared[name].choices and value not in declared[name].choices:
                raise ConfigError(f"{declared[name].flag} must be one of {', '.join(declared[name].choices)} for "
                                  f"{self.name}, got {value!r}")
        reader = {name: given.get(name, option.default) for name, option in declared.items()}
        return PrepareConfig(**{**self.prepare_defaults, **overrides, "reader": reader}).validate()

    def write_synthetic(self, out: str | Path, **size: Any) -> dict:
        """Write a synthetic corpus in this dataset's layout at ``out``; returns its truth manifest (see
        :mod:`gbvnet.data.synthetic`)."""
        return self.writer(out, **size)


BUILTIN_DATASETS = ("gbvnet.data.deap", "gbvnet.data.mahnob", "gbvnet.data.amigos")
DATASETS_VARIABLE = "GBVNET_DATASETS"  # further dataset modules, comma-separated


class _Registry(MutableMapping):
    """The datasets by name, in the order of their modules (built-in first, then ``GBVNET_DATASETS``'s, then
    those registered otherwise). Every look imports the dataset modules (one imported already costs a lookup in
    ``sys.modules``), so a module named in ``GBVNET_DATASETS`` after the first look counts too."""

    def __init__(self) -> None:
        self._entries: dict[str, Dataset] = {}

    def _loaded(self) -> dict[str, Dataset]:
        for module in BUILTIN_DATASETS:
            importlib.import_module(module)
        named = [m.strip() for m in os.environ.get(DATASETS_VARIABLE, "").split(",") if m.strip()]
        for module in named:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"{DATASETS_VARIABLE} names {module!r}, which cannot be imported ({exc}): put "
                                  "its folder on PYTHONPATH or fix the variable") from exc
        order = {module: k for k, module in enumerate((*BUILTIN_DATASETS, *named))}
        return dict(sorted(self._entries.items(), key=lambda item: order.get(item[1].reader_module, len(order))))

    def __getitem__(self, name: str) -> Dataset:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __setitem__(self, name: str, entry: Dataset) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]


DATASETS = _Registry()
"""The datasets, by name: the one list (see the module docstring)."""


def register_dataset(entry: Dataset) -> Dataset:
    """Add a dataset to :data:`DATASETS` (a name taken already is an error); its module calls it at its bottom."""
    if entry.name in DATASETS._entries:
        raise ValueError(f"dataset {entry.name!r} is registered already")
    DATASETS[entry.name] = entry
    return entry


def get_dataset(name: str) -> Dataset:
    """The registry entry of ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
