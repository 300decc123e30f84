"""Reader for AMIGOS (Miranda-Correa et al., IEEE TAC 2018) in its official preprocessed layout.

Layout under ``root`` (any of the three places, one per participant)::

    data_preprocessed/Data_Preprocessed_PNN.mat                        flat, NN = 01..40
    Data_Preprocessed_PNN/Data_Preprocessed_PNN.mat                    a folder per participant
    Physiological Recordings/Matlab Preprocessed Data/Data_Preprocessed_PNN.mat   (flat or in folders too)
    **/P<id>_<VideoID>_face.mov                                        face videos, anywhere under root
                                                                       (extracted from their zip archives)

Each ``.mat`` is MATLAB v5 (read with :func:`scipy.io.loadmat`) holding

* ``joined_data``: 1 x 20 cell, each trial ``samples x 17`` at 128 Hz: the 14 Emotiv EEG channels
  ``AF3 F7 F3 FC5 T7 P7 O1 O2 P8 T8 FC6 F4 F8 AF4``, then ``ECG_Right``, ``ECG_Left``, ``GSR``; already
  band-passed (4-45 Hz) by the release, so not filtered again;
* ``labels_selfassessment``: 1 x 20 cell of 1 x 12: arousal, valence, dominance, liking, familiarity, then seven
  0/1 basic emotions (only arousal and valence are read);
* ``VideoIDs``: the stimulus of each trial, ``'4' ... '138'`` for the 16 short videos, ``N1 P1 B1 U1`` for the 4
  long ones (``labels_ext_annotation`` is not read).

A trial is short or long by its VideoID (numeric: short), which ``videos`` (``--videos short|long|all``) selects
from. ``trial`` is the trial's position in the cell arrays (1-20), ``subject`` the participant number.

Assumptions (the release does not state them; torcheeg reads the signals the same way): each trial starts with
the 5 s baseline before the video (``stim_start = 5.0``, ``stim_end`` = the trial's end), and the face video
covers the trial from its first sample (``video_start = 0.0``); a video whose length differs from the trial's by
more than 2 s is warned about (:func:`gbvnet.data.video.face_crops`), which is how a different cut shows.

Face videos are looked for under ``root`` by name, ``face_names`` (default ``P{participant}_{video}_face.mov``;
the participant number may be zero-padded). A selected trial without its video gets ``video=None`` and a warning
that lists what was found instead. With ``face=False`` (bio-only preparation) no video is looked for or opened.

Bad input: a v7.3 (HDF5) ``.mat`` or an unreadable one is a :class:`~gbvnet.data.records.DataError` for the
participant (skipped with ``on_error="skip"``). An empty trial (0 x 0; the long videos of participants 8, 24 and
28) is skipped in either mode, with a warning and a skip record naming participant and trial (it is a gap in the
release, not damage). A trial with non-finite samples, a malformed trial or a rating below 1 (or missing) is an
error naming participant and trial, or a skipped trial with ``on_error="skip"``. A rating above 9 (they occur) is
clipped to 9 with a warning.

The module is the whole dataset (:mod:`gbvnet.data.registry`): the reader, :func:`write_amigos` (a synthetic corpus
in this layout, for ``--synthetic`` and the tests) and, at its bottom, its registry entry.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from gbvnet.data import synthetic
from gbvnet.data.records import DataError, ReadReport, TrialRecord, check_on_error, skip_or_raise
from gbvnet.data.registry import Dataset, ReaderOption, register_dataset

AMIGOS_EEG: tuple[str, ...] = ("AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8",
                               "AF4")
AMIGOS_CHANNELS: tuple[str, ...] = (*AMIGOS_EEG, "ECG_Right", "ECG_Left", "GSR")
AMIGOS_SFREQ = 128.0
AMIGOS_BASELINE = 5.0  # seconds before the video in every trial
SHORT_VIDEOS = ("4", "5", "9", "10", "13", "18", "19", "20", "23", "30", "31", "34", "36", "58", "80", "138")
LONG_VIDEOS = ("N1", "P1", "B1", "U1")
VIDEOS = ("short", "long", "all")
FACE_NAMES = "P{participant}_{video}_face.mov"
RATING_COLUMNS = ("arousal", "valence")  # the first two of labels_selfassessment's 12
# Where the .mat files are, relative to root: flat, or one folder per participant.
MAT_PLACES = ("", "data_preprocessed", "Physiological Recordings/Matlab Preprocessed Data")

_MAT_NAME = re.compile(r"Data_Preprocessed_P(\d+)\.mat")
_VIDEO_SUFFIXES = (".mov", ".mp4", ".avi", ".mkv", ".zip")


def is_short(video_id: str) -> bool:
    """Whether ``video_id`` names one of the short videos (numeric ids; the long ones are N1 P1 B1 U1)."""
    return video_id.isdigit()


def selected(video_id: str, videos: str) -> bool:
    """Whether a trial of ``video_id`` is among ``videos`` (short, long or all)."""
    if videos not in VIDEOS:
        raise ValueError(f"videos must be one of {VIDEOS}, got {videos!r}")
    return videos == "all" or is_short(video_id) == (videos == "short")


def mat_files(root: str | Path) -> dict[int, Path]:
    """``{participant: .mat}`` found in any of the three layouts; a participant found twice is an error."""
    root = Path(root)
    found: dict[int, Path] = {}
    for place in MAT_PLACES:
        for pattern in ("Data_Preprocessed_P*.mat", "*/Data_Preprocessed_P*.mat"):
            for path in sorted((root / place).glob(pattern)):
                match = _MAT_NAME.fullmatch(path.name)
                if not match:
                    continue
                participant = int(match.group(1))
                if participant in found and found[participant].resolve() != path.resolve():
                    raise DataError(path, f"participant {participant} is also in {found[participant]}; keep one "
                                          "copy of each Data_Preprocessed_PNN.mat")
                found.setdefault(participant, path)
    return dict(sorted(found.items()))


def face_pattern(face_names: str) -> re.Pattern:
    """The file-name pattern of ``face_names`` (``{participant}``: an optionally zero-padded number,
    ``{video}``: a VideoID)."""
    if face_names.count("{participant}") != 1 or face_names.count("{video}") != 1:
        raise DataError("--face-names", f"{face_names!r} must contain {{participant}} and {{video}} once each, "
                                        f"e.g. {FACE_NAMES}")
    parts = re.split(r"(\{participant\}|\{video\})", face_names)
    groups = {"{participant}": r"0*(?P<participant>\d+)", "{video}": r"(?P<video>[A-Za-z0-9]+)"}
    return re.compile("".join(groups.get(part, re.escape(part)) for part in parts))


def face_videos(root: str | Path, face_names: str = FACE_NAMES) -> dict[int, dict[str, Path]]:
    """``{participant: {VideoID: path}}`` of every file under ``root`` named as ``face_names`` says."""
    pattern = face_pattern(face_names)
    found: dict[int, dict[str, Path]] = {}
    for path in sorted(Path(root).rglob("*")):
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found.setdefault(int(match.group("participant")), {}).setdefault(match.group("video"), path)
    return found


def amigos_subject_files(root: str | Path, face: bool = True, videos: str = "short",
                         face_names: str = FACE_NAMES) -> dict[int, list[Path]]:
    """The source files of each participant (its ``.mat`` and, with ``face``, the face videos of the selected
    trials) for the cache manifest."""
    mats = mat_files(root)
    found = face_videos(root, face_names) if face else {}
    return {s: [mat, *(p for video, p in sorted(found.get(s, {}).items()) if selected(video, videos))]
            for s, mat in mats.items()}


def check_amigos_root(root: str | Path, on_error: str = "fail", report: ReadReport | None = None) -> None:
    """Raise a :class:`DataError` saying what is expected when ``root`` holds no AMIGOS participant file (or one
    participant twice)."""
    root = Path(root)
    if not mat_files(root):
        what = "does not exist" if not root.exists() else "holds no Data_Preprocessed_PNN.mat"
        raise DataError(root, f"{what}; --root must be the AMIGOS download folder (Data_Preprocessed_P01.mat ... "
                              "flat in data_preprocessed/, in a folder per participant, or under Physiological "
                              "Recordings/Matlab Preprocessed Data/; face videos extracted anywhere under it)")


def _cells(path: Path, mat: dict, name: str) -> np.ndarray:
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(path, f"no variable {name!r} (found: {', '.join(found) or 'none'}); expected an AMIGOS "
                              "Data_Preprocessed_PNN.mat")
    return np.asarray(mat[name]).ravel()


def _video_id(value) -> str:
    """A VideoIDs cell as text (a MATLAB string arrives as an array of one string, or of characters)."""
    flat = np.ravel(value)
    return "".join(str(v) for v in flat).strip()


def load_mat(path: str | Path) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``(joined_data cell, labels_selfassessment cell, VideoID)`` per trial of one participant's ``.mat``."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=("joined_data", "labels_selfassessment", "VideoIDs"))
    except NotImplementedError:  # scipy's answer to a v7.3 file
        raise DataError(path, "is a MATLAB v7.3 (HDF5) file, which this reader does not read: use the v5 .mat of "
                              "the official download, or re-save it in MATLAB/Octave with save(file, '-v7')") from None
    except Exception as exc:  # truncated or not a .mat: scipy raises many types
        raise DataError(path, f"not a readable MATLAB v5 .mat ({type(exc).__name__}: {exc})") from exc
    data, labels = _cells(path, mat, "joined_data"), _cells(path, mat, "labels_selfassessment")
    ids = [_video_id(v) for v in _cells(path, mat, "VideoIDs")]
    if not len(data) == len(labels) == len(ids):
        raise DataError(path, f"joined_data, labels_selfassessment and VideoIDs hold {len(data)}, {len(labels)} and "
                              f"{len(ids)} trials; they must match")
    return [(np.asarray(d), np.asarray(lab), v) for d, lab, v in zip(data, labels, ids, strict=True)]


def _ratings(path: Path, where: str, labels: np.ndarray) -> tuple[float, float]:
    """Arousal and valence of one trial; above 9 clipped (with a warning), below 1 or missing an error."""
    try:
        flat = labels.astype(np.float64).ravel()
    except (TypeError, ValueError):
        raise DataError(path, f"{where}: labels_selfassessment is not numeric ({labels.dtype})") from None
    if flat.size < len(RATING_COLUMNS):
        raise DataError(path, f"{where}: labels_selfassessment holds {flat.size} values, expected 12")
    values = []
    for name, value in zip(RATING_COLUMNS, flat[:2], strict=True):
        if not value >= 1:  # NaN too
            raise DataError(path, f"{where}: {name} rating {value:g} is not on the 1-9 scale")
        if value > 9:
            warnings.warn(f"{path}: {where}: {name} rating {value:g} is above 9; clipped to 9", stacklevel=4)
            value = 9.0
        values.append(float(value))
    return values[0], values[1]


def _missing_video(root: Path, subject: int, where: str, video_id: str, face_names: str,
                   found: dict[str, Path]) -> None:
    expected = face_names.format(participant=subject, video=video_id)
    if found:
        instead = f"found for participant {subject}: {', '.join(sorted(p.name for p in found.values()))}"
    else:
        others = sorted(p.name for p in root.rglob("*") if p.suffix.lower() in _VIDEO_SUFFIXES)
        instead = (f"found no face video of participant {subject}; video files and archives under the root: "
                   f"{', '.join(others[:8]) + (' ...' if len(others) > 8 else '') if others else 'none'}")
    warnings.warn(f"AMIGOS {where}: no face video named {expected} under {root} ({instead}); no face video "
                  "(extract the archives, or set --face-names)", stacklevel=3)


def read_amigos_subject(root: str | Path, subject: int, on_error: str = "fail", report: ReadReport | None = None,
                        face: bool = True, videos: str = "short", face_names: str = FACE_NAMES) -> list[TrialRecord]:
    """The selected trials (``videos``) of one participant, by trial number (see the module docstring for
    errors and skips). ``face=False``: no video looked for (bio-only use)."""
    check_on_error(on_error)
    root = Path(root)
    path = mat_files(root).get(subject)
    if path is None:
        raise DataError(root, f"no Data_Preprocessed_P{subject:02d}.mat for participant {subject}")
    try:
        trials = load_mat(path)
    except DataError as exc:
        skip_or_raise(exc, on_error, report, "subject", subject)
        return []
    found = face_videos(root, face_names).get(subject, {}) if face else {}
    records = []
    for trial, (data, labels, video_id) in enumerate(trials, start=1):
        if not selected(video_id, videos):
            continue
        where = f"participant {subject} trial {trial} (VideoID {video_id})"
        if data.size == 0:  # a gap in the release: skipped in either mode, never silently
            skip_or_raise(DataError(path, f"{where}: empty trial in joined_data (no recording)"), "skip", report,
                          "trial", subject, trial)
            continue
        try:
            if data.ndim != 2 or data.shape[1] != len(AMIGOS_CHANNELS) or data.dtype.kind not in "fiu":
                raise DataError(path, f"{where}: joined_data trial has shape {data.shape} ({data.dtype}), expected "
                                      f"(samples, {len(AMIGOS_CHANNELS)}) numbers")
            if not np.isfinite(data.sum()):
                bad = ~np.isfinite(data)
                channel = AMIGOS_CHANNELS[int(np.flatnonzero(bad.any(0))[0])]
                raise DataError(path, f"{where}: {int(bad.sum())} non-finite (NaN) samples, the first in channel "
                                      f"{channel}")
            arousal, valence = _ratings(path, where, labels)
        except DataError as exc:
            skip_or_raise(exc, on_error, report, "trial", subject, trial)
            continue
        video = found.get(video_id) if face else None
        if face and video is None:
            _missing_video(root, subject, where, video_id, face_names, found)
        records.append(TrialRecord(
            subject=subject, trial=trial, bio=data.T, channels=list(AMIGOS_CHANNELS), sfreq=AMIGOS_SFREQ,
            stim_start=AMIGOS_BASELINE, stim_end=data.shape[0] / AMIGOS_SFREQ, valence=valence, arousal=arousal,
            video=video, video_start=0.0, source_files=(path, *([video] if video else [])),
        ))  # fmt: skip
    return records


# The uniform reader interface (as in gbvnet.data.deap and gbvnet.data.mahnob) that gbvnet.prepare calls through
# the dataset registry (gbvnet.data.registry); videos and face_names are the registry entry's reader options.
subject_files = amigos_subject_files
read_subject = read_amigos_subject
check_root = check_amigos_root


# ------------------------------------------------------------------------------------------ synthetic corpus
NO_LONG_VIDEOS = (8, 24, 28)  # participants without the long videos in the release


def _synthetic_trial(rng, subj: synthetic.Subject, xv: float, xa: float, duration: float) -> np.ndarray:
    """One AMIGOS trial, samples x 17: the 5 s baseline, then ``duration`` s of stimulus."""
    t = np.arange(int(round((AMIGOS_BASELINE + duration) * AMIGOS_SFREQ))) / AMIGOS_SFREQ
    v, a = synthetic.latent_courses(t, AMIGOS_BASELINE, t[-1] + 1, subj, xv, xa)
    ecg, noise = synthetic.ecg(a, AMIGOS_SFREQ, subj), rng.standard_normal((3, t.size))
    other = np.stack([ecg + noise[0] * 5, -0.8 * ecg + noise[1] * 5,  # ECG_Right, ECG_Left
                      1000 * subj.conductance * (1 + 0.3 * a) + noise[2] * 5])  # GSR: skin conductance level
    eeg = synthetic.eeg(rng, t, v, a, subj, AMIGOS_EEG)
    return np.concatenate([eeg, other * subj.gains[len(AMIGOS_EEG):, None]]).T


def _cell(items: list) -> np.ndarray:
    """A 1 x n MATLAB cell array (for scipy.io.savemat)."""
    cell = np.empty((1, len(items)), dtype=object)
    for k, item in enumerate(items):
        cell[0, k] = item
    return cell


def write_amigos(out: str | Path, subjects: int = 2, trials: int = 16, seed: int = 0, duration: float = 12.0,
                 long_trials: int = 0, long_duration: float = 30.0, video: bool = True, label_noise: float = 0.1,
                 video_size: tuple[int, int] = (synthetic.VIDEO_SIZE, synthetic.VIDEO_SIZE),
                 video_fps: float = synthetic.VIDEO_FPS) -> dict:
    """Write a synthetic AMIGOS-layout corpus (see :mod:`gbvnet.data.synthetic` for its signal): per participant ``data_preprocessed/Data_Preprocessed_PNN.mat`` (MATLAB
    v5: ``joined_data``, ``labels_selfassessment``, ``labels_ext_annotation``, ``VideoIDs``) with ``trials``
    short videos of ``duration`` s (the first of the 16 official VideoIDs) and ``long_trials`` long ones of
    ``long_duration`` s (N1 P1 B1 U1; empty, as in the release, for participants 8, 24 and 28), each after the
    5 s baseline; and ``face_videos/P<id>_<VideoID>_face.mov`` (Motion JPEG in QuickTime, ``video_size`` at
    ``video_fps``) covering each recorded trial. Returns the truth manifest::

        data_preprocessed/Data_Preprocessed_PNN.mat    MATLAB v5 (scipy.io.savemat): joined_data (1 x n cell of
                                                       samples x 17 at 128 Hz: 5 s baseline, then the stimulus),
                                                       labels_selfassessment, labels_ext_annotation, VideoIDs
        face_videos/P<s>_<VideoID>_face.mov            the trial from its first sample; Motion JPEG in QuickTime

    The manifest: ``{"format", "seed", "label_noise", "trials": [{"subject", "trial" (position, 1-based),
    "video_id", "valence", "arousal", "noisy_valence", "noisy_arousal", "mat", "video" (relative paths; video may
    be None)}, ...], "empty": [[participant, trial], ...]}``.
    """
    if not 1 <= trials <= len(SHORT_VIDEOS) or not 0 <= long_trials <= len(LONG_VIDEOS) or subjects < 1 \
            or min(duration, long_duration) < 1:
        raise ValueError(f"need subjects >= 1, 1 <= trials <= 16, 0 <= long_trials <= 4 and durations >= 1 s, got "
                         f"{subjects}, {trials}, {long_trials}, {duration}, {long_duration}")
    from scipy.io import savemat

    out = Path(out)
    ids = [*SHORT_VIDEOS[:trials], *LONG_VIDEOS[:long_trials]]
    truth, empty = [], []
    for s, rng, subj, r in synthetic.draw_subjects(seed, subjects, AMIGOS_CHANNELS, len(ids), label_noise,
                                                   integer=False):
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
            data.append(_synthetic_trial(rng, subj, xv, xa, length))
            arousal, valence = r["arousal"][0][k], r["valence"][0][k]
            labels.append(np.concatenate([[arousal, valence], rng.uniform(1, 9, 3).round(2),
                                          rng.random(7) < 0.2])[None])
            annotations.append(rng.uniform(-1, 1, (max(1, int(length // 20)), 3)).round(2))  # not read
            vid = None
            if video:
                vid = out / "face_videos" / FACE_NAMES.format(participant=s, video=video_id)
                synthetic.write_video(vid, rng, subj, xv, xa, AMIGOS_BASELINE, 1e9, AMIGOS_BASELINE + length,
                                      video_size, video_fps, fourcc="jpeg")
            truth.append({"subject": s, "trial": k + 1, "video_id": video_id, "valence": float(valence),
                          "arousal": float(arousal), "noisy_valence": bool(r["valence"][2][k]),
                          "noisy_arousal": bool(r["arousal"][2][k]), "mat": str(mat.relative_to(out)),
                          "video": None if vid is None else str(vid.relative_to(out))})
        mat.parent.mkdir(parents=True, exist_ok=True)
        savemat(mat, {"joined_data": _cell(data), "labels_selfassessment": _cell(labels),
                      "labels_ext_annotation": _cell(annotations), "VideoIDs": _cell(ids)}, format="5")
    return synthetic.write_truth(out, {"format": "amigos", "seed": seed, "label_noise": label_noise,
                                       "trials": truth, "empty": empty})


# AMIGOS's preprocessed .mat files are already band-passed (4-45 Hz) at 128 Hz: not filtered again. It prepares its
# 16 short videos by default: the 4 long ones (14-23 minutes, 37 participants) are --videos long or all. Its demo
# corpus (--synthetic) has MAHNOB's size.
register_dataset(Dataset(name="amigos", reader_module=__name__, prepare_defaults={"h_freq": None},
                         writer=write_amigos, demo_size={"subjects": 6, "trials": 10, "duration": 24.0, "seed": 0},
                         camera_size=(1280, 720), camera_fps=25.0, reader_options=(
                             ReaderOption("videos", "short", "AMIGOS trials to prepare: the 16 short videos "
                                          "(default), the 4 long ones, or all", VIDEOS),
                             ReaderOption("face_names", FACE_NAMES, "AMIGOS face video file names, searched for "
                                          "under --root ({participant}: the number, zero-padded or not; {video}: "
                                          "the VideoID)"),
                         )))
