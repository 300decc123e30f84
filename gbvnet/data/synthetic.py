"""Synthetic DEAP, MAHNOB-HCI and AMIGOS corpora in the official on-disk layouts, with a known, learnable signal.

    python -m gbvnet.data.synthetic --format deap --out data/synthetic/deap --subjects 3 --trials 4
    python -m gbvnet.data.synthetic --format mahnob --out data/synthetic/mahnob --subjects 2 --trials 4
    python -m gbvnet.data.synthetic --format amigos --out data/synthetic/amigos --subjects 2 --trials 4

Nothing in the readers knows that a corpus is synthetic. DEAP (:func:`write_deap`)::

    data_preprocessed_python/sNN.dat       Python-2-style pickle (protocol 2, numpy arrays as Python 2 writes
                                           them) of {'labels': T x 4, 'data': T x 40 x 8064 float64}, rows in
                                           video (Experiment_id) order: 3 s baseline + 60 s stimulus at 128 Hz
    metadata_csv/participant_ratings.csv   official columns; the presentation order (Trial) is a shuffle
    face_video/sNN/sNN_trialMM.avi         subjects 1-22, MM = presentation order, from bio time 0 (63 s)

MAHNOB-HCI (:func:`write_mahnob`), session ids laid out as in the real release (subject s, trial k:
``130 (s - 1) + 2k``)::

    Sessions/<id>/session.xml                           felt ratings, <subject>, Video and Physiological tracks
    Sessions/<id>/Part_<s>_S_Trial<k>_emotion.bdf        BioSemi BDF, 256 Hz, the 47 official channels; 30 s
                                                        before and after the stimulus; Status pulses at
                                                        stimulus onset and offset
    Sessions/<id>/P<s>-Rec1-<date>_C1 trigger _C_Section_<n>.avi   colour face video from stimulus onset to 5 s
                                                        after its end (see gbvnet.data.mahnob on sync)

plus, per subject, one implicit-tagging session without felt ratings (readers skip and count it). AMIGOS
(:func:`write_amigos`)::

    data_preprocessed/Data_Preprocessed_PNN.mat    MATLAB v5 (scipy.io.savemat): joined_data (1 x n cell of
                                                   samples x 17 at 128 Hz: 5 s baseline, then the stimulus),
                                                   labels_selfassessment, labels_ext_annotation, VideoIDs
    face_videos/P<s>_<VideoID>_face.mov            the trial from its first sample; Motion JPEG in QuickTime

Videos are MJPG (AVI; AMIGOS: Motion JPEG in QuickTime .mov, as OpenCV writes no H.264 here), by default 96 x 96 at 10 fps (small and fast for tests); ``video_size`` / ``video_fps`` (``--video-size``,
``--video-fps``) write them at the cameras' size instead, ``CAMERA["deap"]`` (720 x 576 at 50 fps) and
``CAMERA["mahnob"]`` (780 x 580 at 60 fps), ``CAMERA["amigos"]`` (1280 x 720 at 25 fps), with the face at ~40 % of the frame height. ``synthetic_truth.json``
at the root (not part of the official layouts) holds the manifest the writers return.

The signal. Per subject and target, half the trials are rated high (> 5) and half low (DEAP: continuous ratings
in [5.5, 9] or [1, 4.5]; MAHNOB: integers 6-9 or 1-5). Each trial has a latent per target,
``x = sign * (0.5 + |rating - 5| / 8)`` with ``sign = +1`` for high; in ``round(label_noise * T)`` trials per
subject and target the sign is flipped, so their signals contradict their rating (label noise). During the
stimulus the signals follow ``offset_subject + x``, outside it ``offset_subject`` alone:

* valence: frontal alpha asymmetry (for x > 0, alpha lower over the left frontal electrodes Fp1/AF3/F3/F7/FC5/FC1
  and higher over the right ones; reversed for x < 0), zygomatic EMG amplitude (DEAP zEMG), mouth curvature
  (smile vs frown);
* arousal: 21 Hz beta power over all EEG, skin conductance level (DEAP and AMIGOS GSR; MAHNOB GSR1 is skin
  resistance, so it falls), heart rate (DEAP plethysmograph, MAHNOB ECG EXG1-3, AMIGOS ECG_Right/Left),
  breathing rate, raised brows and wider eyes.

EEG rhythms are narrow-band noise (alpha at the subject's alpha frequency, 9-11 Hz), not pure sines, so their
phase wanders as in real EEG. Each subject has its own latent offsets (up to +-0.6 against latents of magnitude
0.5-1; the baseline shows them alone), channel gains, alpha frequency, heart rate, skin conductance, skin tone,
hair and face position/size, so cross-subject prediction is harder than within-subject prediction. A model that recovered every trial's
latents exactly would reach an accuracy of ``1 - round(label_noise * T) / T`` per target (0.9 for the default
label_noise 0.1 and 40 or 20 trials), and no model can do better in expectation: the flipped trials are
unlearnable by construction.

A trial signature (``trial_signature=S``, ``--trial-signature S``; default 0, none) adds to every trial, while the
stimulus runs, an offset on each EEG channel drawn per trial and channel (S times the EEG's RMS times a standard
normal), unrelated to the ratings: what makes real trials recognisable whatever the emotion (electrode drift,
impedance, posture). A split that puts windows of one trial in training and test (``segment-random``) can then
score by recognising the trial; splits that keep trials apart cannot (``python -m evaluation.gap`` shows the
difference).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.io import savemat
from scipy.signal import butter, lfilter, sosfilt

from gbvnet.data.amigos import (
    AMIGOS_BASELINE,
    AMIGOS_CHANNELS,
    AMIGOS_EEG,
    AMIGOS_SFREQ,
    FACE_NAMES,
    LONG_VIDEOS,
    SHORT_VIDEOS,
    is_short,
)
from gbvnet.data.deap import DEAP_CHANNELS, DEAP_SAMPLES, DEAP_SFREQ, DEAP_STIM_START, RATINGS_CSV, dat_path
from gbvnet.data.deap import video_path as deap_video_path
from gbvnet.data.mahnob import BDF_CHANNELS

VIDEO_SIZE = 96
VIDEO_FPS = 10.0
CAMERA = {"deap": ((720, 576), 50.0), "mahnob": ((780, 580), 60.0),  # (width, height), fps of the real cameras
          "amigos": ((1280, 720), 25.0)}
NO_LONG_VIDEOS = (8, 24, 28)  # AMIGOS participants without the long videos
CAMERA_FACE = 0.4  # face height (before the subject's scale) as a share of a camera-size frame's height
MAHNOB_SFREQ = 256
MAHNOB_PRE = 30.0  # seconds of recording before the stimulus (as in the official BDFs)
MAHNOB_POST = 30.0
MAHNOB_SELF_REPORT = 5.0  # seconds of video after the stimulus
STATUS_CODE = 0x100000  # Status bits set throughout (BioSemi system bits above the 16 trigger bits)
TRIGGER = 16  # trigger code of the stimulus onset and offset pulses
TRUTH_FILE = "synthetic_truth.json"

_EEG_CHANNELS = 32  # the first 32 channels of both layouts
_EEG_RMS = 6.6  # uV: RMS of the synthetic EEG (background 4.8, alpha 4.2, beta 1.8)
_LEFT_FRONTAL = ("Fp1", "AF3", "F3", "F7", "FC5", "FC1")
_RIGHT_FRONTAL = ("Fp2", "AF4", "F4", "F8", "FC6", "FC2")
_DIGITAL = (-(2**23), 2**23 - 1)
_UNSCALED = ("GSR", "Temperature", "GSR1", "GSR2", "Temp", "Status")  # levels that carry no per-subject gain
_UNITS = {"GSR1": "Ohm", "GSR2": "Ohm", "Temp": "degC", "Status": "Boolean"}


# ----------------------------------------------------------------------------------------------- file formats
def _pickle_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _pickle_int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def write_deap_dat(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a DEAP ``.dat``: a protocol-2 pickle of a dict, with the opcodes Python 2 numpy emits.

    Arrays use ``numpy.core.multiarray._reconstruct`` and carry their bytes as a Python 2 ``str`` (BINSTRING), so
    the file loads with ``pickle.load(f, encoding="latin1")`` exactly like the official files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x80\x02}(")
        for key, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            f.write(_pickle_str(key.encode()))
            f.write(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _pickle_int(0) + b"\x85"
                    + _pickle_str(b"b") + b"\x87R(" + _pickle_int(1) + b"("
                    + b"".join(_pickle_int(d) for d in arr.shape) + b"t")
            f.write(b"cnumpy\ndtype\n" + _pickle_str(arr.dtype.str[1:].encode()) + _pickle_int(0) + _pickle_int(1)
                    + b"\x87R(" + _pickle_int(3) + _pickle_str(arr.dtype.str[:1].encode()) + b"NNN"
                    + _pickle_int(-1) + _pickle_int(-1) + _pickle_int(0) + b"tb")
            f.write(b"\x89T" + struct.pack("<I", arr.nbytes))
            f.write(memoryview(arr).cast("B"))
            f.write(b"tb")
        f.write(b"u.")


def _ascii(value: Any, width: int) -> bytes:
    text = str(value).encode("ascii")
    if len(text) > width:
        raise ValueError(f"BDF header field {value!r} is longer than {width} characters")
    return text.ljust(width)


def write_bdf(path: str | Path, channels: list[str], data: np.ndarray, sfreq: int,
              units: list[str] | None = None, start: datetime = datetime(2009, 7, 9, 17, 53, 46)) -> None:
    """Write a BioSemi BDF file (24-bit samples, 1 s data records).

    ``data`` is channels x samples in physical units (default ``uV``); a channel named ``Status`` holds integer
    trigger words (physical = digital range). Samples are padded to whole records with the last value.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_ch, n = data.shape
    units = units or [_UNITS.get(name, "uV") for name in channels]
    n_rec = -(-n // sfreq)
    data = np.pad(data, ((0, 0), (0, n_rec * sfreq - n)), mode="edge")
    lo, hi = np.floor(data.min(1)) - 1, np.ceil(data.max(1)) + 1
    status = np.array([name == "Status" for name in channels])
    lo[status], hi[status] = _DIGITAL
    dmin, dmax = _DIGITAL
    digital = np.where(status[:, None], data, (data - lo[:, None]) / (hi - lo)[:, None] * (dmax - dmin) + dmin)
    digital = np.clip(np.rint(digital), dmin, dmax).astype("<i4")
    header = [b"\xffBIOSEMI", _ascii(f"X X X Subj{path.stem[:60]}", 80),
              _ascii(f"Startdate {start:%d-%b-%Y}".upper() + " X X BIOSEMI", 80),
              _ascii(f"{start:%d.%m.%y}", 8), _ascii(f"{start:%H.%M.%S}", 8), _ascii(256 * (n_ch + 1), 8),
              _ascii("24BIT", 44), _ascii(n_rec, 8), _ascii(1, 8), _ascii(n_ch, 4)]
    per_channel = [
        (channels, 16),
        (["Triggers and Status" if s else "Active Electrode" for s in status], 80),
        (units, 8), ([int(v) for v in lo], 8), ([int(v) for v in hi], 8), ([dmin] * n_ch, 8), ([dmax] * n_ch, 8),
        (["No filtering" if s else "HP:DC; LP:52 Hz" for s in status], 80), ([sfreq] * n_ch, 8), ([""] * n_ch, 32),
    ]
    header += [_ascii(v, width) for values, width in per_channel for v in values]
    records = digital.reshape(n_ch, n_rec, sfreq).transpose(1, 0, 2)
    samples = np.ascontiguousarray(records).view(np.uint8).reshape(n_rec, n_ch, sfreq, 4)[..., :3]
    with open(path, "wb") as f:
        f.write(b"".join(header))
        f.write(np.ascontiguousarray(samples).tobytes())


# ---------------------------------------------------------------------------------------------- ground truth
@dataclass
class _Subject:
    """Everything that makes one synthetic person differ from another."""

    offset_v: float
    offset_a: float
    alpha_hz: float
    heart_bpm: float
    conductance: float
    gains: np.ndarray
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    dx: int
    dy: int
    scale: float


def _subject(rng: np.random.Generator, channels: tuple[str, ...]) -> _Subject:
    t = rng.uniform()
    gains = np.where(np.isin(channels, _UNSCALED), 1.0, rng.uniform(0.7, 1.3, len(channels)))
    skin = tuple(int(a + (b - a) * t) for a, b in zip((95, 125, 175), (170, 200, 235), strict=True))
    hair = tuple(int(v) for v in rng.integers(10, 70, 3))
    return _Subject(offset_v=rng.uniform(-0.6, 0.6), offset_a=rng.uniform(-0.6, 0.6), alpha_hz=rng.uniform(9, 11),
                    heart_bpm=rng.uniform(60, 80), conductance=rng.uniform(0.7, 1.3),
                    gains=gains, skin=skin, hair=hair,  # type: ignore[arg-type]
                    dx=int(rng.integers(-5, 6)), dy=int(rng.integers(-5, 6)), scale=rng.uniform(0.85, 1.05))


def _ratings(rng: np.random.Generator, n: int, label_noise: float, integer: bool):
    """Per target: ratings (balanced high/low), latents and which trials are noisy."""
    out = {}
    for target in ("valence", "arousal"):
        high = rng.permutation(np.arange(n) % 2 == 0)
        if integer:
            rating = np.where(high, rng.integers(6, 10, n), rng.integers(1, 6, n)).astype(float)
        else:
            rating = np.where(high, rng.uniform(5.5, 9, n), rng.uniform(1, 4.5, n)).round(2)
        noisy = np.zeros(n, bool)
        noisy[rng.choice(n, int(round(label_noise * n)), replace=False)] = True
        latent = np.where(high, 1.0, -1.0) * (0.5 + np.abs(rating - 5) / 8) * np.where(noisy, -1.0, 1.0)
        out[target] = (rating, latent, noisy)
    return out


# -------------------------------------------------------------------------------------------------- signals
def _phase(rate_hz: np.ndarray, sfreq: float) -> np.ndarray:
    return 2 * np.pi * np.cumsum(rate_hz) / sfreq


def _eeg(rng, t, xv, xa, subj: _Subject, names) -> np.ndarray:
    """EEG channels ``names`` (the first of the subject's channels) in uV: 1/f background, alpha with frontal
    asymmetry ~ valence, beta ~ arousal."""
    asym = np.array([-1.0 if c in _LEFT_FRONTAL else 1.0 if c in _RIGHT_FRONTAL else 0.0 for c in names])
    sfreq, shape = 1.0 / (t[1] - t[0]), (len(names), t.size)
    background = lfilter([1.0], [1.0, -0.95], rng.standard_normal(shape), axis=1) * 1.5
    alpha = 6.0 * (1 + 0.5 * asym[:, None] * xv) * _rhythm(rng, subj.alpha_hz, sfreq, shape)
    beta = 2.5 * (1 + 0.6 * xa) * _rhythm(rng, 21.0, sfreq, shape)
    return (background + alpha + beta) * subj.gains[:len(names), None]


def _rhythm(rng, hz: float, sfreq: float, shape: tuple[int, int]) -> np.ndarray:
    """An EEG rhythm: noise band-passed to ``hz`` +- 1 Hz, with the RMS of a unit-amplitude sine per channel.

    Its phase and amplitude wander as real rhythms do; a pure sine would keep the same phase in every window of
    a trial (when the window holds whole cycles): a per-trial fingerprint a network memorises instead of learning
    the band power.
    """
    x = sosfilt(butter(2, [hz - 1, hz + 1], btype="bandpass", fs=sfreq, output="sos"), rng.standard_normal(shape))
    return x * (np.sqrt(0.5) / x.std(-1, keepdims=True))


def _heart(xa, sfreq, subj: _Subject) -> np.ndarray:
    """Phase of the heartbeat (rate ~ arousal)."""
    return _phase((subj.heart_bpm + 12 * xa) / 60, sfreq)


def _ecg(xa, sfreq, subj: _Subject) -> np.ndarray:
    """An ECG lead in uV (R peak and T wave; heart rate ~ arousal)."""
    beat = np.mod(_heart(xa, sfreq, subj), 2 * np.pi) - np.pi
    return 800 * np.exp(-(beat**2) / (2 * 0.05**2)) + 150 * np.exp(-((beat - 1.2) ** 2) / (2 * 0.3**2))


def _signature_course(t, start, end, signature: np.ndarray) -> np.ndarray:
    """The trial's EEG offsets (:func:`_signatures`) while the stimulus runs, zero outside it."""
    return signature[:, None] * ((t >= start) & (t < end))


def _latent_courses(t, start, end, subj: _Subject, xv: float, xa: float):
    active = ((t >= start) & (t < end)).astype(float)
    return subj.offset_v + xv * active, subj.offset_a + xa * active


def _deap_trial(rng, subj: _Subject, xv: float, xa: float, signature: np.ndarray) -> np.ndarray:
    t = np.arange(DEAP_SAMPLES) / DEAP_SFREQ
    v, a = _latent_courses(t, DEAP_STIM_START, t[-1] + 1, subj, xv, xa)
    noise = rng.standard_normal((6, t.size))
    blinks = np.convolve(rng.random(t.size) < 0.3 / DEAP_SFREQ, np.hanning(25) * 150, mode="same")
    heart = _heart(a, DEAP_SFREQ, subj)
    peripheral = np.stack([
        lfilter([1.0], [1.0, -0.98], noise[0]) * 3,  # hEOG
        noise[1] * 10 + blinks,  # vEOG
        noise[2] * 4 * np.clip(1 + 0.7 * v, 0.15, None),  # zEMG
        noise[3] * 4,  # tEMG
        1000 * subj.conductance * (1 + 0.3 * a) + noise[4] * 5,  # GSR
        600 * np.sin(_phase(0.25 + 0.08 * a, DEAP_SFREQ)),  # Respiration belt
        1000 * np.maximum(np.sin(heart), 0) ** 2,  # Plethysmograph
        32.5 + 0.2 * (subj.conductance - 1) + 0.01 * noise[5],  # Temperature
    ])  # fmt: skip
    eeg = _eeg(rng, t, v, a, subj, DEAP_CHANNELS[:32]) + _signature_course(t, DEAP_STIM_START, t[-1] + 1, signature)
    return np.concatenate([eeg, peripheral * subj.gains[32:, None]])


def _mahnob_trial(rng, subj: _Subject, xv: float, xa: float, duration: float, signature: np.ndarray) -> np.ndarray:
    n = int(round((MAHNOB_PRE + duration + MAHNOB_POST) * MAHNOB_SFREQ))
    t = np.arange(n) / MAHNOB_SFREQ
    v, a = _latent_courses(t, MAHNOB_PRE, MAHNOB_PRE + duration, subj, xv, xa)
    ecg = _ecg(a, MAHNOB_SFREQ, subj)
    noise = rng.standard_normal((12, n))
    status = np.full(n, STATUS_CODE, dtype=float)
    for onset in (MAHNOB_PRE, MAHNOB_PRE + duration):
        i = int(round(onset * MAHNOB_SFREQ))
        status[i:i + 13] += TRIGGER
    rows = {name: noise[k] * 10 for k, name in enumerate(("EXG4", "EXG5", "EXG6", "EXG7", "EXG8", "Erg1", "Erg2"))}
    rows |= {
        "EXG1": ecg + noise[7] * 5, "EXG2": -0.8 * ecg + noise[8] * 5, "EXG3": 1.3 * ecg + noise[9] * 5,
        "GSR1": 1e6 / (subj.conductance * (1 + 0.3 * a)) + noise[10] * 200,
        "GSR2": 1e6 / subj.conductance + noise[11] * 200,
        "Resp": 600 * np.sin(_phase(0.25 + 0.08 * a, MAHNOB_SFREQ)),
        "Temp": np.full(n, 32.5 + 0.2 * (subj.conductance - 1)),
    }
    eeg = _eeg(rng, t, v, a, subj, BDF_CHANNELS[:32]) + _signature_course(t, MAHNOB_PRE, MAHNOB_PRE + duration,
                                                                          signature)
    other = np.stack([rows[name] * g for name, g in zip(BDF_CHANNELS[32:-1], subj.gains[32:-1], strict=True)])
    return np.concatenate([eeg, other, status[None]])


# --------------------------------------------------------------------------------------------------- faces
def _face_px(frame: tuple[int, int]) -> int:
    """The unscaled face size in a ``(width, height)`` frame: the whole default frame, 40 % of a camera's."""
    return VIDEO_SIZE if frame == (VIDEO_SIZE, VIDEO_SIZE) else int(CAMERA_FACE * frame[1])


def _draw_face(v: float, a: float, subj: _Subject, jitter: tuple[int, int] = (0, 0),
               frame: tuple[int, int] = (VIDEO_SIZE, VIDEO_SIZE)) -> np.ndarray:
    """A cartoon face that OpenCV's frontal-face Haar cascade detects: mouth curvature ~ v, brows/eyes ~ a.

    ``frame``: (width, height); ``jitter`` and the subject's offsets are in units of 1/96 of the face size.
    """
    width, height = frame
    size = _face_px(frame)
    s, unit = size * subj.scale, size / VIDEO_SIZE
    img = np.repeat(np.linspace(40, 90, height, dtype=np.uint8)[:, None], width, 1)[..., None].repeat(3, 2)
    cx = width // 2 + int(unit * (subj.dx + jitter[0]))
    cy = height // 2 + int(unit * (subj.dy + jitter[1])) + int(0.04 * size)
    shade = tuple(int(c * 0.7) for c in subj.skin)
    cv2.ellipse(img, (cx, cy - int(0.12 * s)), (int(0.30 * s) + 3, int(0.40 * s)), 0, 180, 360, subj.hair, -1,
                cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy), (int(0.30 * s), int(0.40 * s)), 0, 0, 360, subj.skin, -1, cv2.LINE_AA)
    eye_y = cy - int(0.10 * s)
    for side in (-1, 1):
        ex = cx + side * int(0.12 * s)
        cv2.ellipse(img, (ex, eye_y), (int(0.075 * s), int(0.045 * s)), 0, 0, 360, shade, -1, cv2.LINE_AA)
        opening = max(1, int((0.035 + 0.015 * a) * s))
        cv2.ellipse(img, (ex, eye_y), (int(0.055 * s), opening), 0, 0, 360, (240, 240, 240), -1, cv2.LINE_AA)
        cv2.circle(img, (ex, eye_y), max(1, int(0.025 * s)), (20, 20, 20), -1, cv2.LINE_AA)
        brow_y = eye_y - int((0.07 + 0.025 * a) * s)
        cv2.line(img, (ex - int(0.06 * s), brow_y + int(0.01 * s)), (ex + int(0.06 * s), brow_y), (30, 30, 40),
                 max(1, int(0.025 * s)), cv2.LINE_AA)
    nose_y = cy + int(0.06 * s)
    cv2.line(img, (cx, eye_y + int(0.02 * s)), (cx - int(0.02 * s), nose_y), shade, max(2, int(0.02 * s)),
             cv2.LINE_AA)
    xs = np.linspace(-1, 1, 21)
    mouth = np.stack([cx + xs * 0.11 * s, cy + 0.20 * s - v * 0.06 * s * (2 * xs**2 - 1)], 1)
    cv2.polylines(img, [mouth.astype(np.int32)], False, (40, 30, 120), max(1, int(0.03 * s)), cv2.LINE_AA)
    return img


