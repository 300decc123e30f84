"""Reader for MAHNOB-HCI (the emotion-elicitation sessions) in its official layout.

Layout under ``root``::

    Sessions/<id>/session.xml    <session sessionId=.. feltVlnc=.. feltArsl=.. feltEmo=.. isStim=.. vidRate=..
                                  mediaFile=.. cutNr=.. ...>
                                   <subject id="N" .../>
                                   <track type="Video" color="1" filename="P1-Rec1-<date>_C1 trigger _C_Section_<n>.avi">
                                   <track type="Physiological" filename="Part_<N>_S_Trial<k>_emotion.bdf"/>
                                   ... (other cameras, audio, gaze annotations: ignored)
    Sessions/<id>/*.bdf          BioSemi, 256 Hz, 47 channels: 32 EEG, EXG1-8, GSR1-2, Erg1-2, Resp, Temp, Status

Sessions without felt valence and arousal (the implicit-tagging sessions) are skipped and counted in
``ReadReport.unrated`` (not an error, no warning); a session with only one of ``feltVlnc`` / ``feltArsl`` is an
error. Session ids are unique: a second folder with the same ``sessionId`` (a copied folder) is an error, and
skipped its first copy (in folder order, numeric names first) is kept. Ratings are on the 1-9 scale. ``trial`` is the session id,
``subject`` the ``<subject id>``.

Channels (our choice, the paper's count of 38, ``MAHNOB_CHANNELS``): the 32 EEG electrodes, EXG1-EXG3 (the ECG
leads), GSR1, Resp and Temp. ``bio`` holds them in SI units as mne returns them (volts for EEG/ECG/Resp).

Stimulus: the official BDFs hold about 30 s before and after the stimulus; the stimulus onset and offset are the
first two rising edges of the ``Status`` trigger bits (the low 16 bits; BioSemi uses the upper 8 for system
state). A BDF without ``Status`` or with fewer than two such events is an error, and so is a BDF shorter than its
header says (a truncated download), wherever it was cut.

Video: the session's frontal colour camera (the ``<track type="Video" color="1">``, whose file name contains
"C1 trigger"). Synchronisation is our reading of the release, which does not state it: the colour video starts
at the stimulus onset, the first Status trigger, so ``video_start = stim_start``. Public readers of the release
align it the same way (Idiap's ``bob.db.hci_tagging`` takes the first Status trigger as the video start; others
report colour videos 1.1-3.3x as long as the stimulus, running on into the self-report, too short to also hold
the 30 s before it). A session whose XML names a colour video missing on disk is an error naming the file; a
session whose XML names none gets ``video=None``. With ``face=False`` (bio-only preparation) videos are not
looked at: a download without them is complete.

Errors: :class:`~gbvnet.data.records.DataError` naming the file and the problem (malformed XML or felt values,
no subject, missing BDF, missing channels, no Status, missing video). With ``on_error="skip"`` the session is
skipped with a warning and recorded in the optional :class:`~gbvnet.data.records.ReadReport`; a ``session.xml``
that cannot be parsed belongs to no known subject, so :func:`check_mahnob_root` reports it once for the corpus
and the per-subject reader passes over it.

The module is the whole dataset (:mod:`gbvnet.data.registry`): the reader, :func:`write_mahnob` (a synthetic corpus
in this layout, for ``--synthetic`` and the tests) and, at its bottom, its registry entry.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gbvnet.data import synthetic
from gbvnet.data.deap import DEAP_CHANNELS
from gbvnet.data.records import DataError, ReadReport, TrialRecord, check_on_error, skip_or_raise
from gbvnet.data.registry import Dataset, register_dataset

EEG_CHANNELS = DEAP_CHANNELS[:32]  # both datasets use BioSemi's 32-electrode cap, listed in the same order
BDF_CHANNELS: tuple[str, ...] = (
    *EEG_CHANNELS, "EXG1", "EXG2", "EXG3", "EXG4", "EXG5", "EXG6", "EXG7", "EXG8",
    "GSR1", "GSR2", "Erg1", "Erg2", "Resp", "Temp", "Status",
)  # fmt: skip
MAHNOB_CHANNELS: tuple[str, ...] = (*EEG_CHANNELS, "EXG1", "EXG2", "EXG3", "GSR1", "Resp", "Temp")
STATUS = "Status"
TRIGGER_BITS = 0xFFFF


@dataclass(frozen=True)
class Session:
    """What one ``session.xml`` says. ``valence``/``arousal`` are None for sessions without felt ratings;
    ``problem`` says what is wrong with a rated session's ratings (reported when the session is read)."""

    session: int
    subject: int
    xml: Path
    valence: float | None
    arousal: float | None
    bdf: Path | None
    video: Path | None
    problem: str | None = None

    @property
    def rated(self) -> bool:
        return self.problem is not None or (self.valence is not None and self.arousal is not None)


