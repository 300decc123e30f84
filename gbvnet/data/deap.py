"""Reader for DEAP in its official layout.

Layout under ``root``::

    data_preprocessed_python/sNN.dat      NN = 01..32, Python 2 pickles (protocol 2) of
                                          {'data': trials x 40 channels x 8064 samples (128 Hz),
                                           'labels': trials x 4 (valence, arousal, dominance, liking, 1-9)}
    metadata_csv/participant_ratings.csv  Participant_id,Trial,Experiment_id,Start_time,Valence,Arousal,...
    face_video/sNN/sNN_trialMM.avi        subjects 1-22 only, MM = presentation order (``Trial``)

Rows of ``data`` are in video order (row ``k`` is ``Experiment_id`` k + 1); the face videos are numbered in
presentation order. A video is attached to a row only through the ratings CSV (the row whose Experiment_id is
k + 1 names the ``Trial`` number of its video), never by position. Without the CSV no video is attached (with a
warning): bio-only use is still valid. A subject of 1-22 whose video file is missing gets ``video=None`` and a
warning. With ``face=False`` (bio-only preparation) neither the CSV nor the videos are looked at.

Each ``sNN.dat`` row is 63 s: a 3 s pre-trial baseline, then the 60 s stimulus, so ``stim_start = 3.0`` and
``stim_end = 63.0``. Assumption (the dataset does not state the offset): a trial's face video starts with the
trial recording, i.e. at bio time 0, the start of the baseline, so ``video_start = 0.0``.

The pickles are loaded with a restricted unpickler that admits only what numpy arrays need (as Python 2 wrote
them, and as Python 3 re-saves them with any pickle protocol 2-5), so a ``.dat`` from the internet cannot run
code. Records hold views of the loaded array (float64 as stored), never copies.

Errors: :class:`~gbvnet.data.records.DataError` naming the file and the problem. With ``on_error="skip"`` the
reader warns, skips the smallest broken unit (a ``.dat`` file; one trial with non-finite samples or a rating off
the 1-9 scale; a broken CSV only costs the subject's face videos) and records it in the optional
:class:`~gbvnet.data.records.ReadReport`.

The module is the whole dataset (:mod:`gbvnet.data.registry`): the reader, :func:`write_deap` (a synthetic corpus
in this layout, for ``--synthetic`` and the tests) and, at its bottom, its registry entry.
"""

from __future__ import annotations

import codecs
import csv
import pickle
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gbvnet.data import synthetic
from gbvnet.data.records import DataError, ReadReport, TrialRecord, check_on_error, skip_or_raise
from gbvnet.data.registry import Dataset, register_dataset

DEAP_CHANNELS: tuple[str, ...] = (
    "Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3", "O1", "Oz", "Pz",
    "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8", "CP6", "CP2", "P4", "P8", "PO4", "O2",
    "hEOG", "vEOG", "zEMG", "tEMG", "GSR", "Respiration belt", "Plethysmograph", "Temperature",
)  # fmt: skip
DEAP_SFREQ = 128.0
DEAP_SAMPLES = 8064  # 63 s at 128 Hz
DEAP_STIM_START = 3.0  # the first 3 s are the pre-trial baseline
DEAP_STIM_END = 63.0
DEAP_VIDEO_SUBJECTS = range(1, 23)  # subjects with face video in the official release
RATINGS_CSV = Path("metadata_csv") / "participant_ratings.csv"

_DAT_NAME = re.compile(r"s(\d{2})\.dat")
_reconstruct = np.zeros(1).__reduce__()[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: numpy.(_)core.numeric._frombuffer
_scalar = np.float64(0).__reduce__()[0]


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What Python 3 pickles (protocol 2) store ``bytes`` as: ``_codecs.encode(text, "latin1")``; no other codec."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin1 holds array bytes)")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_bytes,
}


def dat_path(root: str | Path, subject: int) -> Path:
    return Path(root) / "data_preprocessed_python" / f"s{subject:02d}.dat"


def video_path(root: str | Path, subject: int, presentation_trial: int) -> Path:
    return Path(root) / "face_video" / f"s{subject:02d}" / f"s{subject:02d}_trial{presentation_trial:02d}.avi"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the globals numpy arrays need and nothing else (no code runs while loading)."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(self._path, f"refusing to unpickle {module}.{name}: a DEAP .dat holds only numpy arrays "
                                        "(anything else could run code while loading); use the file from the "
                                        "official download, or re-save it as pickle.dump({'data': ndarray, "
                                        "'labels': ndarray}, f)") from None


