"""AMIGOS: the reader against what the synthetic writer wrote, preparation through the registry, every bad input,
and an evaluation on the prepared cache."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import loadmat, savemat

from gbvnet.config import ConfigError
from gbvnet.data import amigos, synthetic
from gbvnet.data.cache import open_cache
from gbvnet.data.records import DataError, ReadReport
from gbvnet.data.registry import DATASETS, get_dataset
from gbvnet.data.video import CASCADE
from gbvnet.data.window_dataset import WindowDataset
from gbvnet.evaluation import loso
from gbvnet.prepare import cli as prepare
from gbvnet.prepare import prepare_dataset
from tests.conftest import store_uri

SIZE = {"subjects": 3, "trials": 4, "long_trials": 1, "duration": 6.0, "long_duration": 9.0, "seed": 7}
WINDOWS = {"short": 2, "long": 3}  # 3 s windows, stride 3 s, in 6 s and 9 s stimuli


@pytest.fixture
def amigos_corpus(corpus):
    return corpus("amigos", **SIZE)


@pytest.fixture
def one_participant(amigos_corpus, tmp_path) -> Path:
    """A private copy of participant 1 (its .mat and face videos) to damage."""
    root = tmp_path / "amigos"
    (root / "data_preprocessed").mkdir(parents=True)
    shutil.copy(amigos_corpus[0] / "data_preprocessed" / "Data_Preprocessed_P01.mat", root / "data_preprocessed")
    shutil.copytree(amigos_corpus[0] / "face_videos", root / "face_videos",
                    ignore=lambda folder, names: [n for n in names if not n.startswith("P1_")])
    return root


def edit_mat(root: Path, change) -> Path:
    """Load participant 1's .mat, let ``change(variables)`` edit it, and save it back (MATLAB v5)."""
    path = root / "data_preprocessed" / "Data_Preprocessed_P01.mat"
    variables = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    change(variables)
    savemat(path, variables, format="5")
    return path


def read(root, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = amigos.read_amigos_subject(root, 1, **kwargs)
    return records, [str(w.message) for w in caught]


# ------------------------------------------------------------------------------------------------------ reader
def test_fields_follow_the_writer_and_the_videos_option(amigos_corpus):
    root, truth = amigos_corpus
    expected = {(t["subject"], t["trial"]): t for t in truth["trials"]}
    for videos, ids in (("short", ["4", "5", "9", "10"]), ("long", ["N1"]), ("all", ["4", "5", "9", "10", "N1"])):
        records = [r for s in (1, 2, 3) for r in amigos.read_subject(root, s, videos=videos)]
        assert [(r.subject, expected[(r.subject, r.trial)]["video_id"]) for r in records] == \
            [(s, v) for s in (1, 2, 3) for v in ids]
        for r in records:
            t = expected[(r.subject, r.trial)]
            assert (r.valence, r.arousal) == (t["valence"], t["arousal"])
            assert r.channels == list(amigos.AMIGOS_CHANNELS) and r.channels[14:] == ["ECG_Right", "ECG_Left", "GSR"]
            length = 6.0 if amigos.is_short(t["video_id"]) else 9.0
            assert r.bio.shape == (17, int((5 + length) * 128)) and r.sfreq == 128.0
            assert (r.stim_start, r.stim_end, r.video_start) == (5.0, 5.0 + length, 0.0)
            assert r.video == root / t["video"] and r.video.name == f"P{r.subject}_{t['video_id']}_face.mov"
            assert r.source_files == (root / t["mat"], r.video)
    stored = loadmat(root / "data_preprocessed" / "Data_Preprocessed_P02.mat")["joined_data"][0, 1]
    np.testing.assert_array_equal(amigos.read_subject(root, 2)[1].bio, stored.T)  # samples x 17, transposed
    files = amigos.subject_files(root)
    assert [p.name for p in files[1]] == ["Data_Preprocessed_P01.mat", *(f"P1_{v}_face.mov" for v in
                                                                         ("10", "4", "5", "9"))]
    assert amigos.subject_files(root, face=False, videos="all")[2] == [root / truth["trials"][5]["mat"]]


@pytest.mark.parametrize("place", ["Data_Preprocessed_P01", "Physiological Recordings/Matlab Preprocessed Data",
                                   "Physiological Recordings/Matlab Preprocessed Data/Data_Preprocessed_P01"])
def test_the_three_folder_layouts(one_participant, place):
    mat = one_participant / "data_preprocessed" / "Data_Preprocessed_P01.mat"
    (one_participant / place).mkdir(parents=True, exist_ok=True)
    shutil.copy(mat, one_participant / place)
    with pytest.raises(DataError, match="participant 1 is also in .*; keep one copy"):
        amigos.check_root(one_participant)
    mat.unlink()
    amigos.check_root(one_participant)
    assert amigos.mat_files(one_participant) == {1: one_participant / place / mat.name}
    assert len(amigos.read_subject(one_participant, 1)) == 4


def test_face_names_are_configurable(one_participant):
    for video in (one_participant / "face_videos").iterdir():
        participant, video_id, _ = video.name.split("_")
        video.rename(video.with_name(f"{video_id}-{participant[1:].zfill(2)}.mov"))
    records, _ = read(one_participant, face_names="{video}-{participant}.mov")
    assert [r.video.name for r in records] == ["4-01.mov", "5-01.mov", "9-01.mov", "10-01.mov"]
    with pytest.raises(DataError, match="--face-names: 'P.mov' must contain {participant} and {video}"):
        amigos.read_subject(one_participant, 1, face_names="P.mov")


def test_registry_entry_and_its_reader_options():
    entry = get_dataset("amigos")
    assert list(DATASETS)[:3] == ["deap", "mahnob", "amigos"]  # the built-in order, whichever was imported first
    assert entry.writer is amigos.write_amigos  # one module: its reader, its writer, its entry
    assert entry.reader is amigos and (entry.camera_size, entry.camera_fps) == ((1280, 720), 25.0)
    cfg = entry.prepare_config()
    assert cfg.h_freq is None and cfg.reader == {"videos": "short", "face_names": amigos.FACE_NAMES}
    assert entry.prepare_config(reader={"videos": "all"}).reader["videos"] == "all"
    with pytest.raises(ConfigError, match="--videos must be one of short, long, all for amigos, got 'some'"):
        entry.prepare_config(reader={"videos": "some"})
    with pytest.raises(ConfigError, match="deap has no reader option 'videos'"):
        get_dataset("deap").prepare_config(reader={"videos": "all"})


def test_synthetic_cli_writes_camera_size_quicktime_videos(tmp_path, capsys):
    synthetic.main(["--dataset", "amigos", "--out", str(tmp_path / "a"), "--n-subjects", "1", "--trials", "1",
                    "--duration", "2", "--video-size", "camera", "--video-fps", "5"])
    assert "wrote 1 amigos trials of 1 subjects" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(tmp_path / "a" / "face_videos" / "P1_4_face.mov"))
    size = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS))
    assert size == (1280, 720, 5) and cap.get(cv2.CAP_PROP_FRAME_COUNT) == (5 + 2) * 5
    ok, frame = cap.read()
    faces = cv2.CascadeClassifier(str(CASCADE)).detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), 1.1, 5,
                                                                 minSize=(90, 90))
    assert ok and len(faces) == 1
    with pytest.raises(SystemExit):
        synthetic.main(["--dataset", "deap", "--out", str(tmp_path / "d"), "--long-trials", "1"])
    assert "--long-trials does not apply to deap" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- bad input
