"""DEAP and MAHNOB-HCI readers: every field against what the synthetic writer wrote, and every bad input."""

from __future__ import annotations

import csv
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from gbvnet.data import deap, mahnob, synthetic
from gbvnet.data.records import DataError, ReadReport

DURATION = 5.0


@pytest.fixture
def deap_corpus(corpus):
    return corpus("deap", subjects=3, trials=4, seed=11)


@pytest.fixture
def mahnob_corpus(corpus):
    return corpus("mahnob", subjects=2, trials=3, seed=11, duration=DURATION)


@pytest.fixture
def deap_copy(deap_corpus, tmp_path):
    """A private copy of the DEAP corpus (subject 1 only) to damage."""
    root, truth = deap_corpus
    for sub in ("data_preprocessed_python/s01.dat", "metadata_csv/participant_ratings.csv"):
        (tmp_path / sub).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / sub, tmp_path / sub)
    shutil.copytree(root / "face_video" / "s01", tmp_path / "face_video" / "s01")
    return tmp_path, [t for t in truth["trials"] if t["subject"] == 1]


def _csv_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "metadata_csv" / "participant_ratings.csv", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------------ DEAP
def test_deap_fields(deap_corpus):
    root, truth = deap_corpus
    records = list(deap.read_deap(root))
    assert [(r.subject, r.trial) for r in records] == [(t["subject"], t["trial"]) for t in truth["trials"]]
    for r, t in zip(records, truth["trials"], strict=True):
        assert (r.valence, r.arousal) == (t["valence"], t["arousal"])
        assert r.channels == list(deap.DEAP_CHANNELS) and len(r.channels) == 40
        assert r.channels[:3] == ["Fp1", "AF3", "F3"] and r.channels[32:] == [
            "hEOG", "vEOG", "zEMG", "tEMG", "GSR", "Respiration belt", "Plethysmograph", "Temperature"]
        assert r.bio.shape == (40, 8064) and r.bio.dtype == np.float64 and r.sfreq == 128.0
        assert (r.stim_start, r.stim_end, r.video_start, r.duration) == (3.0, 63.0, 0.0, 63.0)
        assert r.video == root / t["video"]
        assert r.source_files == (deap.dat_path(root, r.subject), root / deap.RATINGS_CSV, r.video)


def test_deap_bio_rows_are_views_in_video_order(deap_corpus):
    root, _ = deap_corpus
    with open(deap.dat_path(root, 2), "rb") as f:
        stored = pickle.load(f, encoding="latin1")["data"]
    records = deap.read_deap_subject(root, 2)
    for k, r in enumerate(records):
        np.testing.assert_array_equal(r.bio, stored[k])
        assert r.bio.base is not None and np.shares_memory(r.bio, records[0].bio.base)


def test_deap_video_follows_the_csv_presentation_order(deap_corpus):
    root, _ = deap_corpus
    presentation = {(int(r["Participant_id"]), int(r["Experiment_id"])): int(r["Trial"]) for r in _csv_rows(root)}
    assert any(trial != experiment for (_, experiment), trial in presentation.items())
    for r in deap.read_deap(root):
        assert r.video.name == f"s{r.subject:02d}_trial{presentation[(r.subject, r.trial)]:02d}.avi"


