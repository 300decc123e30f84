"""The synthetic corpus writer: official layouts and formats, a learnable signal, faces the Haar cascade finds."""

from __future__ import annotations

import csv
import json
import pickle

import cv2
import mne
import numpy as np
import pytest
from scipy.signal import welch

from gbvnet.data import deap, mahnob, synthetic

DURATION = 6.0
SIZES = {"deap": {"subjects": 2, "trials": 4, "seed": 3},  # this module's corpora (the corpus fixture's sizes)
         "mahnob": {"subjects": 2, "trials": 4, "seed": 3, "duration": DURATION}}


def test_deap_layout(corpus):
    root, truth = corpus("deap", **SIZES["deap"])
    assert json.loads((root / synthetic.TRUTH_FILE).read_text()) == truth
    for s in (1, 2):
        assert (root / "data_preprocessed_python" / f"s{s:02d}.dat").is_file()
    with open(root / "metadata_csv" / "participant_ratings.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["Participant_id", "Trial", "Experiment_id", "Start_time", "Valence", "Arousal",
                                     "Dominance", "Liking", "Familiarity"]
        rows = list(reader)
    assert len(rows) == len(truth["trials"]) == 8
    for t in truth["trials"]:
        row = next(r for r in rows if int(r["Participant_id"]) == t["subject"] and int(r["Experiment_id"]) == t["trial"])
        assert int(row["Trial"]) == t["presentation"]
        assert float(row["Valence"]) == t["valence"] and float(row["Arousal"]) == t["arousal"]
        assert t["video"] == f"face_video/s{t['subject']:02d}/s{t['subject']:02d}_trial{t['presentation']:02d}.avi"
        assert (root / t["video"]).is_file()
    # presentation order differs from video order (for at least one subject)
    assert any(t["presentation"] != t["trial"] for t in truth["trials"])


def test_deap_dat_is_a_python2_numpy_pickle(corpus):
    root, truth = corpus("deap", **SIZES["deap"])
    raw = (root / "data_preprocessed_python" / "s01.dat").read_bytes()
    assert raw[:2] == b"\x80\x02" and raw.endswith(b".")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw
    obj = pickle.loads(raw, encoding="latin1")
    assert obj["data"].shape == (4, 40, 8064) and obj["data"].dtype == np.float64
    assert obj["labels"].shape == (4, 4)
    expected = [(t["valence"], t["arousal"]) for t in truth["trials"] if t["subject"] == 1]
    np.testing.assert_array_equal(obj["labels"][:, :2], expected)


def test_mahnob_layout(corpus):
    root, truth = corpus("mahnob", **SIZES["mahnob"])
    assert len(truth["trials"]) == 8 and len(truth["unrated"]) == 2
    t = truth["trials"][5]
    assert t["trial"] == 130 + 2 * 2 and t["subject"] == 2
    assert t["bdf"] == f"Sessions/{t['trial']}/Part_2_S_Trial2_emotion.bdf"
    assert "C1 trigger" in t["video"] and (root / t["video"]).is_file()
    session = mahnob.parse_session(root / "Sessions" / str(t["trial"]) / "session.xml")
    assert (session.subject, session.valence, session.arousal) == (2, t["valence"], t["arousal"])
    assert session.video == root / t["video"] and session.bdf == root / t["bdf"]
    raw = mne.io.read_raw_bdf(root / t["bdf"], preload=True, verbose="error")
    assert raw.ch_names == list(mahnob.BDF_CHANNELS) and raw.info["sfreq"] == 256
    assert raw.n_times == (mahnob.MAHNOB_PRE + DURATION + mahnob.MAHNOB_POST) * 256
    events = mne.find_events(raw, stim_channel="Status", mask=0xFFFF, mask_type="and", verbose="error")
    np.testing.assert_array_equal(events[:, 0], [30 * 256, (30 + DURATION) * 256])
    cap = cv2.VideoCapture(str(root / t["video"]))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == (DURATION + mahnob.MAHNOB_SELF_REPORT) * synthetic.VIDEO_FPS


def test_write_bdf_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = np.vstack([rng.normal(0, 50, (2, 700)), rng.uniform(9e5, 1e6, (1, 700)), np.r_[np.zeros(350), np.ones(350)
                                                                                         * 0x100010][None]])
    synthetic.write_bdf(tmp_path / "x.bdf", ["Fp1", "EXG1", "GSR1", "Status"], data, 256)
    raw = mne.io.read_raw_bdf(tmp_path / "x.bdf", preload=True, verbose="error")
    got = raw.get_data()
    assert raw.n_times == 768  # padded to whole 1 s records
    np.testing.assert_allclose(got[:2, :700] * 1e6, data[:2], atol=1e-3)  # uV stored, volts read
    np.testing.assert_allclose(got[2, :700], data[2], rtol=1e-6)  # Ohm: not rescaled
    np.testing.assert_array_equal(got[3, :700], data[3].astype(int) & 0xFFFF)  # mne keeps the trigger bits


@pytest.mark.parametrize("fmt", list(SIZES))
def test_haar_cascade_finds_generated_faces(fmt, corpus):
    root, truth = corpus(fmt, **SIZES[fmt])
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    checked = 0
    for t in truth["trials"][:4]:
        cap = cv2.VideoCapture(str(root / t["video"]))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in np.linspace(0, n - 1, 5).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
            ok, frame = cap.read()
            assert ok and frame.shape == (synthetic.VIDEO_SIZE, synthetic.VIDEO_SIZE, 3)
            faces = cascade.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), 1.1, 5)
            assert len(faces) == 1, f"{t['video']} frame {k}: {len(faces)} faces"
            checked += 1
    assert checked == 20


