"""The dataset registry: every dataset the project knows, with its reader, its preparation defaults and its
synthetic demo corpus. Where a run's window cache comes from (a prepared cache, a real download, or a synthetic
corpus) is :mod:`gbvnet.sources`.

:data:`DATASETS` is the one list: ``gbvnet.prepare`` reads a dataset's files with its reader and prepares it with
its defaults, and the ``--dataset`` choices of every front-end (``gbvnet.prepare``, ``evaluation.*``,
``tune/search.py``) are its keys. Adding a dataset is one :class:`Dataset` entry here plus its reader module (and
a writer in :mod:`gbvnet.data.synthetic` for its layout).

Importing this module is cheap (no mne, OpenCV or scipy): the CLIs list the datasets before they know whether
they will prepare anything, so readers and writers are imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gbvnet.config import PrepareConfig

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
    # The reader module, a Reader (imported on first use: the MAHNOB reader pulls in mne).
    reader_module: str
    # Preparation defaults: the PrepareConfig fields that differ from PrepareConfig's own defaults.
    prepare_defaults: dict[str, Any]
    # The gbvnet.data.synthetic function that writes a corpus in this dataset's layout, and the size of the
    # --synthetic demo corpus (its keyword arguments).
    synthetic_writer: str
    demo_size: dict[str, Any]

    @property
    def reader(self) -> Reader:
        """The reader module, checked to provide the :class:`Reader` functions."""
        module = importlib.import_module(self.reader_module)
        if not isinstance(module, Reader):
            missing = [name for name in ("check_root", "subject_files", "read_subject") if not hasattr(module, name)]
            raise TypeError(f"dataset {self.name!r}: reader module {self.reader_module} lacks {', '.join(missing)}")
        return module

    def prepare_config(self, **overrides: Any) -> PrepareConfig:
        """The preparation defaults of this dataset with ``overrides`` (validated)."""
        return PrepareConfig(**{**self.prepare_defaults, **overrides}).validate()

    def write_synthetic(self, out: str | Path, **size: Any) -> dict:
        """Write a synthetic corpus in this dataset's layout at ``out``; returns its truth manifest (see
        :mod:`gbvnet.data.synthetic`)."""
        from gbvnet.data import synthetic

        return getattr(synthetic, self.synthetic_writer)(out, **size)


# DEAP's data_preprocessed_python is already band-passed (4-45 Hz) and at 128 Hz, so it is not filtered again;
# MAHNOB-HCI raw BDFs are low-passed at 45 Hz (and resampled from 256 to 128 Hz, PrepareConfig.rate).
# The demo corpora: small enough for a LOSO run on 2 CPU cores within minutes, large enough to learn from (MAHNOB:
# 6 subjects x 10 trials of 24 s = 80 windows per subject; 6 subjects let a one-sided Wilcoxon test reach p < 0.05).
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(name="deap", reader_module="gbvnet.data.deap", prepare_defaults={"h_freq": None},
            synthetic_writer="write_deap", demo_size={"subjects": 4, "trials": 8, "seed": 0}),
    Dataset(name="mahnob", reader_module="gbvnet.data.mahnob", prepare_defaults={"h_freq": 45.0},
            synthetic_writer="write_mahnob", demo_size={"subjects": 6, "trials": 10, "duration": 24.0, "seed": 0}),
)}

def get_dataset(name: str) -> Dataset:
    """The registry entry of ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