def _rating(xml: Path, root: ET.Element, name: str) -> float | None:
    text = (root.get(name) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(xml, f"{name}={text!r} is not a number") from None
    if not math.isfinite(value) or not 1 <= value <= 9:
        raise DataError(xml, f"{name}={text!r} is outside the 1-9 rating scale")
    return value


def _integer(xml: Path, text: str | None, what: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise DataError(xml, f"{what} {text!r} is not an integer") from None


def parse_session(xml: str | Path) -> Session:
    """Parse one ``session.xml`` (no file is opened besides it)."""
    xml = Path(xml)
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(xml, f"malformed session XML: {exc}") from exc
    if root.tag != "session":
        raise DataError(xml, f"root element is <{root.tag}>, expected <session>")
    subject = root.find("subject")
    if subject is None:
        raise DataError(xml, "no <subject> element")
    bdf = video = None
    for track in root.iter("track"):
        name = track.get("filename")
        if not name:
            continue
        if track.get("type") == "Physiological" and bdf is None:
            bdf = xml.parent / name
        elif track.get("type") == "Video" and video is None and (track.get("color") == "1" or "C1 trigger" in name):
            video = xml.parent / name
    ratings, problem = {}, None
    for name in ("feltVlnc", "feltArsl"):
        try:
            ratings[name] = _rating(xml, root, name)
        except DataError as exc:
            ratings[name], problem = None, problem or exc.problem
    given = [name for name, value in ratings.items() if value is not None]
    if problem is None and len(given) == 1:
        other = "feltArsl" if given == ["feltVlnc"] else "feltVlnc"
        problem = (f"{given[0]}={root.get(given[0])!r} is given but {other} is missing: a rated session needs both "
                   "felt valence and arousal")
    return Session(
        session=_integer(xml, root.get("sessionId", xml.parent.name), "sessionId"),
        subject=_integer(xml, subject.get("id"), "subject id"),
        xml=xml, valence=ratings["feltVlnc"], arousal=ratings["feltArsl"], bdf=bdf, video=video, problem=problem,
    )  # fmt: skip


def _session_xmls(root: Path) -> list[Path]:
    """``Sessions/*/session.xml``, numeric session folders first, in numeric order."""
    def key(xml: Path) -> tuple[bool, int, str]:
        name = xml.parent.name
        return not name.isdigit(), int(name) if name.isdigit() else 0, name

    return sorted((Path(root) / "Sessions").glob("*/session.xml"), key=key)


def _parsed(root: Path) -> tuple[list[Session], list[DataError]]:
    """Every ``session.xml`` under ``root`` parsed (folder order), and the errors of those that cannot be."""
    sessions, errors = [], []
    for xml in _session_xmls(root):
        try:
            sessions.append(parse_session(xml))
        except DataError as exc:
            errors.append(exc)
    return sessions, errors


def mahnob_sessions(
    root: str | Path, subjects: Iterable[int] | None = None, on_error: str = "fail", report: ReadReport | None = None,
    unparsable: bool = True,
) -> list[Session]:
    """Every session of ``subjects`` (default all), rated or not, sorted by (subject, session id).

    ``unparsable``: a ``session.xml`` that cannot be parsed is an error (or skipped) whatever ``subjects`` is
    (its subject is unknown); False passes over them (:func:`check_mahnob_root` reports them). A later folder
    with an earlier one's ``sessionId`` is an error (or skipped) for its subject.
    """
    check_on_error(on_error)
    wanted = None if subjects is None else set(subjects)
    parsed, errors = _parsed(Path(root))
    if unparsable:
        for exc in errors:
            skip_or_raise(exc, on_error, report, "file")
    first: dict[int, Session] = {}
    sessions = []
    for session in parsed:
        original = first.setdefault(session.session, session)
        if wanted is not None and session.subject not in wanted:
            continue
        if original is not session:
            skip_or_raise(DataError(session.xml, f"sessionId {session.session} is also the id of {original.xml} "
                                                 "(a copied session folder?); remove one of them"),
                          on_error, report, "trial", session.subject, session.session)
            continue
        sessions.append(session)
    return sorted(sessions, key=lambda s: (s.subject, s.session))


def check_mahnob_root(root: str | Path, on_error: str = "fail", report: ReadReport | None = None) -> None:
    """Check what belongs to no subject: raise when ``root`` holds no ``Sessions/*/session.xml``; every
    ``session.xml`` that cannot be parsed is an error (or, skipped, recorded once as a ``"file"``)."""
    check_on_error(on_error)
    root = Path(root)
    parsed, errors = _parsed(root)
    if not parsed and not errors:
        what = "does not exist" if not root.exists() else "holds no Sessions/<id>/session.xml"
        raise DataError(root, f"{what}; --root must be the MAHNOB-HCI download folder (Sessions/<id>/session.xml "
                              "with the session's BDF and videos)")
    for exc in errors:
        skip_or_raise(exc, on_error, report, "file")


def _stimulus(path: Path, status: np.ndarray, sfreq: float) -> tuple[float, float]:
    on = (np.rint(status).astype(np.int64) & TRIGGER_BITS) != 0
    rises = np.flatnonzero(on[1:] & ~on[:-1]) + 1
    if len(rises) < 2:
        raise DataError(path, f"Status channel has {len(rises)} stimulus trigger(s); need onset and offset")
    return rises[0] / sfreq, rises[1] / sfreq


def _check_bdf_size(path: Path) -> None:
    """Raise when the file is shorter (or longer) than its header says: a truncated or damaged download."""
    with open(path, "rb") as f:
        head = f.read(256)
        try:
            header_bytes, records, signals = int(head[184:192]), int(head[236:244]), int(head[252:256])
            f.seek(256 + 216 * signals)
            per_record = sum(int(f.read(8)) for _ in range(signals))
        except ValueError:
            raise DataError(path, "cannot read BDF (its header is not a BDF/EDF header)") from None
    if records < 0:  # -1: the recorder did not know the length; nothing to check against
        return
    expected, actual = header_bytes + 3 * records * per_record, path.stat().st_size
    if actual != expected:
        raise DataError(path, f"{'truncated' if actual < expected else 'damaged'} BDF: {actual:,} bytes, but its "
                              f"header promises {records} records = {expected:,} bytes; download it again")


def read_bdf(path: str | Path) -> tuple[np.ndarray, float, float, float]:
    """``(bio, sfreq, stim_start, stim_end)`` of one session BDF: ``MAHNOB_CHANNELS`` x samples, SI units."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "BDF file named in session.xml is missing")
    _check_bdf_size(path)
    import mne  # here, not at the top: listing the datasets (gbvnet.data.registry) stays free of it

    try:
        raw = mne.io.read_raw_bdf(path, include=[*MAHNOB_CHANNELS, STATUS], preload=True, verbose="error")
    except Exception as exc:  # mne raises many types for damaged files
        raise DataError(path, f"cannot read BDF ({type(exc).__name__}: {exc})") from exc
    if STATUS not in raw.ch_names:
        raise DataError(path, "no Status channel (the stimulus triggers)")
    missing = [name for name in MAHNOB_CHANNELS if name not in raw.ch_names]
    if missing:
        raise DataError(path, f"missing channel(s) {', '.join(missing)}")
    sfreq = float(raw.info["sfreq"])
    stim_start, stim_end = _stimulus(path, raw.get_data(picks=[STATUS])[0], sfreq)
    return raw.get_data(picks=list(MAHNOB_CHANNELS)), sfreq, stim_start, stim_end


def read_session(session: Session, face: bool = True) -> TrialRecord:
    """The trial of one rated session (``face=False``: without its video, which is not looked for)."""
    if session.problem is not None:
        raise DataError(session.xml, session.problem)
    if session.bdf is None:
        raise DataError(session.xml, "names no Physiological (BDF) track")
    video = session.video if face else None
    if video is not None and not video.is_file():
        raise DataError(video, f"face video named in {session.xml} is missing (prepare bio-only with --no-face, "
                               "or download it)")
    bio, sfreq, stim_start, stim_end = read_bdf(session.bdf)
    sources = (session.xml, session.bdf, *([video] if video else []))
    return TrialRecord(
        subject=session.subject, trial=session.session, bio=bio, channels=list(MAHNOB_CHANNELS), sfreq=sfreq,
        stim_start=stim_start, stim_end=stim_end, valence=float(session.valence), arousal=float(session.arousal),
        video=video, video_start=stim_start, source_files=sources,
    )  # fmt: skip


def _records(sessions: list[Session], on_error: str, report: ReadReport | None, face: bool) -> Iterator[TrialRecord]:
    for session in sessions:
        if not session.rated:
            if report is not None:
                report.unrated.append(str(session.xml))
            continue
        try:
            record = read_session(session, face)
        except DataError as exc:
            skip_or_raise(exc, on_error, report, "trial", session.subject, session.session)
            continue
        yield record


def read_mahnob(
    root: str | Path,
    subjects: Iterable[int] | None = None,
    on_error: str = "fail",
    report: ReadReport | None = None,
    face: bool = True,
) -> Iterator[TrialRecord]:
    """Yield one record per rated session of ``subjects`` (default all), by (subject, session id)."""
    yield from _records(mahnob_sessions(root, subjects, on_error, report), on_error, report, face)


def read_mahnob_subject(
    root: str | Path, subject: int, on_error: str = "fail", report: ReadReport | None = None, face: bool = True
) -> list[TrialRecord]:
    """All rated sessions of one subject, by session id (unparsable session XMLs belong to no subject: they are
    :func:`check_mahnob_root`'s to report)."""
    sessions = mahnob_sessions(root, [subject], on_error, report, unparsable=False)
    return list(_records(sessions, on_error, report, face))


def mahnob_subject_files(root: str | Path, face: bool = True) -> dict[int, list[Path]]:
    """The source files of each subject (every session.xml, and the BDF and, with ``face``, video files that
    exist) for the cache manifest. Session XMLs that cannot be parsed are left out here; the readers report
    them."""
    files: dict[int, list[Path]] = {}
    for session in _parsed(Path(root))[0]:
        found = [p for p in (session.bdf, session.video if face else None) if p is not None and p.is_file()]
        files.setdefault(session.subject, []).extend([session.xml, *found])
    return dict(sorted(files.items()))


# The reader interface (gbvnet.data.registry.Reader) that gbvnet.prepare calls through the dataset registry.
subject_files = mahnob_subject_files
read_subject = read_mahnob_subject
check_root = check_mahnob_root


# ------------------------------------------------------------------------------------------ synthetic corpus
MAHNOB_SFREQ = 256
MAHNOB_PRE = 30.0  # seconds of recording before the stimulus (as in the official BDFs)
MAHNOB_POST = 30.0
MAHNOB_SELF_REPORT = 5.0  # seconds of video after the stimulus
STATUS_CODE = 0x100000  # Status bits set throughout (BioSemi system bits above the 16 trigger bits)
TRIGGER = 16  # trigger code of the stimulus onset and offset pulses


def _synthetic_trial(rng, subj: synthetic.Subject, xv: float, xa: float, duration: float,
                     signature: np.ndarray) -> np.ndarray:
    """One synthetic session's BDF signals, the 47 channels x samples at 256 Hz: 30 s before the ``duration`` s
    stimulus and 30 s after it, with Status pulses at its onset and offset."""
    n = int(round((MAHNOB_PRE + duration + MAHNOB_POST) * MAHNOB_SFREQ))
    t = np.arange(n) / MAHNOB_SFREQ
    v, a = synthetic.latent_courses(t, MAHNOB_PRE, MAHNOB_PRE + duration, subj, xv, xa)
    ecg = synthetic.ecg(a, MAHNOB_SFREQ, subj)
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
        "Resp": 600 * np.sin(synthetic.phase(0.25 + 0.08 * a, MAHNOB_SFREQ)),
        "Temp": np.full(n, 32.5 + 0.2 * (subj.conductance - 1)),
    }
    eeg = (synthetic.eeg(rng, t, v, a, subj, BDF_CHANNELS[:32])
           + synthetic.signature_course(t, MAHNOB_PRE, MAHNOB_PRE + duration, signature))
    other = np.stack([rows[name] * g for name, g in zip(BDF_CHANNELS[32:-1], subj.gains[32:-1], strict=True)])
    return np.concatenate([eeg, other, status[None]])


def _session_xml(path: Path, attrs: dict[str, str], subject: int, tracks: list[dict[str, str]]) -> None:
    root = ET.Element("session", attrs)
    ET.SubElement(root, "subject", {"id": str(subject)})
    for track in tracks:
        ET.SubElement(root, "track", track)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_mahnob(out: str | Path, subjects: int = 2, trials: int = 20, seed: int = 0, duration: float = 12.0,
                 video: bool = True, label_noise: float = 0.1,
                 video_size: tuple[int, int] = (synthetic.VIDEO_SIZE, synthetic.VIDEO_SIZE),
                 video_fps: float = synthetic.VIDEO_FPS, trial_signature: float = 0.0) -> dict:
    """Write a synthetic MAHNOB-HCI-layout corpus (``duration`` s stimuli; colour videos of ``video_size`` =
    (width, height) at ``video_fps``; see :mod:`gbvnet.data.synthetic` for its signal); return the truth
    manifest. Session ids are laid out as in the real release (subject s, trial k: ``130 (s - 1) + 2k``)::

        Sessions/<id>/session.xml                       felt ratings, <subject>, Video and Physiological tracks
        Sessions/<id>/Part_<s>_S_Trial<k>_emotion.bdf    BioSemi BDF, 256 Hz, the 47 official channels; 30 s
                                                        before and after the stimulus; Status pulses at
                                                        stimulus onset and offset
        Sessions/<id>/P<s>-Rec1-<date>_C1 trigger _C_Section_<n>.avi   colour face video from stimulus onset to
                                                        5 s after its end (see the module docstring on sync)

    plus, per subject, one implicit-tagging session without felt ratings (readers skip and count it).

    The manifest: ``{"format", "seed", "label_noise", "trial_signature", "trials": [{"subject", "trial" (session
    id), "valence", "arousal", "noisy_valence", "noisy_arousal", "bdf", "video" (relative paths; video may be None)}, ...],
    "unrated": [relative session.xml paths without felt ratings]}``.
    """
    if not 1 <= trials <= 64 or subjects < 1 or duration < 1:
        raise ValueError(f"need subjects >= 1, 1 <= trials <= 64 and duration >= 1 s, got {subjects}, {trials}, "
                         f"{duration}")
    out = Path(out)
    truth, unrated = [], []
    for s, rng, subj, r in synthetic.draw_subjects(seed, subjects, BDF_CHANNELS, trials, label_noise,
                                                   integer=True, trial_signature=trial_signature):
        base = 130 * (s - 1)
        for k in range(1, trials + 1):
            sid = base + 2 * k
            folder = out / "Sessions" / str(sid)
            xv, xa = r["valence"][1][k - 1], r["arousal"][1][k - 1]
            bdf = folder / f"Part_{s}_S_Trial{k}_emotion.bdf"
            synthetic.write_bdf(bdf, list(BDF_CHANNELS),
                                _synthetic_trial(rng, subj, xv, xa, duration, r["signature"][k - 1]), MAHNOB_SFREQ)
            tracks = [{"type": "Physiological", "id": "0", "filename": bdf.name}]
            vid = None
            if video:
                vid = folder / f"P{s}-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_{2 * k}.avi"
                synthetic.write_video(vid, rng, subj, xv, xa, 0.0, duration, duration + MAHNOB_SELF_REPORT,
                                      video_size, video_fps)
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
    return synthetic.write_truth(out, {"format": "mahnob", "seed": seed, "label_noise": label_noise,
                                       "trial_signature": trial_signature, "trials": truth, "unrated": unrated})


# MAHNOB-HCI's raw BDFs are low-passed at 45 Hz (and resampled from 256 to 128 Hz, PrepareConfig.rate). Its demo
# corpus (--synthetic): 6 subjects x 10 trials of 24 s = 80 windows per subject, small enough for a LOSO run on 2
# CPU cores within minutes; 6 subjects let a one-sided Wilcoxon test reach p < 0.05.
register_dataset(Dataset(name="mahnob", reader_module=__name__, prepare_defaults={"h_freq": 45.0},
                         writer=write_mahnob, demo_size={"subjects": 6, "trials": 10, "duration": 24.0, "seed": 0},
                         camera_size=(780, 580), camera_fps=60.0))