def load_dat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data, labels)`` of one ``sNN.dat``: trials x 40 x 8064 and trials x 4, shapes and types validated
    (values are checked per trial by the reader: a NaN sample or rating costs one trial, not the file)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, path).load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # truncated or not a pickle: pickle raises many types
        raise DataError(path, f"not a valid DEAP pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not {"data", "labels"} <= obj.keys():
        raise DataError(path, "expected a dict with 'data' and 'labels'")
    data, labels = obj["data"], obj["labels"]
    for name, arr in (("data", data), ("labels", labels)):
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
            raise DataError(path, f"'{name}' must be a float array, got {type(arr).__name__}")
    n = data.shape[0] if data.ndim == 3 else -1
    if data.ndim != 3 or n < 1 or data.shape[1:] != (len(DEAP_CHANNELS), DEAP_SAMPLES):
        raise DataError(path, f"'data' has shape {data.shape}, expected (trials, 40, {DEAP_SAMPLES})")
    if labels.shape != (n, 4):
        raise DataError(path, f"'labels' has shape {labels.shape}, expected ({n}, 4) for {n} trials")
    return data, labels


def read_presentation_order(csv_path: str | Path) -> dict[int, dict[int, int]]:
    """``{participant: {Experiment_id: Trial}}`` from ``participant_ratings.csv``."""
    csv_path = Path(csv_path)
    order: dict[int, dict[int, int]] = {}
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_path, f"cannot read ratings CSV: {exc}") from exc
    for line, row in enumerate(rows, start=2):
        try:
            participant, trial, experiment = (int(row[k]) for k in ("Participant_id", "Trial", "Experiment_id"))
        except KeyError as exc:
            raise DataError(csv_path, f"missing column {exc}") from None
        except (TypeError, ValueError):
            raise DataError(csv_path, f"line {line}: Participant_id, Trial and Experiment_id must be integers") from None
        trials = order.setdefault(participant, {})
        if experiment in trials or trial in trials.values():
            raise DataError(csv_path, f"line {line}: participant {participant} lists Experiment_id {experiment} "
                                      f"or Trial {trial} twice")
        trials[experiment] = trial
    return order


def deap_subjects(root: str | Path) -> list[int]:
    """Subjects that have an ``sNN.dat``, sorted."""
    folder = Path(root) / "data_preprocessed_python"
    found = (_DAT_NAME.fullmatch(p.name) for p in folder.glob("s*.dat"))
    return sorted(int(m.group(1)) for m in found if m)


def deap_subject_files(root: str | Path, face: bool = True) -> dict[int, list[Path]]:
    """The source files of each subject (``.dat``, and with ``face`` the ratings CSV and face videos) for the
    cache manifest."""
    root = Path(root)
    csv_file = root / RATINGS_CSV
    files = {}
    for subject in deap_subjects(root):
        files[subject] = [dat_path(root, subject)]
        if face:
            videos = sorted((root / "face_video" / f"s{subject:02d}").glob(f"s{subject:02d}_trial*.avi"))
            files[subject] += [*([csv_file] if csv_file.exists() else []), *videos]
    return files


def check_deap_root(root: str | Path, on_error: str = "fail", report: ReadReport | None = None) -> None:
    """Raise a :class:`DataError` saying what is expected when ``root`` holds no DEAP subject files."""
    root = Path(root)
    if not deap_subjects(root):
        what = "does not exist" if not root.exists() else "holds no data_preprocessed_python/sNN.dat"
        raise DataError(root, f"{what}; --root must be the DEAP download folder (data_preprocessed_python/s01.dat "
                              "... s32.dat, optionally metadata_csv/ and face_video/)")


def _load_order(root: Path, on_error: str, report: ReadReport | None,
                subject: int | None) -> dict[int, dict[int, int]] | None:
    """The presentation order, or None (no videos attached) when the CSV is missing or, skipped, broken."""
    csv_file = root / RATINGS_CSV
    if not csv_file.exists():
        warnings.warn(f"{csv_file}: missing; DEAP face videos cannot be aligned and are not attached", stacklevel=3)
        return None
    try:
        return read_presentation_order(csv_file)
    except DataError as exc:
        error = DataError(exc.path, f"{exc.problem}; it aligns the face videos, so none are attached (fix the CSV, "
                                    "or prepare bio-only with --no-face)")
        skip_or_raise(error, on_error, report, "face videos", subject)
        return None


