"""Synthetic corpora in the datasets' official on-disk layouts, with a known, learnable signal.

    python -m gbvnet.data.synthetic --dataset deap --out data/synthetic/deap --n-subjects 3 --trials 4
    python -m gbvnet.data.synthetic --dataset mahnob --out data/synthetic/mahnob --n-subjects 2 --trials 4
    python -m gbvnet.data.synthetic --dataset amigos --out data/synthetic/amigos --n-subjects 2 --trials 4

``--dataset`` is any registered dataset (:data:`gbvnet.data.registry.DATASETS`): each dataset's module holds the
writer of its layout (:func:`gbvnet.data.deap.write_deap`, :func:`gbvnet.data.mahnob.write_mahnob`,
:func:`gbvnet.data.amigos.write_amigos`, whose docstrings show the files they write), built from what this module
shares: the subjects and their ratings (:func:`draw_subjects`), the latent signal's courses
(:func:`latent_courses`), EEG, ECG and heartbeat signals (:func:`eeg`, :func:`ecg`, :func:`heart`,
:func:`phase`, :func:`signature_course`), face videos (:func:`write_video`), BioSemi BDF and DEAP pickle files
(:func:`write_bdf`, :func:`write_deap_dat`) and the truth manifest (:func:`write_truth`). Nothing in the readers
knows that a corpus is synthetic.

Videos are Motion JPEG (MJPG in AVI, or in QuickTime .mov, as OpenCV writes no H.264 here), by default 96 x 96
at 10 fps (small and fast for tests); ``video_size`` / ``video_fps`` (``--video-size``, ``--video-fps``) write
them at the size and rate of the dataset's real camera (its registry entry's ``camera_size`` and
``camera_fps``), with the face at ~40 % of the frame height.
``synthetic_truth.json`` at the root (not part of the official layouts) holds the manifest the writers return.

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
import inspect
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from gbvnet.cli import CommandParser, add_dataset_argument, exit_on_interrupt, hidden_alias, one_line_errors
from gbvnet.data.registry import DATASETS, get_dataset

VIDEO_SIZE = 96
VIDEO_FPS = 10.0
CAMERA_FACE = 0.4  # face height (before the subject's scale) as a share of a camera-size frame's height
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
class Subject:
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


def _subject(rng: np.random.Generator, channels: tuple[str, ...]) -> Subject:
    t = rng.uniform()
    gains = np.where(np.isin(channels, _UNSCALED), 1.0, rng.uniform(0.7, 1.3, len(channels)))
    skin = tuple(int(a + (b - a) * t) for a, b in zip((95, 125, 175), (170, 200, 235), strict=True))
    hair = tuple(int(v) for v in rng.integers(10, 70, 3))
    return Subject(offset_v=rng.uniform(-0.6, 0.6), offset_a=rng.uniform(-0.6, 0.6), alpha_hz=rng.uniform(9, 11),
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
def phase(rate_hz: np.ndarray, sfreq: float) -> np.ndarray:
    """The phase (radians) of an oscillation whose rate (Hz) follows ``rate_hz``, sampled at ``sfreq``."""
    return 2 * np.pi * np.cumsum(rate_hz) / sfreq


def eeg(rng, t, xv, xa, subj: Subject, names) -> np.ndarray:
    """EEG channels ``names`` (the first of the subject's channels) in uV: 1/f background, alpha with frontal
    asymmetry ~ valence, beta ~ arousal."""
    from scipy.signal import lfilter

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
    from scipy.signal import butter, sosfilt

    x = sosfilt(butter(2, [hz - 1, hz + 1], btype="bandpass", fs=sfreq, output="sos"), rng.standard_normal(shape))
    return x * (np.sqrt(0.5) / x.std(-1, keepdims=True))


def heart(xa, sfreq, subj: Subject) -> np.ndarray:
    """Phase of the heartbeat (rate ~ arousal)."""
    return phase((subj.heart_bpm + 12 * xa) / 60, sfreq)


def ecg(xa, sfreq, subj: Subject) -> np.ndarray:
    """An ECG lead in uV (R peak and T wave; heart rate ~ arousal)."""
    beat = np.mod(heart(xa, sfreq, subj), 2 * np.pi) - np.pi
    return 800 * np.exp(-(beat**2) / (2 * 0.05**2)) + 150 * np.exp(-((beat - 1.2) ** 2) / (2 * 0.3**2))


def signature_course(t, start, end, signature: np.ndarray) -> np.ndarray:
    """The trial's EEG offsets (:func:`_signatures`) while the stimulus runs, zero outside it."""
    return signature[:, None] * ((t >= start) & (t < end))


def latent_courses(t, start, end, subj: Subject, xv: float, xa: float):
    """The valence and arousal courses over the times ``t`` (s): the subject's offsets, plus the trial's latents
    ``xv`` / ``xa`` from ``start`` to ``end`` (the stimulus)."""
    active = ((t >= start) & (t < end)).astype(float)
    return subj.offset_v + xv * active, subj.offset_a + xa * active


# --------------------------------------------------------------------------------------------------- faces
def _face_px(frame: tuple[int, int]) -> int:
    """The unscaled face size in a ``(width, height)`` frame: the whole default frame, 40 % of a camera's."""
    return VIDEO_SIZE if frame == (VIDEO_SIZE, VIDEO_SIZE) else int(CAMERA_FACE * frame[1])


def _draw_face(v: float, a: float, subj: Subject, jitter: tuple[int, int] = (0, 0),
               frame: tuple[int, int] = (VIDEO_SIZE, VIDEO_SIZE)) -> np.ndarray:
    """A cartoon face that OpenCV's frontal-face Haar cascade detects: mouth curvature ~ v, brows/eyes ~ a.

    ``frame``: (width, height); ``jitter`` and the subject's offsets are in units of 1/96 of the face size.
    """
    import cv2

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


def write_video(path: Path, rng, subj: Subject, xv: float, xa: float, start: float, end: float,
                length: float, frame: tuple[int, int] = (VIDEO_SIZE, VIDEO_SIZE), fps: float = VIDEO_FPS,
                fourcc: str = "MJPG") -> None:
    """``length`` seconds of face video (Motion JPEG: ``fourcc`` is its tag in the container, ``MJPG`` in AVI,
    ``jpeg`` in QuickTime); the expression shows between ``start`` and ``end`` (video time)."""
    import cv2

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
def draw_subjects(seed: int, subjects: int, channels: tuple[str, ...], trials: int, label_noise: float,
                  integer: bool, trial_signature: float = 0.0
                  ) -> Iterator[tuple[int, np.random.Generator, Subject, dict]]:
    """For subjects 1..``subjects``: the number, the corpus's generator (``seed``), the subject's traits
    (``channels``: its layout's channel names) and its trials' ratings, ``{"valence": (ratings, latents, noisy),
    "arousal": (...), "signature": ...}`` (ratings balanced high / low, integers with ``integer``; the latent of
    each trial, flipped where noisy; each trial's signature, :func:`_signatures`). Each subject's traits and
    ratings are drawn before the caller draws its trials, so a corpus is a function of its seed."""
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


def write_truth(out: Path, truth: dict) -> dict:
    """Write the truth manifest ``truth`` to ``out``/``synthetic_truth.json``; return it (a writer's result)."""
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    return truth


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m gbvnet.data.synthetic``."""
    p = CommandParser(prog="python -m gbvnet.data.synthetic", description=__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group(required=True)  # --dataset, or its old spelling
    add_dataset_argument(which, required=False)
    hidden_alias(which, "--format", "dataset", choices=DATASETS)
    p.add_argument("--out", required=True, help="root folder of the corpus (created)")
    p.add_argument("--n-subjects", type=int, default=3, help="how many subjects (default 3)")
    hidden_alias(p, "--subjects", "n_subjects", type=int)  # --subjects names subject ids in the other commands
    p.add_argument("--trials", type=int, help="trials per subject (default: DEAP 40, MAHNOB 20, AMIGOS 16 short)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus's random draw (subjects, signals, videos)")
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
    return p


def main(argv: list[str] | None = None) -> None:
    with one_line_errors(), exit_on_interrupt(note="the corpus may be incomplete: write it again"):
        write_corpus(build_parser(), argv)


def write_corpus(p: argparse.ArgumentParser, argv: list[str] | None) -> None:
    """The corpus the flags ``argv`` of ``p`` (:func:`build_parser`) ask for, written."""
    args = p.parse_args(argv)
    entry = get_dataset(args.dataset)
    if args.video_size == "camera":
        size, fps = entry.camera_size, args.video_fps or entry.camera_fps
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
    size_args = {"subjects": args.n_subjects, "seed": args.seed, "video": not args.no_video,
                 "label_noise": args.label_noise, "video_size": size, "video_fps": fps}
    size_args |= {name: value for name, value in (("trials", args.trials), ("duration", args.duration),
                                                  ("long_trials", args.long_trials),
                                                  ("trial_signature", args.trial_signature)) if value is not None}
    for name in size_args.keys() - inspect.signature(entry.writer).parameters.keys():
        p.error(f"--{name.replace('_', '-')} does not apply to {args.dataset}")
    truth = entry.write_synthetic(args.out, **size_args)
    print(f"wrote {len(truth['trials'])} {args.dataset} trials of {args.n_subjects} subjects to {args.out} "
          f"(truth: {Path(args.out) / TRUTH_FILE})")


if __name__ == "__main__":
    main()
