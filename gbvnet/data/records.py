"""What a dataset reader yields: one record per trial. Nothing outside the readers knows file layouts."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ON_ERROR = ("fail", "skip")


class DataError(ValueError):
    """Bad input data. The message always names the offending file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable, so it crosses process (and Ray) boundaries intact
        return type(self), (self.path, self.problem)


@dataclass
class TrialRecord:
    """One trial of one subject, as read from the official files.

    Attributes:
        subject: the dataset's subject number (DEAP 1-32, MAHNOB subject id from session.xml).
        trial: the dataset's own trial id (DEAP Experiment_id 1-40, MAHNOB session id).
        bio: physiological signals, channels x samples, float64, in physical units (DEAP: as stored in the
            pickles; MAHNOB: SI units as mne returns them, e.g. volts for EEG/ECG).
        channels: channel names, one per row of ``bio``.
        sfreq: sampling rate of ``bio`` in Hz.
        stim_start, stim_end: the stimulus (video clip) in seconds from the first sample of ``bio``.
            Only windows inside [stim_start, stim_end] are ever cut.
        valence, arousal: self-reported (felt) ratings on the 1-9 scale.
        video: path of the face video, or None where the dataset has none for this trial.
        video_start: time in seconds, on the ``bio`` clock, that the video's first frame shows.
            A frame for bio time ``t`` is at video time ``t - video_start``.
        source_files: the files this record was read from (for the cache manifest).
    """

    subject: int
    trial: int
    bio: np.ndarray
    channels: list[str]
    sfreq: float
    stim_start: float
    stim_end: float
    valence: float
    arousal: float
    video: Path | None = None
    video_start: float = 0.0
    source_files: tuple[Path, ...] = ()

    @property
    def duration(self) -> float:
        return self.bio.shape[1] / self.sfreq


@dataclass
class ReadReport:
    """What a reader left out. Pass one to a reader to collect it; the reader also warns for each skip.

    Attributes:
        skipped: a skip record (see :func:`skip_record`) for every unit skipped with ``on_error="skip"``.
        unrated: MAHNOB ``session.xml`` files without felt valence/arousal (not an error: skipped and counted).
    """

    skipped: list[dict] = field(default_factory=list)
    unrated: list[str] = field(default_factory=list)


UNITS = ("subject", "trial", "face videos", "file")


def skip_record(error: DataError, unit: str, subject: int | None = None, trial: int | None = None) -> dict:
    """What was skipped and why, as the report and the manifest's ``skipped`` list it.

    ``unit`` names the smallest unit left out: a ``"subject"``, one ``"trial"`` (DEAP Experiment_id, MAHNOB
    session id), a subject's ``"face videos"`` (its signals are kept), or a ``"file"`` that belongs to no subject
    (a MAHNOB ``session.xml`` that cannot be parsed).
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    return {"unit": unit, "subject": subject, "trial": trial, "path": error.path, "problem": error.problem}


def describe(item: dict) -> str:
    """One line for a skip record: the unit, then the file and the problem."""
    subject = f"subject {item['subject']}" if item.get("subject") is not None else "all subjects"
    unit = {"subject": subject, "trial": f"{subject} trial {item['trial']}", "face videos": f"face videos of {subject}",
            "file": "file"}[item["unit"]]
    return f"{unit}: {item['path']}: {item['problem']}"


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def skip_or_raise(error: DataError, on_error: str, report: ReadReport | None, unit: str,
                  subject: int | None = None, trial: int | None = None) -> None:
    """Raise ``error`` (``on_error="fail"``) or warn and record it in ``report`` (``on_error="skip"``)."""
    if on_error == "fail":
        raise error
    warnings.warn(f"skipping {error}", stacklevel=3)
    if report is not None:
        report.skipped.append(skip_record(error, unit, subject, trial))