def _subject_records(
    root: Path, subject: int, order: dict[int, dict[int, int]] | None, on_error: str, report: ReadReport | None
) -> list[TrialRecord]:
    path = dat_path(root, subject)
    try:
        data, labels = load_dat(path)
    except DataError as exc:
        skip_or_raise(exc, on_error, report, "subject", subject)
        return []
    presentation = None if order is None else order.get(subject)
    if order is not None and presentation is None:
        warnings.warn(f"{root / RATINGS_CSV}: no rows for participant {subject}; no face videos attached",
                      stacklevel=3)
    records = []
    for row in range(data.shape[0]):
        experiment = row + 1
        bio = data[row]
        if not np.isfinite(bio.sum()):
            channel = DEAP_CHANNELS[int(np.nonzero(~np.isfinite(bio))[0][0])]
            skip_or_raise(DataError(path, f"trial {experiment} (Experiment_id): non-finite samples in channel "
                                          f"{channel}"), on_error, report, "trial", subject, experiment)
            continue
        bad = [(name, value) for name, value in zip(("valence", "arousal"), labels[row, :2], strict=True)
               if not 1 <= value <= 9]  # NaN fails too
        if bad:
            name, value = bad[0]
            skip_or_raise(DataError(path, f"trial {experiment} (Experiment_id): 'labels' {name} rating {value:g} "
                                          "is not on the 1-9 scale"), on_error, report, "trial", subject, experiment)
            continue
        video = None
        sources = [path]
        if presentation is not None:
            sources.append(root / RATINGS_CSV)
            trial = presentation.get(experiment)
            candidate = None if trial is None else video_path(root, subject, trial)
            if candidate is not None and candidate.exists():
                video = candidate
                sources.append(candidate)
            elif subject in DEAP_VIDEO_SUBJECTS:
                what = f"{candidate} is missing" if candidate else f"the CSV has no row for Experiment_id {experiment}"
                warnings.warn(f"DEAP subject {subject} trial {experiment}: {what}; no face video", stacklevel=3)
        records.append(TrialRecord(
            subject=subject, trial=experiment, bio=bio, channels=list(DEAP_CHANNELS), sfreq=DEAP_SFREQ,
            stim_start=DEAP_STIM_START, stim_end=DEAP_STIM_END, valence=float(labels[row, 0]),
            arousal=float(labels[row, 1]), video=video, video_start=0.0, source_files=tuple(sources),
        ))  # fmt: skip
    return records


def read_deap_subject(
    root: str | Path, subject: int, on_error: str = "fail", report: ReadReport | None = None, face: bool = True
) -> list[TrialRecord]:
    """All trials of one subject, in Experiment_id order (see the module docstring for errors).

    ``face=False``: no video attached, the ratings CSV not read (bio-only use).
    """
    check_on_error(on_error)
    root = Path(root)
    order = _load_order(root, on_error, report, subject) if face else None
    return _subject_records(root, subject, order, on_error, report)


def read_deap(
    root: str | Path,
    subjects: Iterable[int] | None = None,
    on_error: str = "fail",
    report: ReadReport | None = None,
) -> Iterator[TrialRecord]:
    """Yield one record per trial for ``subjects`` (default: every ``sNN.dat`` under ``root``)."""
    check_on_error(on_error)
    root = Path(root)
    order = _load_order(root, on_error, report, None)
    for subject in deap_subjects(root) if subjects is None else subjects:
        yield from _subject_records(root, subject, order, on_error, report)


# The reader interface (gbvnet.data.registry.Reader) that gbvnet.prepare calls through the dataset registry.
subject_files = deap_subject_files
read_subject = read_deap_subject
check_root = check_deap_root


# ------------------------------------------------------------------------------------------ synthetic corpus
def _synthetic_trial(rng, subj: synthetic.Subject, xv: float, xa: float, signature: np.ndarray) -> np.ndarray:
    """One synthetic trial, 40 channels x 8064 samples: the 3 s baseline, then the 60 s stimulus."""
    from scipy.signal import lfilter

    t = np.arange(DEAP_SAMPLES) / DEAP_SFREQ
    v, a = synthetic.latent_courses(t, DEAP_STIM_START, t[-1] + 1, subj, xv, xa)
    noise = rng.standard_normal((6, t.size))
    blinks = np.convolve(rng.random(t.size) < 0.3 / DEAP_SFREQ, np.hanning(25) * 150, mode="same")
    heart = synthetic.heart(a, DEAP_SFREQ, subj)
    peripheral = np.stack([
        lfilter([1.0], [1.0, -0.98], noise[0]) * 3,  # hEOG
        noise[1] * 10 + blinks,  # vEOG
        noise[2] * 4 * np.clip(1 + 0.7 * v, 0.15, None),  # zEMG
        noise[3] * 4,  # tEMG
        1000 * subj.conductance * (1 + 0.3 * a) + noise[4] * 5,  # GSR
        600 * np.sin(synthetic.phase(0.25 + 0.08 * a, DEAP_SFREQ)),  # Respiration belt
        1000 * np.maximum(np.sin(heart), 0) ** 2,  # Plethysmograph
        32.5 + 0.2 * (subj.conductance - 1) + 0.01 * noise[5],  # Temperature
    ])  # fmt: skip
    eeg = (synthetic.eeg(rng, t, v, a, subj, DEAP_CHANNELS[:32])
           + synthetic.signature_course(t, DEAP_STIM_START, t[-1] + 1, signature))
    return np.concatenate([eeg, peripheral * subj.gains[32:, None]])


