"""Cut a trial into fixed windows inside its stimulus, after filtering / resampling with mne.

Windows start at the first sample at or after ``stim_start`` and never extend past ``stim_end``: the baseline
and post-stimulus parts of a recording are never part of a window. Labels are binarised as
``rating > threshold`` (high = 1). Face frames for a window are evenly spaced inside it (centres of ``frames``
equal slices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mne
import numpy as np

from gbvnet.config import PrepareConfig
from gbvnet.data.records import DataError, TrialRecord


@dataclass
class TrialWindows:
    bio: np.ndarray  # (n_windows, channels, window_samples) float32
    t_start: np.ndarray  # (n_windows,) seconds on the recording clock
    frame_times: np.ndarray  # (n_windows, frames) seconds on the recording clock


def preprocess(record: TrialRecord, cfg: PrepareConfig) -> np.ndarray:
    """Band-pass (``l_freq``/``h_freq``, if set) and resample to ``cfg.rate``; float64 channels x samples."""
    data = record.bio
    if cfg.l_freq is not None or cfg.h_freq is not None:
        h_freq = cfg.h_freq if cfg.h_freq is None or cfg.h_freq < record.sfreq / 2 else None
        data = mne.filter.filter_data(np.asarray(data, dtype=np.float64), record.sfreq, cfg.l_freq, h_freq,
                                      verbose="error")
    if not math.isclose(record.sfreq, cfg.rate):
        data = mne.filter.resample(np.asarray(data, dtype=np.float64), up=cfg.rate, down=record.sfreq,
                                   verbose="error")
    return data


def cut(record: TrialRecord, cfg: PrepareConfig) -> TrialWindows:
    """The windows of one trial (see the module docstring); a stimulus shorter than a window is an error."""
    data = preprocess(record, cfg)
    rate, size = cfg.rate, cfg.window_samples
    step = int(round(cfg.stride * rate))
    first = math.ceil(round(record.stim_start * rate, 6))
    last = min(math.floor(round(record.stim_end * rate, 6)), data.shape[1])  # exclusive end of usable samples
    if last - first < size:
        raise DataError(record.source_files[0] if record.source_files else f"trial {record.trial}",
                        f"window of {cfg.window:g} s is longer than the stimulus of subject {record.subject} "
                        f"trial {record.trial} ({(last - first) / rate:.2f} s)")
    starts = np.arange(first, last - size + 1, step)
    if cfg.baseline_norm:
        if first < 1:
            raise DataError(record.source_files[0], "baseline normalisation needs a pre-stimulus baseline")
        base = data[:, :first]
        data = (data - base.mean(1, keepdims=True)) / (base.std(1, keepdims=True) + 1e-8)
    view = np.lib.stride_tricks.sliding_window_view(data, size, axis=1)[:, starts]  # (C, n, size), no copy
    bio = np.ascontiguousarray(view.transpose(1, 0, 2), dtype=np.float32)
    t_start = starts / rate
    offsets = (np.arange(cfg.frames) + 0.5) * cfg.window / cfg.frames
    return TrialWindows(bio, t_start, t_start[:, None] + offsets[None, :])


def binarise(rating: float, threshold: float) -> int:
    return int(rating > threshold)
