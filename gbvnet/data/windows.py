"""Cut a trial into fixed windows inside its stimulus, after filtering / resampling with mne.

Windows start at the first sample at or after ``stim_start`` and never extend past ``stim_end``: the baseline
and post-stimulus parts of a recording are never part of a window. Labels are binarised as
``rating > threshold`` (high = 1). Face frames for a window are evenly spaced inside it (centres of ``frames``
equal slices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gbvnet.config import PrepareConfig
from gbvnet.data.records import DataError, TrialRecord


@dataclass
class TrialWindows:
    """The windows of one trial: their signals and times."""

    bio: np.ndarray  # (n_windows, channels, window_samples) float32 (from cut; a view from windows)
    t_start: np.ndarray  # (n_windows,) seconds on the recording clock
    frame_times: np.ndarray  # (n_windows, frames) seconds on the recording clock


def preprocess(record: TrialRecord, cfg: PrepareConfig) -> np.ndarray:
    """Band-pass (``l_freq``/``h_freq``, if set) and resample to ``cfg.rate``; float64 channels x samples.

    mne is imported here, when first needed: signals that are neither filtered nor resampled (DEAP's and AMIGOS's,
    by default) are prepared without loading it."""
    data = record.bio
    if cfg.l_freq is None and cfg.h_freq is None and math.isclose(record.sfreq, cfg.rate):
        return data
    import mne

    if cfg.l_freq is not None or cfg.h_freq is not None:
        h_freq = cfg.h_freq if cfg.h_freq is None or cfg.h_freq < record.sfreq / 2 else None
        data = mne.filter.filter_data(np.asarray(data, dtype=np.float64), record.sfreq, cfg.l_freq, h_freq,
                                      verbose="error")
    if not math.isclose(record.sfreq, cfg.rate):
        data = mne.filter.resample(np.asarray(data, dtype=np.float64), up=cfg.rate, down=record.sfreq,
                                   verbose="error")
    return data


def window_times(record: TrialRecord, cfg: PrepareConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(t_start, frame_times)`` of the windows of ``record`` (see :class:`TrialWindows`), from its stimulus and
    length alone: no signal is read, so a trial's video can be read while its signals are filtered. A stimulus
    shorter than a window is a :class:`DataError`."""
    rate, size = cfg.rate, cfg.window_samples
    step = int(round(cfg.stride * rate))
    first = max(0, math.ceil(round(record.stim_start * rate, 6)))
    # exclusive end of usable samples; resampling keeps at least floor(duration * rate) samples
    last = math.floor(round(min(record.stim_end, record.duration) * rate, 6))
    if last - first < size:
        raise DataError(record.source_files[0] if record.source_files else f"trial {record.trial}",
                        f"window of {cfg.window:g} s is longer than the stimulus of subject {record.subject} "
                        f"trial {record.trial} ({max(0, last - first) / rate:.2f} s)")
    t_start = (first + step * np.arange((last - first - size) // step + 1)) / rate
    offsets = (np.arange(cfg.frames) + 0.5) * cfg.window / cfg.frames
    return t_start, t_start[:, None] + offsets[None, :]


def windows(record: TrialRecord, cfg: PrepareConfig) -> TrialWindows:
    """Like :func:`cut`, but ``bio`` is a read-only strided *view* ``(n, C, T)`` of the preprocessed trial
    (float64 where mne filtered or resampled, else the reader's dtype): no copy is made, the caller copies it
    once into its own buffer (:func:`gbvnet.prepare.prepare_subject` converts to float32 on the way)."""
    t_start, frame_times = window_times(record, cfg)
    data = preprocess(record, cfg)
    step, size = int(round(cfg.stride * cfg.rate)), cfg.window_samples
    first = int(round(t_start[0] * cfg.rate))
    if cfg.baseline_norm:
        if first < 1:
            raise DataError(record.source_files[0] if record.source_files else f"trial {record.trial}",
                            "baseline normalisation needs a pre-stimulus baseline")
        base = data[:, :first]
        data = (data - base.mean(1, keepdims=True)) / (base.std(1, keepdims=True) + 1e-8)
    # windows k = 0..n-1 start at first + k * step: a basic slice of the sliding view, so still no copy
    view = np.lib.stride_tricks.sliding_window_view(data, size, axis=1)[:, first:first + (len(t_start) - 1) * step + 1:step]
    return TrialWindows(view.transpose(1, 0, 2), t_start, frame_times)


def cut(record: TrialRecord, cfg: PrepareConfig) -> TrialWindows:
    """The windows of one trial (see the module docstring); a stimulus shorter than a window is an error.

    ``bio`` is a new ``(n_windows, channels, window_samples)`` float32 array.
    """
    w = windows(record, cfg)
    return TrialWindows(np.ascontiguousarray(w.bio, dtype=np.float32), w.t_start, w.frame_times)


def binarise(rating: float, threshold: float) -> int:
    return int(rating > threshold)