def test_deap_alignment_is_never_positional(deap_copy):
    root, _ = deap_copy
    rows = _csv_rows(root)
    order = [int(r["Trial"]) for r in rows]
    for row, trial in zip(rows, order[1:] + order[:1], strict=True):  # a different presentation order
        row["Trial"] = str(trial)
    with open(root / deap.RATINGS_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for r in deap.read_deap(root):
        row = next(x for x in rows if int(x["Experiment_id"]) == r.trial)
        assert r.video.name == f"s01_trial{int(row['Trial']):02d}.avi"


def test_deap_without_csv_reads_bio_only(deap_copy):
    root, truth = deap_copy
    (root / deap.RATINGS_CSV).unlink()
    with pytest.warns(UserWarning, match="participant_ratings.csv: missing"):
        records = deap.read_deap_subject(root, 1)
    assert [r.video for r in records] == [None] * 4
    assert [r.valence for r in records] == [t["valence"] for t in truth]
    assert records[0].source_files == (deap.dat_path(root, 1),)


def test_deap_missing_video_warns(deap_copy):
    root, truth = deap_copy
    (root / truth[2]["video"]).unlink()
    with pytest.warns(UserWarning, match=r"subject 1 trial 3: .*is missing; no face video"):
        records = deap.read_deap_subject(root, 1)
    assert [r.video is None for r in records] == [False, False, True, False]


def test_deap_subject_files_and_selection(deap_corpus):
    root, _ = deap_corpus
    files = deap.deap_subject_files(root)
    assert sorted(files) == [1, 2, 3] and deap.subject_files is deap.deap_subject_files
    assert files[2][:2] == [deap.dat_path(root, 2), root / deap.RATINGS_CSV]
    assert [p.name for p in files[2][2:]] == [f"s02_trial{k:02d}.avi" for k in range(1, 5)]
    assert {r.subject for r in deap.read_deap(root, subjects=[3])} == {3}
    assert len(deap.read_subject(root, 1)) == 4


def _replace_dat(root: Path, **arrays) -> Path:
    path = deap.dat_path(root, 1)
    with open(path, "rb") as f:
        stored = pickle.load(f, encoding="latin1")
    synthetic.write_deap_dat(path, {**stored, **arrays})
    return path


@pytest.mark.parametrize("damage, problem", [
    (lambda b: b[: len(b) // 2], "not a valid DEAP pickle"),
    (lambda b: b"DEAP? no, a text file\n" * 10, "not a valid DEAP pickle"),
    (lambda b: b"", "not a valid DEAP pickle"),
], ids=["truncated", "text", "empty"])  # fmt: skip
def test_deap_truncated_or_not_a_pickle(deap_copy, damage, problem):
    root, _ = deap_copy
    path = deap.dat_path(root, 1)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=problem) as info:
        deap.read_deap_subject(root, 1)
    assert info.value.path == str(path) and str(path) in str(info.value)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_deap_pickle_cannot_run_code(deap_copy, tmp_path_factory):
    root, _ = deap_copy
    marker = tmp_path_factory.mktemp("exploit") / "pwned"
    path = deap.dat_path(root, 1)
    path.write_bytes(pickle.dumps({"data": _Exploit(marker), "labels": [[5.0] * 4]}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to unpickle (__builtin__|builtins|io)\.open") as info:
        deap.read_deap_subject(root, 1)
    assert info.value.path == str(path)
    assert not marker.exists()


@pytest.mark.parametrize("arrays, problem", [
    ({"data": np.zeros((4, 39, 8064))}, r"'data' has shape \(4, 39, 8064\)"),
    ({"data": np.zeros((4, 40, 8000))}, r"'data' has shape \(4, 40, 8000\)"),
    ({"data": np.zeros((40, 8064))}, r"'data' has shape \(40, 8064\)"),
    ({"labels": np.full((4, 3), 5.0)}, r"'labels' has shape \(4, 3\), expected \(4, 4\)"),
    ({"labels": np.full((4, 4), 12.0)}, r"trial 1 \(Experiment_id\): 'labels' valence rating 12 is not on"),
    ({"data": np.zeros((4, 40, 8064), dtype=np.int32)}, "'data' must be a float array"),
])  # fmt: skip
def test_deap_wrong_arrays(deap_copy, arrays, problem):
    root, _ = deap_copy
    path = _replace_dat(root, **arrays)
    with pytest.raises(DataError, match=problem) as info:
        deap.read_deap_subject(root, 1)
    assert info.value.path == str(path)


def test_deap_missing_keys(deap_copy):
    root, _ = deap_copy
    path = deap.dat_path(root, 1)
    synthetic.write_deap_dat(path, {"data": np.zeros((4, 40, 8064))})
    with pytest.raises(DataError, match="'data' and 'labels'"):
        deap.read_deap_subject(root, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_deap_non_finite_samples(deap_copy, bad):
    root, truth = deap_copy
    with open(deap.dat_path(root, 1), "rb") as f:
        data = pickle.load(f, encoding="latin1")["data"]
    data[1, deap.DEAP_CHANNELS.index("GSR"), 100] = bad
    path = _replace_dat(root, data=data)
    with pytest.raises(DataError, match="trial 2 .*non-finite samples in channel GSR") as info:
        deap.read_deap_subject(root, 1)
    assert info.value.path == str(path)
    report = ReadReport()
    with pytest.warns(UserWarning, match="skipping .*non-finite"):
        records = deap.read_deap_subject(root, 1, on_error="skip", report=report)
    assert [r.trial for r in records] == [1, 3, 4]
    assert report.skipped == [{"unit": "trial", "subject": 1, "trial": 2, "path": str(path),
                               "problem": "trial 2 (Experiment_id): non-finite samples in channel GSR"}]


def test_deap_skip_a_broken_subject(deap_corpus, tmp_path):
    root, truth = deap_corpus
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    bad = deap.dat_path(tmp_path, 2)
    bad.write_bytes(b"\x80\x02}q\x00(U")
    with pytest.raises(DataError):
        list(deap.read_deap(tmp_path))
    report = ReadReport()
    with pytest.warns(UserWarning, match="skipping"):
        records = list(deap.read_deap(tmp_path, on_error="skip", report=report))
    assert sorted({r.subject for r in records}) == [1, 3]
    assert [(item["unit"], item["subject"], item["path"]) for item in report.skipped] == [("subject", 2, str(bad))]
    assert deap.deap_subjects(tmp_path) == [1, 2, 3]  # the manifest still lists it
    with pytest.raises(ValueError, match="on_error"):
        list(deap.read_deap(tmp_path, on_error="ignore"))


def test_deap_missing_subject_file(deap_corpus):
    root, _ = deap_corpus
    with pytest.raises(DataError, match="s07.dat: cannot read"):
        deap.read_deap_subject(root, 7)


def test_deap_malformed_csv(deap_copy):
    root, _ = deap_copy
    rows = _csv_rows(root)
    rows[1]["Experiment_id"] = rows[0]["Experiment_id"]
    with open(root / deap.RATINGS_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match=r"participant_ratings.csv: line 3: participant 1 lists .* twice"):
        deap.read_deap_subject(root, 1)
    report = ReadReport()
    with pytest.warns(UserWarning):
        records = deap.read_deap_subject(root, 1, on_error="skip", report=report)
    assert len(records) == 4 and all(r.video is None for r in records)
    assert [(item["unit"], item["subject"], item["path"]) for item in report.skipped] == [
        ("face videos", 1, str(root / deap.RATINGS_CSV))]
    assert "none are attached (fix the CSV, or prepare bio-only with --no-face)" in report.skipped[0]["problem"]
    with warnings.catch_warnings():  # bio-only reading never opens the CSV
        warnings.simplefilter("error")
        records = deap.read_deap_subject(root, 1, face=False)
    assert len(records) == 4 and all(r.video is None for r in records)
    assert deap.deap_subject_files(root, face=False) == {1: [deap.dat_path(root, 1)]}


@pytest.mark.parametrize("column, value", [(0, np.nan), (1, 0.0), (0, 9.5)])
def test_deap_bad_rating_costs_one_trial(deap_copy, column, value):
    root, truth = deap_copy
    with open(deap.dat_path(root, 1), "rb") as f:
        labels = pickle.load(f, encoding="latin1")["labels"]
    labels[2, column] = value
    path = _replace_dat(root, labels=labels)
    name = ("valence", "arousal")[column]
    problem = f"trial 3 (Experiment_id): 'labels' {name} rating {value:g} is not on the 1-9 scale"
    with pytest.raises(DataError) as info:
        deap.read_deap_subject(root, 1)
    assert (info.value.path, info.value.problem) == (str(path), problem)
    report = ReadReport()
    with pytest.warns(UserWarning, match="skipping"):
        records = deap.read_deap_subject(root, 1, on_error="skip", report=report)
    assert [r.trial for r in records] == [1, 2, 4]
    assert report.skipped == [{"unit": "trial", "subject": 1, "trial": 3, "path": str(path), "problem": problem}]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_deap_dat_resaved_by_python3(deap_copy, protocol):
    """Python 3 re-saves .dat files with _codecs.encode (protocol 2) or numeric._frombuffer (protocol 5)."""
    root, truth = deap_copy
    path = deap.dat_path(root, 1)
    with open(path, "rb") as f:
        stored = pickle.load(f, encoding="latin1")
    path.write_bytes(pickle.dumps(stored, protocol=protocol))
    records = deap.read_deap_subject(root, 1)
    assert [(r.valence, r.arousal) for r in records] == [(t["valence"], t["arousal"]) for t in truth]
    for k, r in enumerate(records):
        np.testing.assert_array_equal(r.bio, stored["data"][k])


def test_deap_refusal_says_what_to_do(deap_copy):
    root, _ = deap_copy
    path = deap.dat_path(root, 1)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00rot_13\x86R.")
    with pytest.raises(DataError, match="not a valid DEAP pickle .*only latin1"):
        deap.load_dat(path)
    path.write_bytes(pickle.dumps({"data": np.float64, "labels": 1}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to unpickle numpy.float64: a DEAP .dat holds only numpy arrays "
                                        r".*re-save it as pickle.dump"):
        deap.load_dat(path)


# ---------------------------------------------------------------------------------------------------- MAHNOB
def test_mahnob_fields(mahnob_corpus):
    root, truth = mahnob_corpus
    report = ReadReport()
    records = list(mahnob.read_mahnob(root, report=report))
    assert [(r.subject, r.trial) for r in records] == [(t["subject"], t["trial"]) for t in truth["trials"]]
    n = int((mahnob.MAHNOB_PRE + DURATION + mahnob.MAHNOB_POST) * 256)
    for r, t in zip(records, truth["trials"], strict=True):
        assert (r.valence, r.arousal) == (t["valence"], t["arousal"])
        assert r.channels == list(mahnob.MAHNOB_CHANNELS) and len(r.channels) == 38
        assert r.channels[32:] == ["EXG1", "EXG2", "EXG3", "GSR1", "Resp", "Temp"]
        assert r.bio.shape == (38, n) and r.sfreq == 256.0
        assert r.stim_start == 30.0 and r.stim_end == 30.0 + DURATION
        assert r.video == root / t["video"] and r.video_start == r.stim_start
        assert r.source_files == (root / "Sessions" / str(t["trial"]) / "session.xml", root / t["bdf"], r.video)
        assert np.abs(r.bio[:32]).max() < 1e-3  # EEG in volts
        assert 1e5 < r.bio[35].mean() < 1e7  # GSR1 in Ohm
    assert sorted(report.unrated) == sorted(str(root / p) for p in truth["unrated"])
    assert report.skipped == []


def test_mahnob_subject_api(mahnob_corpus):
    root, truth = mahnob_corpus
    records = mahnob.read_mahnob_subject(root, 2)
    assert [r.trial for r in records] == [t["trial"] for t in truth["trials"] if t["subject"] == 2]
    files = mahnob.mahnob_subject_files(root)
    assert sorted(files) == [1, 2] and mahnob.subject_files is mahnob.mahnob_subject_files
    t = truth["trials"][0]
    assert files[1][:3] == [root / "Sessions" / str(t["trial"]) / "session.xml", root / t["bdf"], root / t["video"]]
    assert root / truth["unrated"][0] in files[1]


def _session(root: Path, sid: int = 2, *, attrs: str = 'feltVlnc="7" feltArsl="3"', subject: str = '<subject id="4"/>',
             channels: tuple[str, ...] = mahnob.BDF_CHANNELS, triggers: tuple[float, ...] = (1.0, 3.0),
             video: str | None = "P4-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_2.avi",
             write_video: bool = True) -> Path:
    """One small session (4 s BDF at 256 Hz) under ``root``; returns its session.xml."""
    folder = root / "Sessions" / str(sid)
    folder.mkdir(parents=True)
    tracks = '<track type="Physiological" id="0" filename="Part_4_S_Trial1_emotion.bdf"/>'
    if video:
        tracks += f'<track type="Video" id="1" color="0" filename="bw.avi"/><track type="Video" id="2" color="1" filename="{video}"/>'
        if write_video:
            (folder / video).write_bytes(b"avi")
    xml = folder / "session.xml"
    xml.write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<session sessionId="{sid}" {attrs}>{subject}{tracks}'
                   "</session>")
    data = np.random.default_rng(0).normal(0, 10, (len(channels), 1024))
    if "Status" in channels:
        status = np.full(1024, mahnob.STATUS_CODE, dtype=float)
        for t in triggers:
            status[int(t * 256):int(t * 256) + 5] += mahnob.TRIGGER
        data[channels.index("Status")] = status
    synthetic.write_bdf(folder / "Part_4_S_Trial1_emotion.bdf", list(channels), data, 256)
    return xml


def test_mahnob_small_session_and_colour_video(tmp_path):
    xml = _session(tmp_path)
    (record,) = mahnob.read_mahnob(tmp_path)
    assert (record.subject, record.trial, record.valence, record.arousal) == (4, 2, 7.0, 3.0)
    assert (record.stim_start, record.stim_end, record.video_start) == (1.0, 3.0, 1.0)
    assert record.video == xml.parent / "P4-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_2.avi"


@pytest.mark.parametrize("attrs", ['', 'feltVlnc="" feltArsl=""', 'feltEmo="3" feltCtrl="2"'])
def test_mahnob_unrated_sessions_are_skipped_and_counted(tmp_path, attrs):
    xml = _session(tmp_path, attrs=attrs)
    report = ReadReport()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(mahnob.read_mahnob(tmp_path, report=report)) == []
    assert report.unrated == [str(xml)] and report.skipped == []


@pytest.mark.parametrize("attrs, problem", [
    ('feltVlnc="high" feltArsl="3"', "feltVlnc='high' is not a number"),
    ('feltVlnc="7" feltArsl="12"', "feltArsl='12' is outside the 1-9 rating scale"),
    ('feltVlnc="0" feltArsl="3"', "feltVlnc='0' is outside"),
    ('feltVlnc="nan" feltArsl="3"', "feltVlnc='nan' is outside"),
    ('feltArsl="3" feltEmo="1"', "feltArsl='3' is given but feltVlnc is missing"),
    ('feltVlnc="5"', "feltVlnc='5' is given but feltArsl is missing"),
    ('feltVlnc="" feltArsl="3"', "feltArsl='3' is given but feltVlnc is missing"),
])  # fmt: skip
def test_mahnob_malformed_felt_values(tmp_path, attrs, problem):
    xml = _session(tmp_path, attrs=attrs)
    with pytest.raises(DataError, match=problem) as info:
        list(mahnob.read_mahnob(tmp_path))
    assert info.value.path == str(xml)
    report = ReadReport()  # the session alone is skipped, named by subject and session id
    with pytest.warns(UserWarning, match="skipping"):
        assert mahnob.read_mahnob_subject(tmp_path, 4, on_error="skip", report=report) == []
    assert [(i["unit"], i["subject"], i["trial"], i["path"]) for i in report.skipped] == [("trial", 4, 2, str(xml))]
    assert report.unrated == []


def test_mahnob_duplicate_session_folder(tmp_path):
    xml = _session(tmp_path, sid=2)
    copy = tmp_path / "Sessions" / "2 - Copy"
    shutil.copytree(xml.parent, copy)
    with pytest.raises(DataError, match=f"sessionId 2 is also the id of {xml}") as info:
        mahnob.read_mahnob_subject(tmp_path, 4)
    assert info.value.path == str(copy / "session.xml")
    report = ReadReport()
    with pytest.warns(UserWarning, match="skipping"):
        records = mahnob.read_mahnob_subject(tmp_path, 4, on_error="skip", report=report)
    assert [r.source_files[0] for r in records] == [xml]  # the first copy (numeric folder) is kept
    assert [(i["unit"], i["subject"], i["trial"], i["path"]) for i in report.skipped] == [
        ("trial", 4, 2, str(copy / "session.xml"))]


def test_mahnob_bio_only_needs_no_videos(tmp_path):
    xml = _session(tmp_path, write_video=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (record,) = mahnob.read_mahnob_subject(tmp_path, 4, face=False)
    assert record.video is None and record.source_files == (xml, xml.parent / "Part_4_S_Trial1_emotion.bdf")
    assert mahnob.mahnob_subject_files(tmp_path, face=False) == {4: [xml, xml.parent / "Part_4_S_Trial1_emotion.bdf"]}
    with pytest.raises(DataError, match="face video named in .* is missing .*--no-face"):
        mahnob.read_mahnob_subject(tmp_path, 4)


def test_mahnob_unparsable_xml_belongs_to_no_subject(tmp_path):
    _session(tmp_path, sid=2)
    bad = tmp_path / "Sessions" / "9" / "session.xml"
    bad.parent.mkdir()
    bad.write_text("<session")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(mahnob.read_mahnob_subject(tmp_path, 4)) == 1  # left to check_root
    with pytest.raises(DataError, match="malformed session XML") as info:
        mahnob.check_root(tmp_path)
    assert info.value.path == str(bad)
    report = ReadReport()
    with pytest.warns(UserWarning, match="skipping"):
        mahnob.check_root(tmp_path, "skip", report)
    assert [(i["unit"], i["subject"], i["path"]) for i in report.skipped] == [("file", None, str(bad))]
    for root, what in ((tmp_path / "none", "does not exist"), (tmp_path / "Sessions" / "2", "holds no Sessions")):
        with pytest.raises(DataError, match=f"{what}.*--root must be the MAHNOB-HCI download folder"):
            mahnob.check_root(root)


def test_deap_check_root(tmp_path, deap_copy):
    root, _ = deap_copy
    deap.check_root(root)
    for folder, what in ((tmp_path / "none", "does not exist"), (root / "metadata_csv", "holds no data_prep")):
        with pytest.raises(DataError, match=f"{what}.*--root must be the DEAP download folder") as info:
            deap.check_root(folder)
        assert info.value.path == str(folder)


def test_mahnob_malformed_xml_and_subject(tmp_path):
    xml = _session(tmp_path, subject="")
    with pytest.raises(DataError, match="no <subject> element"):
        list(mahnob.read_mahnob(tmp_path))
    xml.write_text(xml.read_text().replace("<subject id", "<subject idx").replace("</session>", ""))
    with pytest.raises(DataError, match="malformed session XML") as info:
        list(mahnob.read_mahnob(tmp_path))
    assert info.value.path == str(xml)
    xml.write_text('<session sessionId="2"><subject id="four"/></session>')
    with pytest.raises(DataError, match="subject id 'four' is not an integer"):
        mahnob.parse_session(xml)


@pytest.mark.parametrize("drop", ["GSR1", "Fp1", "EXG3"])
def test_mahnob_bdf_missing_or_renamed_channel(tmp_path, drop):
    channels = tuple(c if c != drop else f"{drop}x" for c in mahnob.BDF_CHANNELS)
    xml = _session(tmp_path, channels=channels)
    with pytest.raises(DataError, match=f"missing channel\\(s\\) {drop}$") as info:
        list(mahnob.read_mahnob(tmp_path))
    assert info.value.path == str(xml.parent / "Part_4_S_Trial1_emotion.bdf")


def test_mahnob_bdf_without_status(tmp_path):
    xml = _session(tmp_path, channels=mahnob.BDF_CHANNELS[:-1])
    with pytest.raises(DataError, match="no Status channel") as info:
        list(mahnob.read_mahnob(tmp_path))
    assert info.value.path == str(xml.parent / "Part_4_S_Trial1_emotion.bdf")


@pytest.mark.parametrize("triggers", [(), (1.0,)])
def test_mahnob_bdf_without_two_stimulus_events(tmp_path, triggers):
    _session(tmp_path, triggers=triggers)
    with pytest.raises(DataError, match=f"Status channel has {len(triggers)} stimulus trigger"):
        list(mahnob.read_mahnob(tmp_path))


def test_mahnob_missing_files(tmp_path):
    xml = _session(tmp_path, write_video=False)
    with pytest.raises(DataError, match=r"_C1 trigger _C_Section_2.avi: face video named in .*session.xml is missing"):
        list(mahnob.read_mahnob(tmp_path))
    shutil.rmtree(xml.parent)
    xml = _session(tmp_path, video=None)
    assert next(mahnob.read_mahnob(tmp_path)).video is None
    (xml.parent / "Part_4_S_Trial1_emotion.bdf").unlink()
    with pytest.raises(DataError, match="Part_4_S_Trial1_emotion.bdf: BDF file named in session.xml is missing"):
        list(mahnob.read_mahnob(tmp_path))
    (xml.parent / "Part_4_S_Trial1_emotion.bdf").write_bytes(b"\xffBIOSEMI garbage")
    with pytest.raises(DataError, match="cannot read BDF"):
        list(mahnob.read_mahnob(tmp_path))


@pytest.mark.parametrize("keep", [0.5, 0.9, 1.1])  # cut in half, cut after the stimulus, extra bytes
def test_mahnob_truncated_bdf(tmp_path, keep):
    xml = _session(tmp_path, triggers=(1.0, 2.0))
    bdf = xml.parent / "Part_4_S_Trial1_emotion.bdf"
    data = bdf.read_bytes()
    header = 256 * (len(mahnob.BDF_CHANNELS) + 1)
    size = header + int((len(data) - header) * keep)
    bdf.write_bytes(data[:size] if keep < 1 else data + bytes(size - len(data)))
    what = "truncated" if keep < 1 else "damaged"
    with pytest.raises(DataError, match=f"{what} BDF: {size:,} bytes, but its header promises 4 records = "
                                        f"{len(data):,} bytes; download it again") as info:
        list(mahnob.read_mahnob(tmp_path))
    assert info.value.path == str(bdf)


def test_mahnob_skip_keeps_the_good_sessions(tmp_path):
    _session(tmp_path, sid=2)
    bad = _session(tmp_path, sid=4, attrs='feltVlnc="x" feltArsl="3"')
    _session(tmp_path, sid=6, triggers=(1.0,))
    report = ReadReport()
    with pytest.warns(UserWarning, match="skipping"):
        records = mahnob.read_mahnob_subject(tmp_path, 4, on_error="skip", report=report)
    assert [r.trial for r in records] == [2]
    assert [Path(item["path"]).parent.name for item in report.skipped] == ["4", "6"]
    assert report.skipped[0] == {"unit": "trial", "subject": 4, "trial": 4, "path": str(bad),
                                 "problem": "feltVlnc='x' is not a number"}
    assert list(mahnob.mahnob_subject_files(tmp_path)) == [4]  # the unparsable XML is left to the reader
