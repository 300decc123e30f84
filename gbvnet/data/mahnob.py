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
``ReadReport.unrated`` (not an error, no warning). Ratings are on the 1-9 scale. ``trial`` is the session id,
``subject`` the ``<subject id>``.

Channels (our choice, the paper's count of 38, ``MAHNOB_CHANNELS``): the 32 EEG electrodes, EXG1-EXG3 (the ECG
leads), GSR1, Resp and Temp. ``bio`` holds them in SI units as mne returns them (volts for EEG/ECG/Resp).

Stimulus: the official BDFs hold about 30 s before and after the stimulus; the stimulus onset and offset are the
first two rising edges of the ``Status`` trigger bits (the low 16 bits; BioSemi uses the upper 8 for system
state). A BDF without ``Status`` or with fewer than two such events is an error.

Video: the session's frontal colour camera (the ``<track type="Video" color="1">``, whose file name contains
"C1 trigger"). Synchronisation is our reading of the release, which does not state it: the colour video starts
at the stimulus onset, the first Status trigger, so ``video_start = stim_start``. Public readers of the release
align it the same way (Idiap's ``bob.db.hci_tagging`` takes the first Status trigger as the video start; others
report colour videos 1.1-3.3x as long as the stimulus, running on into the self-report, too short to also hold
the 30 s before it). A session whose XML names a colour video missing on disk is an error naming the file; a
session whose XML names none gets ``video=None``.

Errors: :class:`~gbvnet.data.records.DataError` naming the file and the problem (malformed XML or felt values,
no subject, missing BDF, missing channels, no Status, missing video). With ``on_error="skip"`` the session is
skipped with a warning and recorded in the optional :class:`~gbvnet.data.records.ReadReport`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np

from gbvnet.data.deap import DEAP_CHANNELS
from gbvnet.data.records import DataError, ReadReport, TrialRecord, check_on_error, skip_or_raise

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
    """What one ``session.xml`` says. ``valence``/``arousal`` are None for sessions without felt ratings."""

    session: int
    subject: int
    xml: Path
    valence: float | None
    arousal: float | None
    bdf: Path | None
    video: Path | None

    @property
    def rated(self) -> bool:
        return self.valence is not None and self.arousal is not None


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
    return Session(
        session=_integer(xml, root.get("sessionId", xml.parent.name), "sessionId"),
        subject=_integer(xml, subject.get("id"), "subject id"),
        xml=xml, valence=_rating(xml, root, "feltVlnc"), arousal=_rating(xml, root, "feltArsl"), bdf=bdf, video=video,
    )  # fmt: skip


def _session_xmls(root: Path) -> list[Path]:
    """``Sessions/*/session.xml``, numeric session folders first, in numeric order."""
    def key(xml: Path) -> tuple[bool, int, str]:
        name = xml.parent.name
        return not name.isdigit(), int(name) if name.isdigit() else 0, name

    return sorted((Path(root) / "Sessions").glob("*/session.xml"), key=key)


def mahnob_sessions(
    root: str | Path, subjects: Iterable[int] | None = None, on_error: str = "fail", report: ReadReport | None = None
) -> list[Session]:
    """Every session of ``subjects`` (default all), rated or not, sorted by (subject, session id).

    A ``session.xml`` that cannot be parsed is an error (or skipped) whatever ``subjects`` is: its subject is
    unknown.
    """
    check_on_error(on_error)
    wanted = None if subjects is None else set(subjects)
    sessions = []
    for xml in _session_xmls(Path(root)):
        try:
            session = parse_session(xml)
        except DataError as exc:
            skip_or_raise(exc, on_error, report)
            continue
        if wanted is None or session.subject in wanted:
            sessions.append(session)
    return sorted(sessions, key=lambda s: (s.subject, s.session))


def _stimulus(path: Path, status: np.ndarray, sfreq: float) -> tuple[float, float]:
    on = (np.rint(status).astype(np.int64) & TRIGGER_BITS) != 0
    rises = np.flatnonzero(on[1:] & ~on[:-1]) + 1
    if len(rises) < 2:
        raise DataError(path, f"Status channel has {len(rises)} stimulus trigger(s); need onset and offset")
    return rises[0] / sfreq, rises[1] / sfreq


def read_bdf(path: str | Path) -> tuple[np.ndarray, float, float, float]:
    """``(bio, sfreq, stim_start, stim_end)`` of one session BDF: ``MAHNOB_CHANNELS`` x samples, SI units."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "BDF file named in session.xml is missing")
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


def read_session(session: Session) -> TrialRecord:
    """The trial of one rated session."""
    if session.bdf is None:
        raise DataError(session.xml, "names no Physiological (BDF) track")
    if session.video is not None and not session.video.is_file():
        raise DataError(session.video, f"face video named in {session.xml} is missing")
    bio, sfreq, stim_start, stim_end = read_bdf(session.bdf)
    sources = (session.xml, session.bdf, *([session.video] if session.video else []))
    return TrialRecord(
        subject=session.subject, trial=session.session, bio=bio, channels=list(MAHNOB_CHANNELS), sfreq=sfreq,
        stim_start=stim_start, stim_end=stim_end, valence=float(session.valence), arousal=float(session.arousal),
        video=session.video, video_start=stim_start, source_files=sources,
    )  # fmt: skip


def read_mahnob(
    root: str | Path,
    subjects: Iterable[int] | None = None,
    on_error: str = "fail",
    report: ReadReport | None = None,
) -> Iterator[TrialRecord]:
    """Yield one record per rated session of ``subjects`` (default all), by (subject, session id)."""
    for session in mahnob_sessions(root, subjects, on_error, report):
        if not session.rated:
            if report is not None:
                report.unrated.append(str(session.xml))
            continue
        try:
            record = read_session(session)
        except DataError as exc:
            skip_or_raise(exc, on_error, report)
            continue
        yield record


def read_mahnob_subject(
    root: str | Path, subject: int, on_error: str = "fail", report: ReadReport | None = None
) -> list[TrialRecord]:
    """All rated sessions of one subject, by session id."""
    return list(read_mahnob(root, [subject], on_error, report))


def mahnob_subject_files(root: str | Path) -> dict[int, list[Path]]:
    """The source files of each subject (every session.xml, and the BDF / video files that exist) for the cache
    manifest. Session XMLs that cannot be parsed are left out here; the readers report them."""
    files: dict[int, list[Path]] = {}
    for xml in _session_xmls(Path(root)):
        try:
            session = parse_session(xml)
        except DataError:
            continue
        found = [p for p in (session.bdf, session.video) if p is not None and p.is_file()]
        files.setdefault(session.subject, []).extend([xml, *found])
    return dict(sorted(files.items()))


# The uniform reader interface (same names in gbvnet.data.deap), as used by gbvnet.prepare.
subject_files = mahnob_subject_files
read_subject = read_mahnob_subject