def write_deap(out: str | Path, subjects: int = 3, trials: int = 40, seed: int = 0, video: bool = True,
               label_noise: float = 0.1, video_size: tuple[int, int] = (synthetic.VIDEO_SIZE, synthetic.VIDEO_SIZE),
               video_fps: float = synthetic.VIDEO_FPS, trial_signature: float = 0.0) -> dict:
    """Write a synthetic DEAP-layout corpus for subjects 1..``subjects`` (videos for 1-22, ``video_size`` =
    (width, height) at ``video_fps``; see :mod:`gbvnet.data.synthetic` for its signal); return the truth
    manifest. The files::

        data_preprocessed_python/sNN.dat       Python-2-style pickle (protocol 2, numpy arrays as Python 2 writes
                                               them) of {'labels': T x 4, 'data': T x 40 x 8064 float64}, rows in
                                               video (Experiment_id) order: 3 s baseline + 60 s stimulus at 128 Hz
        metadata_csv/participant_ratings.csv   official columns; the presentation order (Trial) is a shuffle
        face_video/sNN/sNN_trialMM.avi         subjects 1-22, MM = presentation order, from bio time 0 (63 s)

    The manifest: ``{"format", "seed", "label_noise", "trial_signature", "trials": [{"subject", "trial" (Experiment_id),
    "presentation" (Trial), "valence", "arousal", "noisy_valence", "noisy_arousal", "video" (relative path or
    None)}, ...]}``.
    """
    if not 1 <= trials <= 40 or subjects < 1:
        raise ValueError(f"need subjects >= 1 and 1 <= trials <= 40, got {subjects} and {trials}")
    out = Path(out)
    rows, truth = [], []
    for s, rng, subj, r in synthetic.draw_subjects(seed, subjects, DEAP_CHANNELS, trials, label_noise,
                                                   integer=False, trial_signature=trial_signature):
        presentation = rng.permutation(trials) + 1  # presentation[k] = Trial of Experiment_id k + 1
        data = np.empty((trials, len(DEAP_CHANNELS), DEAP_SAMPLES))
        labels = np.column_stack([r["valence"][0], r["arousal"][0], rng.uniform(1, 9, (trials, 2)).round(2)])
        for k in range(trials):
            xv, xa = r["valence"][1][k], r["arousal"][1][k]
            data[k] = _synthetic_trial(rng, subj, xv, xa, r["signature"][k])
            vid = None
            if video and s <= 22:
                vid = video_path(out, s, int(presentation[k]))
                synthetic.write_video(vid, rng, subj, xv, xa, DEAP_STIM_START, 1e9, DEAP_SAMPLES / DEAP_SFREQ,
                                      video_size, video_fps)
            rows.append([s, int(presentation[k]), k + 1, int(presentation[k]) * 90_000_000, *labels[k],
                         int(rng.integers(1, 5))])
            truth.append({"subject": s, "trial": k + 1, "presentation": int(presentation[k]),
                          "valence": float(labels[k, 0]), "arousal": float(labels[k, 1]),
                          "noisy_valence": bool(r["valence"][2][k]), "noisy_arousal": bool(r["arousal"][2][k]),
                          "video": None if vid is None else str(vid.relative_to(out))})
        synthetic.write_deap_dat(dat_path(out, s), {"labels": labels, "data": data})
    (out / RATINGS_CSV).parent.mkdir(parents=True, exist_ok=True)
    with open(out / RATINGS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Participant_id", "Trial", "Experiment_id", "Start_time", "Valence", "Arousal",
                         "Dominance", "Liking", "Familiarity"])
        writer.writerows(sorted(rows, key=lambda row: (row[0], row[1])))
    return synthetic.write_truth(out, {"format": "deap", "seed": seed, "label_noise": label_noise,
                                       "trial_signature": trial_signature, "trials": truth})


# DEAP's data_preprocessed_python is already band-passed (4-45 Hz) at 128 Hz: not filtered again. Its demo corpus
# (--synthetic) is small enough for a LOSO run on 2 CPU cores within minutes.
register_dataset(Dataset(name="deap", reader_module=__name__, prepare_defaults={"h_freq": None}, writer=write_deap,
                         demo_size={"subjects": 4, "trials": 8, "seed": 0}, camera_size=(720, 576),
                         camera_fps=50.0))
