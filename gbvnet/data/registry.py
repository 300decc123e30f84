"""The dataset registry: every dataset the project knows, with its reader, its preparation defaults and its
synthetic demo corpus. Where a run's window cache comes from (a prepared cache, a real download, or a synthetic
corpus) is :mod:`gbvnet.data.sources`.

:data:`DATASETS` is the one list: ``gbvnet.prepare`` reads a dataset's files with its reader and prepares it with
its defaults, and the ``--dataset`` choices of every front-end (``gbvnet.prepare``, ``evaluation.*``,
``tune/search.py``) are its keys. Adding a dataset is one :class:`Dataset` entry here plus its reader module (and
a writer in :mod:`gbvnet.data.synthetic` for its layout). A reader's own options (AMIGOS: which videos) are
declared in its entry (:class:`ReaderOption`): ``gbvnet.prepare`` offers each as a flag, the cache's
preparation config records them (``PrepareConfig.reader``, so a change re-prepares) and the reader receives them
as keyword arguments.

Importing this module is cheap (no mne, OpenCV or scipy): the CLIs list the datasets before they know whether
they will prepare anything, so readers and writers are imported on first use.
"""

from __future__ import annotations

import importlib
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
    # The reader module, a Reader (imported on first use: the MAHNOB reader pulls in mne); its own options, as
    # reader_options declares, reach subject_files and read_subject as keyword arguments.
    reader_module: str
    # Preparation defaults: the PrepareConfig fields that differ from PrepareConfig's own defaults.
    prepare_defaults: dict[str, Any]
    # The gbvnet.data.synthetic function that writes a corpus in this dataset's layout, and the size of the
    # --synthetic demo corpus (its keyword arguments).
    synthetic_writer: str
    demo_size: dict[str, Any]
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
        from gbvnet.data import synthetic

        return getattr(synthetic, self.synthetic_writer)(out, **size)


# DEAP's data_preprocessed_python and AMIGOS's preprocessed .mat files are already band-passed (4-45 Hz) and at
# 128 Hz, so they are not filtered again; MAHNOB-HCI raw BDFs are low-passed at 45 Hz (and resampled from 256 to
# 128 Hz, PrepareConfig.rate). AMIGOS prepares its 16 short videos by default: the 4 long ones (14-23 minutes,
# 37 participants) are --videos long or all.
# The demo corpora: small enough for a LOSO run on 2 CPU cores within minutes, large enough to learn from (MAHNOB:
# 6 subjects x 10 trials of 24 s = 80 windows per subject; 6 subjects let a one-sided Wilcoxon test reach p < 0.05).
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(name="deap", reader_module="gbvnet.data.deap", prepare_defaults={"h_freq": None},
            synthetic_writer="write_deap", demo_size={"subjects": 4, "trials": 8, "seed": 0}),
    Dataset(name="mahnob", reader_module="gbvnet.data.mahnob", prepare_defaults={"h_freq": 45.0},
            synthetic_writer="write_mahnob", demo_size={"subjects": 6, "trials": 10, "duration": 24.0, "seed": 0}),
    Dataset(name="amigos", reader_module="gbvnet.data.amigos", prepare_defaults={"h_freq": None},
            synthetic_writer="write_amigos", demo_size={"subjects": 6, "trials": 10, "duration": 24.0, "seed": 0},
            reader_options=(
                ReaderOption("videos", "short", "AMIGOS trials to prepare: the 16 short videos (default), the 4 "
                             "long ones, or all", ("short", "long", "all")),
                ReaderOption("face_names", "P{participant}_{video}_face.mov",
                             "AMIGOS face video file names, searched for under --root ({participant}: the number, "
                             "zero-padded or not; {video}: the VideoID)"),
            )),
)}

def get_dataset(name: str) -> Dataset:
    """The registry entry of ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