def test_empty_and_nan_trials_are_skips_naming_participant_and_trial(one_participant):
    def damage(variables):
        variables["joined_data"][0, 0] = np.zeros((0, 0))
        variables["labels_selfassessment"][0, 0] = np.zeros((1, 0))
        variables["joined_data"][0, 2][100:110, 15] = np.nan

    path = edit_mat(one_participant, damage)
    report = ReadReport()
    records, messages = read(one_participant, on_error="skip", report=report)
    assert [r.trial for r in records] == [2, 4]
    assert [(s["unit"], s["subject"], s["trial"], s["path"]) for s in report.skipped] == \
        [("trial", 1, 1, str(path)), ("trial", 1, 3, str(path))]
    assert report.skipped[0]["problem"] == "participant 1 trial 1 (VideoID 4): empty trial in joined_data (no recording)"
    assert report.skipped[1]["problem"] == ("participant 1 trial 3 (VideoID 9): 10 non-finite (NaN) samples, the "
                                            "first in channel ECG_Left")
    assert sum(m.startswith("skipping ") for m in messages) == 2  # never silent
    report = ReadReport()  # under "fail" the empty trial (a gap in the release) is still a skip; NaN is an error
    with pytest.raises(DataError, match=r"P01\.mat: participant 1 trial 3 \(VideoID 9\): 10 non-finite"):
        read(one_participant, report=report)
    assert [s["trial"] for s in report.skipped] == [1]


def test_ratings_above_9_are_clipped_with_a_warning_below_1_are_errors(one_participant):
    def damage(variables):
        variables["labels_selfassessment"][0, 1][0, 0] = 9.6  # arousal
        variables["labels_selfassessment"][0, 3][0, 1] = 0.0  # valence

    edit_mat(one_participant, damage)
    report = ReadReport()
    records, messages = read(one_participant, on_error="skip", report=report)
    assert {r.trial: r.arousal for r in records}[2] == 9.0
    assert any("participant 1 trial 2 (VideoID 5): arousal rating 9.6 is above 9; clipped to 9" in m for m in messages)
    assert [(s["trial"], s["problem"]) for s in report.skipped] == \
        [(4, "participant 1 trial 4 (VideoID 10): valence rating 0 is not on the 1-9 scale")]