def _write_video(path: Path, rng, subj: _Subject, xv: float, xa: float, start: float, end: float,
                 length: float, frame: tuple[int, int] = (VIDEO_SIZE, VIDEO_SIZE), fps: float = VIDEO_FPS,
                 fourcc: str = "MJPG") -> None:
    """``length`` seconds of face video (Motion JPEG: ``fourcc`` is its tag in the container, ``MJPG`` in AVI,
    ``jpeg`` in QuickTime); the expression shows between ``start`` and ``end`` (video time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    variants = {}
    for expressive in (False, True):
        v, a = subj.offset_v + xv * expressive, subj.offset_a + xa * expressive
        variants[expressive] = [_draw_face(v + rng.normal(0, 0.05), a + rng.normal(0, 0.05), subj,
                                           tuple(int(j) for j in rng.integers(-1, 2, 2)), frame) for _ in range(4)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, frame)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write {fourcc} video")
    for k in range(int(round(length * fps))):
        t = k / fps
        writer.write(variants[start <= t < end][int(rng.integers(4))])
    writer.release()


# -------------------------------------------------------------------------------------------------- corpora
def _subjects(seed: int, subjects: int, channels: tuple[str, ...], trials: int, label_noise: float,
              integer: bool, trial_signature: float = 0.0) -> Iterator[tuple[int, np.random.Generator, _Subject, dict]]:
    """For subjects 1..``subjects``: the number, the corpus's generator (``seed``), the subject's traits and its
    trials' ratings, with each trial's signature under ``"signature"`` (:func:`_signatures`). Each subject's
    traits and ratings are drawn before the caller draws its trials, so a corpus is a function of its seed."""
    rng = np.random.default_rng(seed)
    for s in range(1, subjects + 1):
        subject = _subject(rng, channels)
        ratings = _ratings(rng, trials, label_noise, integer=integer)
        ratings["signature"] = _signatures(seed, s, trials, trial_signature)
        yield s, rng, subject, ratings


def _signatures(seed: int, subject: int, trials: int, strength: float) -> np.ndarray:
    """Per trial, an offset (uV) of each EEG channel during the stimulus: ``strength`` times the EEG's RMS times a
    standard normal draw per trial and channel, unrelated to the ratings (zeros for ``strength`` 0).

    It stands for what makes a real trial recognisable whatever the emotion (electrode drift, impedance or
    posture that change between trials). A split that puts windows of one trial in training and test can score
    by recognising the trial from it; a split that keeps trials apart cannot. Drawn from a generator of its own,
    so a corpus without signatures is the same as before the option existed.
    """
    if strength < 0:
        raise ValueError(f"trial_signature must be >= 0, got {strength}")
    if strength == 0:
        return np.zeros((trials, _EEG_CHANNELS))
    return strength * _EEG_RMS * np.random.default_rng([seed, subject, 1]).standard_normal((trials, _EEG_CHANNELS))


def _write_truth(out: Path, truth: dict) -> dict:
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    return truth


def write_deap(out: str | Path, subjects: int = 3, trials: int = 40, seed: int = 0, video: bool = True,
               label_noise: float = 0.1, video_size: tuple[int, int] = (VIDEO_SIZE, VIDEO_SIZE),
               video_fps: float = VIDEO_FPS, trial_signature: float = 0.0) -> dict:
    """Write a DEAP-layout corpus for subjects 1..``subjects`` (videos for 1-22, ``video_size`` = (width,
    height) at ``video_fps``); return the truth manifest.

    The manifest: ``{"format", "seed", "label_noise", "trial_signature", "trials": [{"subject", "trial" (Experiment_id),
    "presentation" (Trial), "valence", "arousal", "noisy_valence", "noisy_arousal", "video" (relative path or
    None)}, ...]}``.
    """
    if not 1 <= trials <= 40 or subjects < 1:
        raise ValueError(f"need subjects >= 1 and 1 <= trials <= 40, got {subjects} and {trials}")
    out = Path(out)
    rows, truth = [], []
    for s, rng, subj, r in _subjects(seed, subjects, DEAP_CHANNELS, trials, label_noise, integer=False,
                                     trial_signature=trial_signature):
        presentation = rng.permutation(trials) + 1  # presentation[k] = Trial of Experiment_id k + 1
        data = np.empty((trials, len(DEAP_CHANNELS), DEAP_SAMPLES))
        labels = np.column_stack([r["valence"][0], r["arousal"][0], rng.uniform(1, 9, (trials, 2)).round(2)])
        for k in range(trials):
            xv, xa = r["valence"][1][k], r["arousal"][1][k]
            data[k] = _deap_trial(rng, subj, xv, xa, r["signature"][k])
            vid = None
            if video and s <= 22:
                vid = deap_video_path(out, s, int(presentation[k]))
                _write_video(vid, rng, subj, xv, xa, DEAP_STIM_START, 1e9, DEAP_SAMPLES / DEAP_SFREQ, video_size,
                             video_fps)
            rows.append([s, int(presentation[k]), k + 1, int(presentation[k]) * 90_000_000, *labels[k],
                         int(rng.integers(1, 5))])
            truth.append({"subject": s, "trial": k + 1, "presentation": int(presentation[k]),
                          "valence": float(labels[k, 0]), "arousal": float(labels[k, 1]),
                          "noisy_valence": bool(r["valence"][2][k]), "noisy_arousal": bool(r["arousal"][2][k]),
                          "video": None if vid is None else str(vid.relative_to(out))})
        write_deap_dat(dat_path(out, s), {"labels": labels, "data": data})
    (out / RATINGS_CSV).parent.mkdir(parents=True, exist_ok=True)
    with open(out / RATINGS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Participant_id", "Trial", "Experiment_id", "Start_time", "Valence", "Arousal",
                         "Dominance", "Liking", "Familiarity"])
        writer.writerows(sorted(rows, key=lambda row: (row[0], row[1])))
    return _write_truth(out, {"format": "deap", "seed": seed, "label_noise": label_noise,
                              "trial_signature": trial_signature, "trials": truth})


def _session_xml(path: Path, attrs: dict[str, str], subject: int, tracks: list[dict[str, str]]) -> None:
    root = ET.Element("session", attrs)
    ET.SubElement(root, "subject", {"id": str(subject)})
    for track in tracks:
        ET.SubElement(root, "track", track)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_mahnob(out: str | Path, subjects: int = 2, trials: int = 20, seed: int = 0, duration: float = 12.0,
                 video: bool = True, label_noise: float = 0.1, video_size: tuple[int, int] = (VIDEO_SIZE, VIDEO_SIZE),
                 video_fps: float = VIDEO_FPS, trial_signature: float = 0.0) -> dict:
    """Write a MAHNOB-HCI-layout corpus (``duration`` s stimuli; colour videos of ``video_size`` = (width,
    height) at ``video_fps``); return the truth manifest.

    The manifest: ``{"format", "seed", "label_noise", "trial_signature", "trials": [{"subject", "trial" (session id), "valence",
    "arousal", "noisy_valence", "noisy_arousal", "bdf", "video" (relative paths; video may be None)}, ...],
    "unrated": [relative session.xml paths without felt ratings]}``.
    """
    if not 1 <= trials <= 64 or subjects < 1 or duration < 1:
        raise ValueError(f"need subjects >= 1, 1 <= trials <= 64 and duration >= 1 s, got {subjects}, {trials}, "
                         f"{duration}")
    out = Path(out)
    truth, unrated = [], []
    for s, rng, subj, r in _subjects(seed, subjects, BDF_CHANNELS, trials, label_noise, integer=True,
                                     trial_signature=trial_signature):
        base = 130 * (s - 1)
        for k in range(1, trials + 1):
            sid = base + 2 * k
            folder = out / "Sessions" / str(sid)
            xv, xa = r["valence"][1][k - 1], r["arousal"][1][k - 1]
            bdf = folder / f"Part_{s}_S_Trial{k}_emotion.bdf"
            write_bdf(bdf, list(BDF_CHANNELS), _mahnob_trial(rng, subj, xv, xa, duration, r["signature"][k - 1]),
                      MAHNOB_SFREQ)
            tracks = [{"type": "Physiological", "id": "0", "filename": bdf.name}]
            vid = None
            if video:
                vid = folder / f"P{s}-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_{2 * k}.avi"
                _write_video(vid, rng, subj, xv, xa, 0.0, duration, duration + MAHNOB_SELF_REPORT, video_size,
                             video_fps)
                tracks.insert(0, {"type": "Video", "id": "1", "color": "1", "filename": vid.name})
            felt = {"valence": int(r["valence"][0][k - 1]), "arousal": int(r["arousal"][0][k - 1])}
            _session_xml(folder / "session.xml", {
                "cutNr": str(2 * k), "isStim": "1", "experimentType": "emotion", "sessionId": str(sid),
                "date": "2009-07-09", "mediaFile": f"{k}.avi", "cutLenSec": f"{duration:g}",
                "vidRate": f"{video_fps:g}", "feltEmo": str(int(rng.integers(0, 7))),
                "feltArsl": str(felt["arousal"]), "feltVlnc": str(felt["valence"]),
                "feltCtrl": str(int(rng.integers(1, 10))), "feltPred": str(int(rng.integers(1, 10))),
            }, s, tracks)  # fmt: skip
            truth.append({"subject": s, "trial": sid, **felt, "noisy_valence": bool(r["valence"][2][k - 1]),
                          "noisy_arousal": bool(r["arousal"][2][k - 1]), "bdf": str(bdf.relative_to(out)),
                          "video": None if vid is None else str(vid.relative_to(out))})
        tagging_id = base + 2 * trials + 1  # odd: never one of the subject's emotion sessions
        tagging = out / "Sessions" / str(tagging_id) / "session.xml"
        _session_xml(tagging, {"cutNr": "1", "isStim": "1", "experimentType": "tagging",
                               "sessionId": str(tagging_id), "date": "2009-07-09", "mediaFile": "tag1.jpg"}, s, [])
        unrated.append(str(tagging.relative_to(out)))
    return _write_truth(out, {"format": "mahnob", "seed": seed, "label_noise": label_noise,
                              "trial_signature": trial_signature, "trials": truth,
                              "unrated": unrated})


def _amigos_trial(rng, subj: _Subject, xv: float, xa: float, duration: float) -> np.ndarray:
    """One AMIGOS trial, samples x 17: the 5 s baseline, then ``duration`` s of stimulus."""
    t = np.arange(int(round((AMIGOS_BASELINE + duration) * AMIGOS_SFREQ))) / AMIGOS_SFREQ
    v, a = _latent_courses(t, AMIGOS_BASELINE, t[-1] + 1, subj, xv, xa)
    ecg, noise = _ecg(a, AMIGOS_SFREQ, subj), rng.standard_normal((3, t.size))
    other = np.stack([ecg + noise[0] * 5, -0.8 * ecg + noise[1] * 5,  # ECG_Right, ECG_Left
                      1000 * subj.conductance * (1 + 0.3 * a) + noise[2] * 5])  # GSR: skin conductance level
    eeg = _eeg(rng, t, v, a, subj, AMIGOS_EEG)
    return np.concatenate([eeg, other * subj.gains[len(AMIGOS_EEG):, None]]).T


def _cell(items: list) -> np.ndarray:
    """A 1 x n MATLAB cell array (for scipy.io.savemat)."""
    cell = np.empty((1, len(items)), dtype=object)
    for k, item in enumerate(items):
        cell[0, k] = item
    return cell


def write_amigos(out: str | Path, subjects: int = 2, trials: int = 16, seed: int = 0, duration: float = 12.0,
                 long_trials: int = 0, long_duration: float = 30.0, video: bool = True, label_noise: float = 0.1,
                 video_size: tuple[int, int] = (VIDEO_SIZE, VIDEO_SIZE), video_fps: float = VIDEO_FPS) -> dict:
    """Write an AMIGOS-layout corpus: per participant ``data_preprocessed/Data_Preprocessed_PNN.mat`` (MATLAB
    v5: ``joined_data``, ``labels_selfassessment``, ``labels_ext_annotation``, ``VideoIDs``) with ``trials``
    short videos of ``duration`` s (the first of the 16 official VideoIDs) and ``long_trials`` long ones of
    ``long_duration`` s (N1 P1 B1 U1; empty, as in the release, for participants 8, 24 and 28), each after the
    5 s baseline; and ``face_videos/P<id>_<VideoID>_face.mov`` (Motion JPEG in QuickTime, ``video_size`` at
    ``video_fps``) covering each recorded trial. Returns the truth manifest.

    The manifest: ``{"format", "seed", "label_noise", "trials": [{"subject", "trial" (position, 1-based),
    "video_id", "valence", "arousal", "noisy_valence", "noisy_arousal", "mat", "video" (relative paths; video may
    be None)}, ...], "empty": [[participant, trial], ...]}``.
    """
    if not 1 <= trials <= len(SHORT_VIDEOS) or not 0 <= long_trials <= len(LONG_VIDEOS) or subjects < 1 \
            or min(duration, long_duration) < 1:
        raise ValueError(f"need subjects >= 1, 1 <= trials <= 16, 0 <= long_trials <= 4 and durations >= 1 s, got "
                         f"{subjects}, {trials}, {long_trials}, {duration}, {long_duration}")
    out = Path(out)
    ids = [*SHORT_VIDEOS[:trials], *LONG_VIDEOS[:long_trials]]
    truth, empty = [], []
    for s, rng, subj, r in _subjects(seed, subjects, AMIGOS_CHANNELS, len(ids), label_noise, integer=False):
        mat = out / "data_preprocessed" / f"Data_Preprocessed_P{s:02d}.mat"
        data, labels, annotations = [], [], []
        for k, video_id in enumerate(ids):
            if s in NO_LONG_VIDEOS and not is_short(video_id):
                data.append(np.zeros((0, 0)))
                labels.append(np.zeros((1, 0)))
                annotations.append(np.zeros((0, 0)))
                empty.append([s, k + 1])
                continue
            length = duration if is_short(video_id) else long_duration
            xv, xa = r["valence"][1][k], r["arousal"][1][k]
            data.append(_amigos_trial(rng, subj, xv, xa, length))
            arousal, valence = r["arousal"][0][k], r["valence"][0][k]
            labels.append(np.concatenate([[arousal, valence], rng.uniform(1, 9, 3).round(2),
                                          rng.random(7) < 0.2])[None])
            annotations.append(rng.uniform(-1, 1, (max(1, int(length // 20)), 3)).round(2))  # not read
            vid = None
            if video:
                vid = out / "face_videos" / FACE_NAMES.format(participant=s, video=video_id)
                _write_video(vid, rng, subj, xv, xa, AMIGOS_BASELINE, 1e9, AMIGOS_BASELINE + length, video_size,
                             video_fps, fourcc="jpeg")
            truth.append({"subject": s, "trial": k + 1, "video_id": video_id, "valence": float(valence),
                          "arousal": float(arousal), "noisy_valence": bool(r["valence"][2][k]),
                          "noisy_arousal": bool(r["arousal"][2][k]), "mat": str(mat.relative_to(out)),
                          "video": None if vid is None else str(vid.relative_to(out))})
        mat.parent.mkdir(parents=True, exist_ok=True)
        savemat(mat, {"joined_data": _cell(data), "labels_selfassessment": _cell(labels),
                      "labels_ext_annotation": _cell(annotations), "VideoIDs": _cell(ids)}, format="5")
    return _write_truth(out, {"format": "amigos", "seed": seed, "label_noise": label_noise, "trials": truth,
                              "empty": empty})


# The writer of each dataset's layout (the registry, gbvnet.data.registry, names the same functions), by dataset.
WRITERS = {"deap": write_deap, "mahnob": write_mahnob, "amigos": write_amigos}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gbvnet.data.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--format", choices=WRITERS, required=True, help="the dataset whose layout to write")
    p.add_argument("--out", required=True, help="root folder of the corpus (created)")
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--trials", type=int, help="trials per subject (default: DEAP 40, MAHNOB 20, AMIGOS 16 short)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, help="MAHNOB / AMIGOS short stimulus length in seconds (default 12)")
    p.add_argument("--long-trials", type=int, help="AMIGOS long videos per participant, 0-4 (default 0)")
    p.add_argument("--label-noise", type=float, default=0.1, help="fraction of trials whose signal contradicts")
    p.add_argument("--trial-signature", type=float, metavar="S",
                   help="DEAP / MAHNOB: give every trial an EEG offset pattern unrelated to its ratings, S times the "
                        "EEG's RMS (default 0: none); a leaky split scores by recognising the trial (evaluation.gap)")
    p.add_argument("--no-video", action="store_true", help="write no face videos")
    p.add_argument("--video-size", default=f"{VIDEO_SIZE}x{VIDEO_SIZE}",
                   help="WIDTHxHEIGHT of the face videos, or 'camera' for the real camera's (DEAP 720x576, MAHNOB "
                        "780x580, AMIGOS 1280x720)")
    p.add_argument("--video-fps", type=float, help="frames per second (default: 10, or the camera's with "
                                                   "--video-size camera: DEAP 50, MAHNOB 60, AMIGOS 25)")
    args = p.parse_args(argv)
    camera_size, camera_fps = CAMERA[args.format]
    if args.video_size == "camera":
        size, fps = camera_size, args.video_fps or camera_fps
    else:
        try:
            size = tuple(int(v) for v in args.video_size.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 48:
            p.error(f"--video-size must be WIDTHxHEIGHT (each >= 48) or 'camera', got {args.video_size!r}")
        fps = args.video_fps or VIDEO_FPS
    if fps <= 0:
        p.error(f"--video-fps must be > 0, got {fps}")
    size_args = {"subjects": args.subjects, "seed": args.seed, "video": not args.no_video,
                 "label_noise": args.label_noise, "video_size": size, "video_fps": fps}
    size_args |= {name: value for name, value in (("trials", args.trials), ("duration", args.duration),
                                                  ("long_trials", args.long_trials),
                                                  ("trial_signature", args.trial_signature)) if value is not None}
    for name in size_args.keys() - inspect.signature(WRITERS[args.format]).parameters.keys():
        p.error(f"--{name.replace('_', '-')} does not apply to {args.format}")
    truth = WRITERS[args.format](args.out, **size_args)
    print(f"wrote {len(truth['trials'])} {args.format} trials of {args.subjects} subjects to {args.out} "
          f"(truth: {Path(args.out) / TRUTH_FILE})")


if __name__ == "__main__":
    main()
