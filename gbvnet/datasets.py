"""The dataset registry: every dataset the project knows, with its reader, its preparation defaults and its
synthetic demo corpus; and where a run's window cache comes from (a prepared cache, a real download, or a
synthetic corpus).

:data:`DATASETS` is the one list: ``gbvnet.prepare`` reads a dataset's files with its reader and prepares it with
its defaults, and the ``--dataset`` choices of every front-end (``gbvnet.prepare``, ``evaluation.*``,
``tune/search.py``) are its keys. Adding a dataset is one :class:`Dataset` entry here plus its reader module (and
a writer in :mod:`gbvnet.data.synthetic` for its layout). A reader's own options (AMIGOS: which videos) are
declared in its entry (:class:`ReaderOption`): ``gbvnet.prepare`` offers each as a flag, the cache's
preparation config records them (``PrepareConfig.reader``, so a change re-prepares) and the reader receives them
as keyword arguments.

``--synthetic`` writes a small corpus in the dataset's official layout once (``data/synthetic/<dataset>``) and
prepares it with the real readers; ``--root`` prepares a user's download (incrementally: unchanged subjects are
not redone); ``--cache`` alone uses an existing cache.

Importing this module is cheap (no mne, OpenCV or scipy): the CLIs list the datasets before they know whether
they will prepare anything, so readers and writers are imported on first use.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

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


@dataclass(frozen=True)
class Dataset:
    """One dataset: how to read it, how to prepare it by default, and how to write a synthetic corpus of it."""

    name: str
    # The reader module (imported on first use: the MAHNOB reader pulls in mne). It provides the uniform reader
    # interface gbvnet.prepare calls: check_root(root, on_error, report), subject_files(root, face, **options)
    # and read_subject(root, subject, on_error, report, face, **options), options as reader_options declares.
    reader_module: str
    # Preparation defaults: the PrepareConfig fields that differ from PrepareConfig's own defaults.
    prepare_defaults: dict[str, Any]
    # The gbvnet.data.synthetic function that writes a corpus in this dataset's layout, and the size of the
    # --synthetic demo corpus (its keyword arguments).
    synthetic_writer: str
    demo_size: dict[str, Any]
    reader_options: tuple[ReaderOption, ...] = ()

    @property
    def reader(self) -> ModuleType:
        return importlib.import_module(self.reader_module)

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

# The demo corpus's preparation: the dataset's defaults with 2 face frames of 32 x 32 (the face branch costs ~20x
# the bio branch per window on a CPU) and each trial's signals z-scored by its pre-stimulus baseline, which
# removes the per-subject offsets that the synthetic subjects (like real ones) carry.
SYNTHETIC_PREPARE = {"frames": 2, "face_size": 32, "baseline_norm": True}


def get_dataset(name: str) -> Dataset:
    """The registry entry of ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def synthetic_cache(dataset: str, root: str | Path, cache: str, *, size: dict[str, Any] | None = None,
                    prepare: dict[str, Any] | None = None, on_error: str = "fail", face: bool = True,
                    progress: bool = True) -> str:
    """Write a synthetic corpus of ``size`` (default: the demo's) at ``root`` unless one is there, and prepare it
    into ``cache`` (incrementally) with the dataset's defaults and the ``prepare`` overrides; returns ``cache``.

    The corpus is written under a temporary name and renamed when complete: an interrupted write is never reused.
    """
    from gbvnet.prepare import prepare_dataset

    entry, root = get_dataset(dataset), Path(root)
    if not root.exists():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        entry.write_synthetic(partial, **(entry.demo_size if size is None else size))
        partial.rename(root)
    prepare_dataset(dataset, root, cache, entry.prepare_config(**(prepare or {})), on_error=on_error, face=face,
                    progress=progress)
    return cache


def resolve_cache(dataset: str, *, root: str | None, synthetic: bool, cache: str | None,
                  on_error: str = "fail", need_face: bool = True) -> str:
    """Return the cache location to evaluate on, preparing it first (dataset defaults) where needed."""
    if synthetic:
        return synthetic_cache(dataset, Path("data/synthetic") / dataset, cache or f"data/cache/{dataset}-synthetic",
                               prepare=SYNTHETIC_PREPARE, on_error=on_error, face=need_face)
    if root is not None:
        from gbvnet.prepare import prepare_dataset

        cache = cache or f"data/cache/{dataset}"
        prepare_dataset(dataset, root, cache, on_error=on_error, face=need_face)  # the dataset's defaults
    if cache is None:
        raise ValueError("give --root (a dataset download), --synthetic, or --cache (a prepared window cache)")
    return cache