def test_v73_mat_is_refused_with_what_to_do(one_participant, tmp_path, capsys):
    path = one_participant / "data_preprocessed" / "Data_Preprocessed_P01.mat"
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    path.write_bytes(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM" + b"\x89HDF\r\n\x1a\n" + b"\0" * 512)
    with pytest.raises(DataError) as error:
        amigos.read_subject(one_participant, 1)
    assert str(error.value) == (f"{path}: is a MATLAB v7.3 (HDF5) file, which this reader does not read: use the v5 "
                                ".mat of the official download, or re-save it in MATLAB/Octave with "
                                "save(file, '-v7')")
    with pytest.raises(SystemExit) as exit_:
        prepare.main(["--dataset", "amigos", "--root", str(one_participant), "--cache", str(tmp_path / "c")])
    assert exit_.value.code == f"error: {error.value}" and "\n" not in exit_.value.code
    assert not (tmp_path / "c").exists()


def test_missing_face_video_is_a_warning_listing_what_was_found(one_participant, tmp_path):
    (one_participant / "face_videos" / "P1_5_face.mov").unlink()
    records, messages = read(one_participant)
    assert [r.video is None for r in records] == [False, True, False, False]
    assert [m for m in messages if "no face video named" in m] == [
        f"AMIGOS participant 1 trial 2 (VideoID 5): no face video named P1_5_face.mov under {one_participant} "
        "(found for participant 1: P1_10_face.mov, P1_4_face.mov, P1_9_face.mov, P1_N1_face.mov); no face video "
        "(extract the archives, or set --face-names)"]
    shutil.rmtree(one_participant / "face_videos")
    (one_participant / "Exp1_P01_face.zip").write_bytes(b"PK")
    _, messages = read(one_participant)
    assert "found no face video of participant 1; video files and archives under the root: Exp1_P01_face.zip" in \
        messages[0]


def test_bio_only_preparation_never_opens_a_video(one_participant, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a video was looked for")

    for video in (one_participant / "face_videos").iterdir():
        video.write_bytes(b"not a video")
    monkeypatch.setattr(amigos, "face_videos", refuse)
    monkeypatch.setattr("gbvnet.data.video.cv2.VideoCapture", refuse)
    report = prepare_dataset("amigos", one_participant, str(tmp_path / "c"), face=False, progress=False)
    assert report["windows"] == 4 * WINDOWS["short"] and not report["warnings"]


# ------------------------------------------------------------------------------------------ prepared, evaluated
def test_prepared_cache_agrees_with_the_writer(prepared_cache, amigos_corpus):
    root, truth = amigos_corpus
    cache = open_cache(str(prepared_cache("amigos", SIZE, frames=2, face_size=32, reader={"videos": "all"})))
    assert cache.manifest.config.reader == {"videos": "all", "face_names": amigos.FACE_NAMES}
    index = cache.index()
    keys = list(zip(index.subject.tolist(), index.trial.tolist(), strict=True))
    expected = {(t["subject"], t["trial"]): t for t in truth["trials"]}
    assert list(dict.fromkeys(keys)) == list(expected)
    assert index.has_face and index.has_face_rows.all()
    assert sum(e.face_fallbacks for e in cache.manifest.subjects.values()) == 0  # the cascade finds every face
    bio = WindowDataset(cache, modality="bio").bio_array(np.arange(len(keys)))
    for key, t in expected.items():
        rows = np.flatnonzero([k == key for k in keys])
        assert len(rows) == WINDOWS["short" if amigos.is_short(t["video_id"]) else "long"]
        np.testing.assert_allclose(index.t_start[rows], 5.0 + 3.0 * np.arange(len(rows)))
        assert (index.label_valence[rows] == int(t["valence"] > 5)).all()
        assert (index.label_arousal[rows] == int(t["arousal"] > 5)).all()
        stored = loadmat(root / t["mat"])["joined_data"][0, key[1] - 1]
        for row in rows:  # not filtered: a window is the float32 slice of the stored samples
            start = int(round(index.t_start[row] * 128))
            np.testing.assert_array_equal(bio[row], stored[start:start + 384].T.astype(np.float32))


@pytest.mark.slow
def test_loso_bio_and_facebio(ray_session, prepared_cache, tmp_path):
    cache = prepared_cache("amigos", SIZE, frames=2, face_size=32)
    for modality in ("bio", "facebio"):
        out = tmp_path / modality
        doc = loso.main(["--dataset", "amigos", "--cache", str(cache), "--preset", "smoke", "--modality", modality,
                         "--epochs", "1", "--test-subjects", "1", "--tracking-uri", store_uri(out),
                         "--storage", str(out / "ray"), "--output", str(out / "out.json"), "--quiet"])
        assert doc["dataset"] == "amigos" and doc["modality"] == modality
        assert [f["test_subjects"] for f in doc["folds"]] == [[1]]
        assert 0.0 <= doc["aggregate"]["test_balanced_accuracy_mean"] <= 1.0