def _mouth_curvature(frame: np.ndarray) -> float:
    """How much darker red (the mouth) sits at the corners than in the middle: > 0 smiles, < 0 frowns."""
    red = (frame[..., 2].astype(int) - frame[..., 1].astype(int) > 50) & (frame[..., 1] < 80)
    ys, xs = np.nonzero(red[synthetic.VIDEO_SIZE // 2:])
    centre = np.abs(xs - xs.mean()) < 3
    return float(ys[centre].mean() - ys[~centre].mean())


def test_signal_follows_the_ratings(tmp_path):
    """Within a subject, frontal alpha asymmetry, GSR and mouth curvature separate high from low ratings."""
    truth = deap.write_deap(tmp_path, subjects=1, trials=10, seed=5, label_noise=0.2)
    records = {r.trial: r for r in deap.read_deap(tmp_path)}
    left = [deap.DEAP_CHANNELS.index(c) for c in ("Fp1", "AF3", "F3", "F7", "FC5", "FC1")]
    right = [deap.DEAP_CHANNELS.index(c) for c in ("Fp2", "AF4", "F4", "F8", "FC6", "FC2")]
    feats = {"valence": {}, "arousal": {}}
    for t in truth["trials"]:
        bio = records[t["trial"]].bio[:, 3 * 128:]
        f, p = welch(bio[:32], fs=128, nperseg=256)
        alpha = p[:, (f >= 8) & (f <= 12)].mean(1)
        cap = cv2.VideoCapture(str(tmp_path / t["video"]))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
        frame = cap.read()[1]
        asym = np.log(alpha[right].mean() / alpha[left].mean())
        feats["valence"][t["trial"]] = (asym, _mouth_curvature(frame))
        feats["arousal"][t["trial"]] = (bio[deap.DEAP_CHANNELS.index("GSR")].mean(),)
    for target in ("valence", "arousal"):
        clean = [t for t in truth["trials"] if not t[f"noisy_{target}"]]
        noisy = [t for t in truth["trials"] if t[f"noisy_{target}"]]
        assert len(noisy) == 2
        for k in range(len(feats[target][clean[0]["trial"]])):
            high = [feats[target][t["trial"]][k] for t in clean if t[target] > 5]
            low = [feats[target][t["trial"]][k] for t in clean if t[target] <= 5]
            assert min(high) > max(low), (target, k, high, low)
            # the noisy trials carry the opposite signal
            for t in noisy:
                value = feats[target][t["trial"]][k]
                assert (value < min(high)) if t[target] > 5 else (value > max(low))


def test_deterministic_and_label_noise(tmp_path):
    a = mahnob.write_mahnob(tmp_path / "a", subjects=1, trials=10, seed=7, duration=2, video=False)
    b = mahnob.write_mahnob(tmp_path / "b", subjects=1, trials=10, seed=7, duration=2, video=False)
    c = mahnob.write_mahnob(tmp_path / "c", subjects=1, trials=10, seed=8, duration=2, video=False)
    assert a["trials"] == b["trials"] != c["trials"]
    assert sum(t["noisy_valence"] for t in a["trials"]) == sum(t["noisy_arousal"] for t in a["trials"]) == 1
    assert sum(t["valence"] > 5 for t in a["trials"]) == 5  # balanced
    assert all(float(t["valence"]).is_integer() and 1 <= t["valence"] <= 9 for t in a["trials"])
    assert (tmp_path / "a" / a["trials"][0]["bdf"]).read_bytes() == (tmp_path / "b" / b["trials"][0]["bdf"]).read_bytes()


def test_cli(tmp_path, capsys):
    synthetic.main(["--dataset", "deap", "--out", str(tmp_path), "--n-subjects", "1", "--trials", "2", "--no-video"])
    assert "wrote 2 deap trials" in capsys.readouterr().out
    assert (tmp_path / "data_preprocessed_python" / "s01.dat").is_file()
    assert not (tmp_path / "face_video").exists()
    with pytest.warns(UserWarning, match="no face video"):
        assert [r.video for r in deap.read_deap(tmp_path)] == [None, None]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="trials"):
        deap.write_deap(tmp_path, trials=41)
    with pytest.raises(ValueError, match="duration"):
        mahnob.write_mahnob(tmp_path, duration=0.5)


def test_camera_size_videos(tmp_path, capsys):
    """The writers can record at the real cameras' size and rate (for the preparation bench)."""
    truth = mahnob.write_mahnob(tmp_path / "m", subjects=1, trials=1, seed=2, duration=1.0,
                                video_size=(780, 580), video_fps=60.0)
    video = tmp_path / "m" / truth["trials"][0]["video"]
    cap = cv2.VideoCapture(str(video))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (780, 580)
    assert cap.get(cv2.CAP_PROP_FPS) == 60 and cap.get(cv2.CAP_PROP_FRAME_COUNT) == 60 * (1 + 5)
    assert mahnob.parse_session(video.parent / "session.xml").video == video
    assert 'vidRate="60"' in (video.parent / "session.xml").read_text()
    ok, frame = cap.read()
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), 1.1, 5, minSize=(72, 72))
    assert ok and len(faces) == 1 and 150 < faces[0][3] < 350  # ~40 % of the 580 px height
    synthetic.main(["--dataset", "deap", "--out", str(tmp_path / "d"), "--n-subjects", "1", "--trials", "1",
                    "--video-size", "camera", "--video-fps", "5"])
    cap = cv2.VideoCapture(str(next((tmp_path / "d" / "face_video").glob("*/*.avi"))))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS)) == (
        720, 576, 5)
    with pytest.raises(SystemExit):
        synthetic.main(["--dataset", "deap", "--out", str(tmp_path / "x"), "--video-size", "720"])
    assert "--video-size must be WIDTHxHEIGHT" in capsys.readouterr().err
