"""Preparation into the window cache: columns and values against the readers, leakage-free windows, bad input,
atomicity (failed or interrupted runs leave the old cache byte-for-byte), incremental re-runs, face frames."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from gbvnet.config import PrepareConfig
from gbvnet.data import cache as cache_mod
from gbvnet.data import deap, mahnob, storage, synthetic
from gbvnet.data.cache import open_cache, read_manifest
from gbvnet.data.records import DataError, TrialRecord
from gbvnet.data.registry import DATASETS, Reader, get_dataset
from gbvnet.data.sources import SYNTHETIC_PREPARE, resolve_cache
from gbvnet.data.video import crop_square, face_crops, read_frames
from gbvnet.data.window_dataset import WindowDataset
from gbvnet.data.windows import cut, windows
from gbvnet.prepare import CacheConflict, format_report, prepare_dataset
from gbvnet.prepare import cli as prepare_cli

INDEX_TYPES = {"subject": pa.int32(), "trial": pa.int32(), "window": pa.int32(), "t_start": pa.float32(),
               "stim_start": pa.float32(), "stim_end": pa.float32(), "valence": pa.float32(),
               "arousal": pa.float32(), "label_valence": pa.int8(), "label_arousal": pa.int8()}


def run(dataset, root, cache, cfg=None, **kw):
    return prepare_dataset(dataset, root, str(cache), cfg, progress=False, **kw)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (caches here are a few MB)."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(Path(folder).iterdir())}


def truth_of(root: Path) -> dict[tuple[int, int], dict]:
    return {(t["subject"], t["trial"]): t for t in json.loads((root / synthetic.TRUTH_FILE).read_text())["trials"]}


def bump_mtime(path: Path, seconds: int = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def clock_video(path: Path, frames: int, fps: float = synthetic.VIDEO_FPS, size: int = 48) -> None:
    """A video whose frame k is uniformly grey at level min(4 k, 255) (and holds no face)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    assert writer.isOpened()
    for k in range(frames):
        writer.write(np.full((size, size, 3), min(4 * k, 255), np.uint8))
    writer.release()


@pytest.fixture
def deap_copy(small_deap_corpus, tmp_path) -> Path:
    root = tmp_path / "deap"
    shutil.copytree(small_deap_corpus, root)
    return root


@pytest.fixture
def mahnob_copy(small_mahnob_corpus, tmp_path) -> Path:
    root = tmp_path / "mahnob"
    shutil.copytree(small_mahnob_corpus, root)
    return root


# --------------------------------------------------------------------------------------------- cache contents
def test_deap_cache_matches_the_reader(small_deap_corpus, tmp_path):
    cfg = DATASETS["deap"].prepare_config(window=4.0, stride=2.5, threshold=6.0)
    report = run("deap", small_deap_corpus, tmp_path / "c", cfg)  # face=True, but the corpus has no videos
    cache = open_cache(str(tmp_path / "c"))
    size, per_trial = 512, (8064 - 384 - 512) // 320 + 1  # 4 s at 128 Hz; stride 2.5 s = 320 samples
    assert report["windows"] == len(cache.index().subject) == 3 * 3 * per_trial == 3 * 3 * 23
    for table in cache.tables:
        assert {name: table.schema.field(name).type for name in INDEX_TYPES} == INDEX_TYPES
        assert table.schema.field("bio").type == pa.list_(pa.float32(), 40 * size)
        assert table.schema.field("face").type == pa.null()  # no videos: null, no bytes
        assert table.column("bio").num_chunks == 1
    m = cache.manifest
    assert (m.channels, m.window_samples, m.rate, m.face) == (list(deap.DEAP_CHANNELS), size, 128.0, True)
    index = cache.index()
    assert not index.has_face
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no face video": this corpus has none
        records = {(r.subject, r.trial): r for r in deap.read_deap(small_deap_corpus)}
    truth = truth_of(small_deap_corpus)
    keys = list(zip(index.subject.tolist(), index.trial.tolist(), strict=True))
    assert list(dict.fromkeys(keys)) == list(records) == list(truth)  # subject, then Experiment_id order
    bio = WindowDataset(cache, modality="bio").bio_array(np.arange(len(keys)))
    assert bio.shape == (len(keys), 40, size) and bio.dtype == np.float32
    table = {name: np.concatenate([t.column(name).to_numpy() for t in cache.tables]) for name in INDEX_TYPES}
    for key, rec in records.items():
        rows = np.flatnonzero([k == key for k in keys])
        assert table["window"][rows].tolist() == list(range(per_trial))
        np.testing.assert_allclose(table["t_start"][rows], 3.0 + 2.5 * np.arange(per_trial))
        assert (table["stim_start"][rows] == 3.0).all() and (table["stim_end"][rows] == 63.0).all()
        t = truth[key]
        assert (table["valence"][rows] == np.float32(t["valence"])).all()
        assert (table["arousal"][rows] == np.float32(t["arousal"])).all()
        assert (table["label_valence"][rows] == int(t["valence"] > 6.0)).all()
        assert (table["label_arousal"][rows] == int(t["arousal"] > 6.0)).all()
        for row in rows:  # DEAP is not filtered: a window is the float32 slice of the stored signal
            start = int(round(table["t_start"][row] * 128))
            np.testing.assert_array_equal(bio[row], rec.bio[:, start:start + size].astype(np.float32))
    # leakage-free: inside the stimulus, and the next window of the same stride would not fit
    assert (table["t_start"] >= table["stim_start"]).all()
    assert (table["t_start"] + 4.0 <= table["stim_end"]).all()
    assert (table["t_start"][table["window"] == per_trial - 1] + 2.5 + 4.0 > 63.0).all()


def test_mahnob_cache_matches_the_reader(small_mahnob_corpus, small_mahnob_cache):
    cache = open_cache(str(small_mahnob_cache))
    cfg = DATASETS["mahnob"].prepare_config(frames=2, face_size=32)
    assert cache.manifest.config == cfg
    for table in cache.tables:
        assert {name: table.schema.field(name).type for name in INDEX_TYPES} == INDEX_TYPES
        assert table.schema.field("bio").type == pa.list_(pa.float32(), 38 * 384)
        assert table.schema.field("face").type == pa.list_(pa.uint8(), 2 * 32 * 32 * 3)
    index = cache.index()
    truth = truth_of(small_mahnob_corpus)
    assert index.trial.tolist() == [2, 2, 4, 4, 132, 132, 134, 134]  # MAHNOB session ids, 2 windows of 3 s in 6 s
    assert index.subject.tolist() == [1, 1, 1, 1, 2, 2, 2, 2] and index.window.tolist() == [0, 1] * 4
    np.testing.assert_allclose(index.stim_start, 30.0)
    np.testing.assert_allclose(index.stim_end, 36.0)
    np.testing.assert_allclose(index.t_start, [30.0, 33.0] * 4)
    for row, key in enumerate(zip(index.subject.tolist(), index.trial.tolist(), strict=True)):
        assert index.label_valence[row] == int(truth[key]["valence"] > 5)
        assert index.label_arousal[row] == int(truth[key]["arousal"] > 5)
    ds = WindowDataset(cache, modality="facebio")
    bio = ds.bio_array(np.arange(len(ds)))
    for rec in mahnob.read_mahnob(small_mahnob_corpus):  # filtered + resampled: the same as cut() gives
        rows = np.flatnonzero((index.subject == rec.subject) & (index.trial == rec.trial))
        np.testing.assert_array_equal(bio[rows], cut(rec, cfg).bio)
    assert index.has_face_rows.all()
    faces = ds._gather(ds._face, np.arange(len(ds)))
    assert faces.shape == (8, 2, 32, 32, 3) and faces.dtype == np.uint8 and faces.std() > 10
    assert cache.manifest.subjects[1].face_frames == 2 * 2 * 2


@pytest.mark.parametrize("window, stride, start, end, sfreq", [
    (3.0, 3.0, 3.0, 63.0, 128.0), (4.0, 2.5, 1.37, 9.91, 128.0), (1.0, 0.3, 0.0, 2.0, 128.0),
    (2.0, 5.0, 2.01, 13.99, 128.0), (3.0, 1.0, 30.0, 36.5, 256.0),
])  # fmt: skip
def test_windows_lie_inside_the_stimulus(window, stride, start, end, sfreq):
    n = int((end + 2.0) * sfreq)
    signal = np.arange(n, dtype=np.float64)[None, :] + 1e5 * np.arange(3)[:, None]  # sample index, per channel
    rec = TrialRecord(subject=1, trial=7, bio=signal, channels=["a", "b", "c"], sfreq=sfreq, stim_start=start,
                      stim_end=end, valence=5.0, arousal=5.0, source_files=(Path("x.dat"),))
    cfg = PrepareConfig(window=window, stride=stride, frames=3, h_freq=None)
    w = cut(rec, cfg)
    size, step = cfg.window_samples, int(round(stride * 128))
    assert w.bio.shape == (len(w.t_start), 3, size) and w.bio.dtype == np.float32 and w.bio.flags.c_contiguous
    assert (w.t_start >= start - 1e-9).all() and (w.t_start + window <= end + 1e-9).all()
    assert w.t_start[-1] + step / 128 + window > end  # as many windows as fit
    np.testing.assert_allclose(np.diff(w.t_start), step / 128)
    assert ((w.frame_times > w.t_start[:, None]) & (w.frame_times < w.t_start[:, None] + window)).all()
    np.testing.assert_allclose(w.frame_times[:, 1] - w.t_start, window / 2)
    if sfreq == 128.0:  # not resampled: each window is the signal from its start sample on
        first = np.rint(w.t_start * 128).astype(int)
        np.testing.assert_array_equal(w.bio[:, 0, 0], first)
        np.testing.assert_array_equal(w.bio[:, 2, :], (first[:, None] + np.arange(size)) + 2e5)
    view = windows(rec, cfg).bio
    np.testing.assert_array_equal(view.astype(np.float32), w.bio)
    if sfreq == 128.0:
        assert np.shares_memory(view, rec.bio)  # windows() copies nothing


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def short_second_subject(mahnob_copy, corpus) -> Path:
    """The MAHNOB copy with subject 2's sessions replaced by 2 s stimuli (no videos)."""
    short = corpus("mahnob", subjects=2, trials=2, seed=6, duration=2.0, video=False)[0]
    for sid in ("132", "134"):
        shutil.rmtree(mahnob_copy / "Sessions" / sid)
        shutil.copytree(short / "Sessions" / sid, mahnob_copy / "Sessions" / sid)
    return mahnob_copy


def test_window_longer_than_the_stimulus(short_second_subject, tmp_path):
    root, cache = short_second_subject, tmp_path / "cache"
    with pytest.raises(DataError, match="window of 3 s is longer than the stimulus of subject 2 trial 132 "
                                        r"\(2.00 s\)") as info:
        run("mahnob", root, cache, face=False)
    assert info.value.path == str(root / "Sessions" / "132" / "session.xml")
    assert not cache.exists()  # nothing written, not even an empty cache folder
    with pytest.warns(UserWarning, match="skipped subject 2: .*every trial skipped"):
        report = run("mahnob", root, cache, on_error="skip", face=False)
    assert report["redone"] == [1] and report["subjects"] == 1
    assert [(s["subject"], s["trial"]) for s in report["skipped"]] == [(2, 132), (2, 134)]
    assert all("longer than the stimulus" in s["problem"] for s in report["skipped"])
    assert read_manifest(str(cache)).skipped == report["skipped"]
    text = format_report(report)
    assert "SKIPPED subject 2 trial 132: " in text and "SKIPPED subject 2 trial 134: " in text


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_dat_leaves_the_old_cache_or_is_skipped(deap_copy, tmp_path, workers):
    cache = tmp_path / "cache"
    run("deap", deap_copy, cache, face=False)
    before = snapshot(cache)
    for s in (2, 3):  # these would be redone, and in parallel runs are written before subject 1 fails
        bump_mtime(deap.dat_path(deap_copy, s))
    dat = deap.dat_path(deap_copy, 1)
    dat.write_bytes(dat.read_bytes()[:5000])
    with pytest.raises(DataError, match="not a valid DEAP pickle") as info:
        run("deap", deap_copy, cache, face=False, workers=workers)
    assert info.value.path == str(dat)
    assert snapshot(cache) == before  # byte for byte: no temporary or orphan file, the manifest untouched
    with pytest.warns(UserWarning, match="skipped subject 1"):
        report = run("deap", deap_copy, cache, face=False, workers=workers, on_error="skip")
    assert report["redone"] == [2, 3] and report["subjects"] == 2
    assert [(s["subject"], s["path"]) for s in report["skipped"]] == [(1, str(dat))]
    manifest = read_manifest(str(cache))
    assert sorted(manifest.subjects) == [2, 3] and manifest.skipped == report["skipped"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["manifest.json", *(manifest.subjects[s].file for s in (2, 3))])
    assert sorted(set(open_cache(str(cache)).index().subject.tolist())) == [2, 3]


def test_bad_mahnob_sessions_fail_or_are_skipped(mahnob_copy, tmp_path):
    cache = tmp_path / "cache"
    run("mahnob", mahnob_copy, cache, face=False)
    before = snapshot(cache)
    bdf = mahnob_copy / "Sessions" / "4" / "Part_1_S_Trial2_emotion.bdf"
    synthetic.write_bdf(bdf, list(mahnob.BDF_CHANNELS[:-1]), np.zeros((46, 1024)), 256)  # no Status channel
    video = next((mahnob_copy / "Sessions" / "134").glob("*.avi"))
    video.unlink()
    with pytest.raises(DataError, match="no Status channel") as info:
        run("mahnob", mahnob_copy, cache, face=False)
    assert info.value.path == str(bdf)
    assert snapshot(cache) == before
    with pytest.warns(UserWarning) as caught:
        report = run("mahnob", mahnob_copy, cache, face=False, on_error="skip")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"skipped subject 1 trial 4: {bdf}: no Status channel") for m in messages)
    assert report["redone"] == [1] and report["windows"] == 6  # bio-only: the missing video changes nothing
    assert [(s["unit"], s["subject"], s["trial"], s["path"]) for s in report["skipped"]] == [("trial", 1, 4, str(bdf))]
    assert read_manifest(str(cache)).skipped == report["skipped"]
    assert open_cache(str(cache)).index().trial.tolist() == [2, 2, 132, 132, 134, 134]
    with pytest.warns(UserWarning) as caught:
        report = run("mahnob", mahnob_copy, tmp_path / "faces", DATASETS["mahnob"].prepare_config(frames=1, face_size=32),
                     on_error="skip")
    assert any(str(w.message).startswith(f"skipped subject 2 trial 134: {video}: face video named in")
               for w in caught)
    assert [(s["unit"], s["subject"], s["trial"]) for s in report["skipped"]] == [("trial", 1, 4), ("trial", 2, 134)]
    assert open_cache(str(tmp_path / "faces")).index().trial.tolist() == [2, 2, 132, 132]
    # the same damage is reported again by a re-run under "fail", although nothing changed since
    with pytest.raises(DataError, match="no Status channel"):
        run("mahnob", mahnob_copy, cache, face=False)


def test_subject_without_rated_sessions_is_left_out(mahnob_copy, tmp_path):
    for sid in ("132", "134"):  # subject 2 only has sessions without felt ratings (not an error)
        xml = mahnob_copy / "Sessions" / sid / "session.xml"
        xml.write_text(xml.read_text().replace("feltVlnc=", "feltVlncX=").replace("feltArsl=", "feltArslX="))
    with pytest.warns(UserWarning, match="skipped subject 2: .*subject 2 has no rated trials"):
        report = run("mahnob", mahnob_copy, tmp_path / "cache", face=False)
    assert report["redone"] == [1] and [s["subject"] for s in report["skipped"]] == [2]
    assert open_cache(str(tmp_path / "cache")).subjects == [1]


def test_interrupted_writes_leave_the_old_cache(deap_copy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    run("deap", deap_copy, cache, face=False)
    before = snapshot(cache)
    bump_mtime(deap.dat_path(deap_copy, 1))
    bump_mtime(deap.dat_path(deap_copy, 2))
    real_new_file, calls = pa.ipc.new_file, []

    class Failing:  # writes the schema and part of the data of the second file, then is interrupted
        def __init__(self, sink, schema):
            self.sink, self.inner = sink, real_new_file(sink, schema)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write_table(self, table, **kw):
            self.inner.write_table(table.slice(0, 2))
            raise KeyboardInterrupt

    def new_file(sink, schema):
        calls.append(1)
        return real_new_file(sink, schema) if len(calls) == 1 else Failing(sink, schema)

    monkeypatch.setattr(pa.ipc, "new_file", new_file)
    with pytest.raises(KeyboardInterrupt):
        run("deap", deap_copy, cache, face=False)
    assert len(calls) == 2 and snapshot(cache) == before  # subject 1's new file removed, no .tmp left
    monkeypatch.setattr(pa.ipc, "new_file", real_new_file)

    def no_manifest(*args):
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod, "write_json", no_manifest)
    with pytest.raises(OSError, match="disk full"):
        run("deap", deap_copy, cache, face=False)
    assert snapshot(cache) == before


def test_cli_reports_errors_naming_the_file(deap_copy, tmp_path, capsys):
    dat = deap.dat_path(deap_copy, 3)
    dat.write_bytes(b"not a pickle")
    args = ["--dataset", "deap", "--root", str(deap_copy), "--cache", str(tmp_path / "c"), "--no-face"]
    with pytest.raises(SystemExit) as info:
        prepare_cli.main(args)
    assert str(info.value.code).startswith(f"error: {dat}: not a valid DEAP pickle")
    with pytest.warns(UserWarning, match="skipped subject 3"):
        report = prepare_cli.main([*args, "--on-error", "skip", "--window", "2", "--stride", "1"])
    out = capsys.readouterr().out
    assert f"SKIPPED subject 3: {dat}: not a valid DEAP pickle" in out
    assert "cache: 2 subjects, 354 windows (redone: [1, 2]" in out and report["windows"] == 2 * 3 * 59


# ------------------------------------------------------------------------------------------- incremental
def test_rerun_redoes_only_what_changed(deap_copy, tmp_path):
    cache = tmp_path / "cache"
    first = run("deap", deap_copy, cache, face=False)
    assert first["redone"] == [1, 2, 3]
    files = {s: e.file for s, e in read_manifest(str(cache)).subjects.items()}
    before, times = snapshot(cache), stamps(cache)
    again = run("deap", deap_copy, cache, face=False)
    assert again["redone"] == [] and again["unchanged"] == [1, 2, 3] and again["windows"] == first["windows"]
    assert snapshot(cache) == before and stamps(cache) == times  # not even the manifest is rewritten

    bump_mtime(deap.dat_path(deap_copy, 2))  # touching one subject's source
    report = run("deap", deap_copy, cache, face=False)
    assert report["redone"] == [2] and report["unchanged"] == [1, 3] and report["windows_redone"] == 60
    now = {s: e.file for s, e in read_manifest(str(cache)).subjects.items()}
    assert now[1] == files[1] and now[3] == files[3] and now[2] != files[2]
    assert sorted(p.name for p in cache.iterdir()) == sorted(["manifest.json", *now.values()])  # old file gone
    assert stamps(cache)[now[1]] == times[files[1]]

    # a face video appearing does not touch a bio-only cache; a face cache of subject 1 redoes subject 1 only
    run("deap", deap_copy, tmp_path / "faces")
    order = deap.read_presentation_order(deap_copy / deap.RATINGS_CSV)
    video = deap.video_path(deap_copy, 1, order[1][2])  # the video of Experiment_id 2
    video.parent.mkdir(parents=True)
    clock_video(video, 630)
    assert run("deap", deap_copy, cache, face=False)["redone"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the other trials' videos are missing
        assert run("deap", deap_copy, tmp_path / "faces")["redone"] == [1]

    # another preparation config is refused (the cache is kept), or with rebuild redoes everything
    cfg = DATASETS["deap"].prepare_config(threshold=7.0)
    before = snapshot(cache)
    with pytest.raises(CacheConflict, match="prepared with threshold=5.0; this command asks threshold=7.0"):
        run("deap", deap_copy, cache, cfg, face=False)
    assert snapshot(cache) == before
    report = run("deap", deap_copy, cache, cfg, face=False, rebuild=True)
    assert report["redone"] == [1, 2, 3]
    manifest = read_manifest(str(cache))
    assert manifest.config.threshold == 7.0 and not set(now.values()) & {e.file for e in manifest.subjects.values()}
    assert len(list(cache.iterdir())) == 4
    truth = truth_of(deap_copy)
    index = open_cache(str(cache)).index()
    expected = [int(truth[(s, t)]["valence"] > 7.0) for s, t in zip(index.subject, index.trial, strict=True)]
    assert index.label_valence.tolist() == expected


def test_old_schema_or_damaged_manifest_is_prepared_again(deap_copy, tmp_path):
    cache = tmp_path / "cache"
    run("deap", deap_copy, cache, face=False, subjects=[1])
    manifest = cache / cache_mod.MANIFEST
    data = json.loads(manifest.read_text())
    entry = data["subjects"]["1"]
    for damaged, problem in (({**data, "schema_version": 0}, "cache schema version 0 is not 1"),
                             ({k: v for k, v in data.items() if k != "face"}, "no field 'face'"),
                             ({**data, "rate": "128"}, "field 'rate' is a str, not float"),
                             ({**data, "extra": 1}, "unknown field 'extra'"),
                             ({**data, "config": {**data["config"], "window": None}},
                              "config: field 'window' is a NoneType, not float"),
                             ({**data, "subjects": {"1": {k: v for k, v in entry.items() if k != "face_rows"}}},
                              "subject 1: no field 'face_rows'"),
                             ({**data, "subjects": {"one": entry}}, "subject 'one' is not a subject number")):
        manifest.write_text(json.dumps(damaged))
        with pytest.raises(ValueError, match=f"^{re.escape(f'{manifest}: {problem}')}") as info:
            open_cache(str(cache))
        assert "\n" not in str(info.value) and "prepare the cache again" in str(info.value)
    manifest.write_text("{")
    with pytest.raises(ValueError, match=f"^{re.escape(str(manifest))}: not JSON"):
        open_cache(str(cache))
    with pytest.warns(UserWarning, match="ignoring the old manifest"):
        assert run("deap", deap_copy, cache, face=False, subjects=[1])["redone"] == [1]
    assert len(list(cache.iterdir())) == 2 and open_cache(str(cache)).subjects == [1]


def test_manifest_reads_back_to_the_json_on_disk(small_mahnob_cache, tmp_path):
    """The typed manifest round-trips the file exactly, so a cache's digest is that of its manifest's content
    (logged to MLflow, checked by the search-provenance audit: it must not change with the code reading it)."""
    path = small_mahnob_cache / cache_mod.MANIFEST
    data = json.loads(path.read_text())
    manifest = read_manifest(str(small_mahnob_cache))
    assert manifest.to_dict() == data and cache_mod.Manifest.from_dict(manifest.to_dict()) == manifest
    assert open_cache(str(small_mahnob_cache)).index().manifest_hash == hashlib.sha256(
        json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    cache_mod.write_manifest(*cache_mod.filesystem(str(tmp_path)), manifest)
    assert (tmp_path / cache_mod.MANIFEST).read_bytes() == path.read_bytes()


# ---------------------------------------------------------------------------------------------- face frames
def test_read_frames_maps_times_to_frames(tmp_path):
    video = tmp_path / "clock.avi"
    clock_video(video, 12)
    times = np.array([0.0, 0.05, 0.1, 0.55, 1.19, 5.0, -1.0, 0.3])  # unsorted, past the end, before the start
    frames = read_frames(video, times, span=(1.0, 1.5))
    assert frames.shape == (8, 48, 48, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), 4 * np.array([0, 0, 1, 5, 11, 11, 0, 3]), atol=1.5)
    with pytest.warns(UserWarning, match="video lasts 1.2 s but should cover 4.0 s .* check the video/signal sync"):
        read_frames(video, times[:2], span=(4.0, 10.0))
    with pytest.warns(UserWarning, match="check the video/signal sync"):
        read_frames(video, times[:2], span=(0.5, 0.5), tolerance=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_frames(video, times[:2], span=(3.0, 3.0))  # within the default 2 s tolerance
    with pytest.raises(DataError, match="missing video"):
        read_frames(tmp_path / "none.avi", times)
    (tmp_path / "bad.avi").write_bytes(b"RIFF garbage")
    with pytest.raises(DataError, match="bad.avi: "):
        read_frames(tmp_path / "bad.avi", times)


def test_face_frames_follow_the_window_times(mahnob_copy, tmp_path):
    sessions = mahnob_copy / "Sessions"
    clock = next((sessions / "4").glob("*.avi"))
    clock_video(clock, 110)  # 11 s at 10 fps, as long as the original (stimulus + 5 s); no face in it
    short = next((sessions / "2").glob("*.avi"))
    clock_video(short, 20)  # 2 s: shorter than the 6 s stimulus by more than the tolerance
    xml = sessions / "134" / "session.xml"
    xml.write_text("\n".join(line for line in xml.read_text().splitlines() if 'type="Video"' not in line))
    cfg = DATASETS["mahnob"].prepare_config(frames=2, face_size=32)
    report = run("mahnob", mahnob_copy, tmp_path / "cache", cfg)
    assert report["face_frames"] == 3 * 2 * 2  # three sessions with video, 2 windows x 2 frames each
    assert report["face_fallbacks"] >= 8  # the clock videos hold no face
    assert f"{report['face_fallbacks']} without a detection" in format_report(report)
    assert [(v["video"], v["fallbacks"]) for v in report["face_fallback_videos"]] == [(str(short), 4), (str(clock), 4)]
    assert "2 video(s) without a face in more than 20% of their sampled frames" in format_report(report)
    assert any(w.startswith(f"{clock}: no face found in 4 of 4 sampled frames (100%)") for w in report["warnings"])
    manifest = read_manifest(str(tmp_path / "cache"))
    assert manifest.subjects[1].face_fallback_videos == report["face_fallback_videos"]
    assert any(str(short) in w and "check the video/signal sync" in w for w in report["warnings"])
    assert not any(str(clock) in w and "sync" in w for w in report["warnings"])
    cache = open_cache(str(tmp_path / "cache"))
    index = cache.index()
    assert index.has_face_rows.tolist() == [True] * 6 + [False] * 2  # session 134 has no video: null face
    assert cache.tables[1].column("face").null_count == 2
    ds = WindowDataset(cache, modality="facebio")
    for session, video_frames in ((4, 110), (2, 20)):
        rows = np.flatnonzero(index.trial == session)
        times = index.t_start[rows, None] + (np.arange(2) + 0.5) * 3.0 / 2 - index.stim_start[rows, None]
        expected = 4 * np.minimum(np.floor(times * 10), video_frames - 1)  # frame floor(t * fps), else the last
        crops = ds._gather(ds._face, rows)  # centre crops of a uniform frame: uniform
        np.testing.assert_allclose(crops.mean(axis=(2, 3, 4)), expected, atol=1.5)
        assert expected.ravel().tolist() == {4: [28, 88, 148, 208], 2: [28, 76, 76, 76]}[session]


# ------------------------------------------------------------------------------------------------ locations
def test_cache_at_uris_and_relative_paths(small_deap_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.LOCAL_COPY_ENV, str(tmp_path / "copies"))  # not the user's ~/.cache/gbvnet
    local = tmp_path / "local"
    run("deap", small_deap_corpus, local, face=False, subjects=[1, 2])
    expected = WindowDataset(open_cache(str(local)), modality="bio").bio_array(np.arange(120))
    uri = f"memory://gbvnet-test-{os.getpid()}/cache"  # fsspec's in-memory filesystem: not local, no mmap
    report = run("deap", small_deap_corpus, uri, face=False, subjects=[1, 2])
    assert report["redone"] == [1, 2]
    assert run("deap", small_deap_corpus, uri, face=False, subjects=[1, 2])["redone"] == []
    remote = open_cache(uri)
    assert not isinstance(remote.fs, pafs.LocalFileSystem)
    np.testing.assert_array_equal(WindowDataset(remote, modality="bio").bio_array(np.arange(120)), expected)
    assert len(list((tmp_path / "copies").rglob("subject_*.arrow"))) == 2  # the remote files' local copies
    file_uri = (tmp_path / "viauri").as_uri()
    run("deap", small_deap_corpus, file_uri, face=False, subjects=[1, 2])
    assert (tmp_path / "viauri" / "manifest.json").exists()
    np.testing.assert_array_equal(WindowDataset(open_cache(file_uri), modality="bio").bio_array(np.arange(120)),
                                  expected)
    monkeypatch.chdir(tmp_path)
    prepare_cli.main(["--dataset", "deap", "--root", os.path.relpath(small_deap_corpus, tmp_path), "--cache",
                  "rel/cache", "--no-face", "--subjects", "1", "2"])
    assert open_cache("rel/cache").subjects == [1, 2] and (tmp_path / "rel" / "cache" / "manifest.json").exists()


# ----------------------------------------------------------------------------- partial downloads, damaged files
def test_bio_only_mahnob_without_any_video(mahnob_copy, tmp_path):
    for video in (mahnob_copy / "Sessions").glob("*/*.avi"):
        video.unlink()  # a download of the signals only
    for on_error in ("fail", "skip"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            report = run("mahnob", mahnob_copy, tmp_path / on_error, face=False, on_error=on_error)
        assert (report["subjects"], report["windows"], report["skipped"]) == (2, 8, [])
    with pytest.raises(DataError, match="face video named in .* is missing"):
        run("mahnob", mahnob_copy, tmp_path / "faces")


def test_rated_session_missing_one_rating_is_named(mahnob_copy, tmp_path):
    xml = mahnob_copy / "Sessions" / "4" / "session.xml"
    xml.write_text(xml.read_text().replace("feltVlnc=", "feltVlncX="))  # an emotion session, feltArsl kept
    with pytest.raises(DataError, match="feltArsl='.' is given but feltVlnc is missing") as info:
        run("mahnob", mahnob_copy, tmp_path / "cache", face=False)
    assert info.value.path == str(xml)
    with pytest.warns(UserWarning, match="skipped subject 1 trial 4: .*feltVlnc is missing"):
        report = run("mahnob", mahnob_copy, tmp_path / "cache", face=False, on_error="skip")
    assert [(s["unit"], s["subject"], s["trial"], s["path"]) for s in report["skipped"]] == [("trial", 1, 4, str(xml))]
    assert "SKIPPED subject 1 trial 4: " in format_report(report)
    assert read_manifest(str(tmp_path / "cache")).skipped == report["skipped"]
    assert open_cache(str(tmp_path / "cache")).index().trial.tolist() == [2, 2, 132, 132, 134, 134]


def test_copied_session_folder_is_not_prepared_twice(mahnob_copy, tmp_path):
    original = mahnob_copy / "Sessions" / "132"
    shutil.copytree(original, mahnob_copy / "Sessions" / "132 (copy)")
    with pytest.raises(DataError, match=f"sessionId 132 is also the id of {original / 'session.xml'}"):
        run("mahnob", mahnob_copy, tmp_path / "cache", face=False)
    with pytest.warns(UserWarning, match="skipped subject 2 trial 132: .*132 \\(copy\\)/session.xml"):
        report = run("mahnob", mahnob_copy, tmp_path / "cache", face=False, on_error="skip")
    index = open_cache(str(tmp_path / "cache")).index()
    keys = list(zip(index.subject.tolist(), index.trial.tolist(), index.window.tolist(), strict=True))
    assert len(keys) == len(set(keys)) == report["windows"] == 8
    assert [(s["unit"], s["subject"], s["trial"]) for s in report["skipped"]] == [("trial", 2, 132)]


@pytest.fixture
def deap_with_videos(corpus, tmp_path) -> Path:
    """2 subjects x 2 trials of DEAP with (short, faceless) videos for every trial."""
    root = shutil.copytree(corpus("deap", subjects=2, trials=2, seed=4, video=False)[0], tmp_path / "deapv")
    order = deap.read_presentation_order(root / deap.RATINGS_CSV)
    for s in (1, 2):
        for trial in order[s].values():
            video = deap.video_path(root, s, trial)
            video.parent.mkdir(parents=True, exist_ok=True)
            clock_video(video, 630)
    return root


def test_broken_ratings_csv_costs_only_the_videos(deap_with_videos, tmp_path):
    root = deap_with_videos
    (root / deap.RATINGS_CSV).write_text("Participant_id,Trial\n1,x\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bio-only never opens the CSV
        report = run("deap", root, tmp_path / "bio", face=False)
    assert (report["subjects"], report["skipped"]) == (2, [])
    with pytest.raises(DataError, match="participant_ratings.csv: line 2: .* must be integers; it aligns the face videos"):
        run("deap", root, tmp_path / "faces", DATASETS["deap"].prepare_config(frames=1, face_size=32))
    with pytest.warns(UserWarning) as caught:
        report = run("deap", root, tmp_path / "faces", DATASETS["deap"].prepare_config(frames=1, face_size=32),
                     on_error="skip")
    assert [str(w.message).split(":")[0] for w in caught if str(w.message).startswith("skipped")] == [
        "skipped face videos of subject 1", "skipped face videos of subject 2"]
    assert report["subjects"] == 2
    assert [(s["unit"], s["subject"], s["trial"]) for s in report["skipped"]] == [("face videos", 1, None),
                                                                               ("face videos", 2, None)]
    assert "SKIPPED face videos of subject 2: " in format_report(report)
    assert not open_cache(str(tmp_path / "faces")).index().has_face  # the report matches the cache


def test_skip_records_name_the_smallest_unit(deap_copy, mahnob_copy, tmp_path):
    with open(deap.dat_path(deap_copy, 2), "rb") as f:
        stored = pickle.load(f, encoding="latin1")
    stored["data"][1, 0, 5] = np.nan  # trial 2 of subject 2: a NaN sample
    stored["labels"][2, 1] = np.nan  # trial 3 of subject 2: a NaN rating
    synthetic.write_deap_dat(deap.dat_path(deap_copy, 2), stored)
    with pytest.warns(UserWarning) as caught:
        report = run("deap", deap_copy, tmp_path / "deap", face=False, on_error="skip")
    assert [str(w.message).split(":")[0] for w in caught if str(w.message).startswith("skipped")] == [
        "skipped subject 2 trial 2", "skipped subject 2 trial 3"]
    assert report["subjects"] == 3 and report["windows"] == 7 * 20  # the subject keeps its good trial
    assert [(s["unit"], s["subject"], s["trial"]) for s in report["skipped"]] == [("trial", 2, 2), ("trial", 2, 3)]
    assert "'labels' arousal rating nan is not on the 1-9 scale" in report["skipped"][1]["problem"]
    assert "SKIPPED subject 2 trial 3: " in format_report(report)
    bad = mahnob_copy / "Sessions" / "77" / "session.xml"  # a malformed XML: its subject is unknown
    bad.parent.mkdir()
    bad.write_text("<session sessionId='77'")
    with pytest.raises(DataError, match="malformed session XML"):
        run("mahnob", mahnob_copy, tmp_path / "mahnob", face=False)
    with pytest.warns(UserWarning, match="skipping .*malformed"):
        report = run("mahnob", mahnob_copy, tmp_path / "mahnob", face=False, on_error="skip")
    assert report["subjects"] == 2
    assert [(s["unit"], s["subject"], s["path"]) for s in report["skipped"]] == [("file", None, str(bad))]
    assert format_report(report).count("SKIPPED file: ") == 1


def test_roots_caches_and_arguments_give_one_line_errors(deap_copy, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for root, what in ((empty, "holds no data_preprocessed_python"), (tmp_path / "nowhere", "does not exist")):
        with pytest.raises(SystemExit) as info:
            prepare_cli.main(["--dataset", "deap", "--root", str(root), "--cache", str(tmp_path / "c"), "--no-face"])
        assert str(info.value.code).startswith(f"error: {root}: {what}")
        assert "--root must be the DEAP download folder" in str(info.value.code)
        assert not (tmp_path / "c").exists()  # no empty cache folder left behind
    args = ["--dataset", "deap", "--root", str(deap_copy), "--no-face"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as info:
        prepare_cli.main([*args, "--cache", str(a_file)])
    assert str(info.value.code) == f"error: {a_file}: --cache is a file; give a folder (or a URI) for the cache"

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(storage, "write_bytes", refused)  # an unwritable folder (tests may run as root)
    with pytest.raises(SystemExit) as info:
        prepare_cli.main([*args, "--cache", str(tmp_path / "ro")])
    assert str(info.value.code).startswith(f"error: {tmp_path / 'ro'}: cannot write the cache folder")
    assert "\n" not in str(info.value.code)
    monkeypatch.undo()
    for bad, message in ((["--window", "-1"], "window must be > 0"), (["--processes", "0"], "--processes must be >= 1"),
                         (["--threshold", "12"], "threshold must be within")):
        with pytest.raises(SystemExit) as info:
            prepare_cli.main([*args, "--cache", str(tmp_path / "c"), *bad])
        assert info.value.code == 2 and f"error: {message}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_cli.main([*args, "--cache", str(tmp_path / "c"), "--window", "100", "--on-error", "skip"])
    message = str(info.value.code)
    assert message.startswith(f"error: {deap_copy}: no subject could be prepared: 9 unit(s) skipped, the first: "
                              "subject 1 trial 1: ") and "window of 100 s is longer" in message
    assert len(message) < 400 and not (tmp_path / "c").exists()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_cli, "prepare_dataset", interrupted)
    with pytest.raises(SystemExit) as info:
        prepare_cli.main([*args, "--cache", str(tmp_path / "c")])
    assert info.value.code == 130 and "interrupted by SIGINT: the cache is as it was" in capsys.readouterr().err


INTERRUPTIBLE = """
import sys, time
from gbvnet.prepare import cli, subject
real = subject.prepare_subject
def slow(*args):  # subject 2 writes its file, then takes long: the run is interrupted then
    entry = real(*args)
    if args[2] == 2:
        time.sleep(120)
    return entry
subject.prepare_subject = slow  # what the worker processes' subject_job calls
cli.main(sys.argv[1:])
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT twice", "Ctrl-C twice to the process group"])
def test_interrupts_leave_only_files_the_manifest_lists(deap_copy, tmp_path, how):
    cache = tmp_path / "cache"
    handler = signal.getsignal(signal.SIGINT)
    run("deap", deap_copy, cache, face=False)
    before = snapshot(cache)
    for s in (1, 2):
        bump_mtime(deap.dat_path(deap_copy, s))
    cmd = [sys.executable, "-c", INTERRUPTIBLE, "--dataset", "deap", "--root", str(deap_copy), "--cache", str(cache),
           "--no-face", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(prepare_cli.__file__).parents[2])},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not ignored, as in a terminal
    try:
        deadline = time.monotonic() + 120
        while len(list(cache.glob("subject_*.arrow"))) < len(before) + 1:  # both new files written
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            send = (lambda sig: os.killpg(proc.pid, sig)) if "group" in how else proc.send_signal
            send(signal.SIGINT)
            time.sleep(0.3)  # the second one lands while the first is being handled
            send(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        try:  # workers orphaned by a main process that died without stopping them
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # 143 / 130, or killed by the second signal once the cleanup is over (a shell reports 130)
    stopped_by, exit_code = ("SIGTERM", 143) if how == "SIGTERM" else ("SIGINT", 130)
    assert proc.returncode in (exit_code, -signal.SIGINT, -signal.SIGTERM) and "Traceback" not in err, err
    # in-process main() calls must leave SIGINT as they found it (not ignored: children inherit that, and the next
    # run would hang); a suite started in the background may itself start with SIGINT ignored
    assert signal.getsignal(signal.SIGINT) is handler
    assert f"interrupted by {stopped_by}: the cache is as it was before this run" in err
    assert snapshot(cache) == before  # no file the manifest does not list


def moving_face_video(path: Path, fps: float, seconds: float, frame: tuple[int, int]) -> None:
    """A synthetic face swinging left-right (+-60 px, 4 s period) and up-down at camera-like size."""
    subj = synthetic._subject(np.random.default_rng(1), deap.DEAP_CHANNELS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frame)
    for k in range(int(seconds * fps)):
        t = k / fps
        jitter = (int(50 * np.sin(2 * np.pi * t / 4)), int(12 * np.sin(2 * np.pi * t / 3)))
        writer.write(synthetic._draw_face(0.0, 0.0, subj, jitter, frame))
    writer.release()


def test_tracked_crops_match_the_per_frame_detector_on_a_moving_face(tmp_path):
    video, frame = tmp_path / "moving.avi", (360, 288)
    moving_face_video(video, fps=25.0, seconds=8.0, frame=frame)
    times = np.sort(np.random.default_rng(0).uniform(0, 8, 40))  # sampled frames ~0.2 s apart on average
    fast = face_crops(video, times, 48, span=(8.0, 8.0))
    assert (fast.frames, fast.fallbacks) == (40, 0)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    frames = read_frames(video, times)
    for k, image in enumerate(frames):  # the old path: the full-size frame searched, every sampled frame
        faces = cascade.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 1.1, 3, minSize=(36, 36))
        x, y, w, h = max(faces, key=lambda b: b[2] * b[3])
        reference = np.array([x + w / 2, y + h / 2, w * 1.5])  # centre, square side with the 25 % margins
        bx, by, side, _ = fast.boxes[k]
        assert np.hypot(bx + side / 2 - reference[0], by + side / 2 - reference[1]) < 0.1 * reference[2], k
        assert 0.8 < side / reference[2] < 1.25, k
        # each crop is cut from the frame of its own sampled time
        np.testing.assert_array_equal(fast.crops[k], crop_square(image, tuple(fast.boxes[k]), 48))


def test_faceless_video_is_warned_about(tmp_path):
    video = tmp_path / "clock.avi"
    clock_video(video, 40, size=96)
    with pytest.warns(UserWarning, match="clock.avi: no face found in 5 of 5 sampled frames \\(100%\\); .* frontal"):
        found = face_crops(video, np.linspace(0, 3.9, 5), 32)
    assert found.fallbacks == 5 and (found.boxes == [0, 0, 96, 96]).all()  # centre crops of a square frame


def test_videos_of_one_subject_in_parallel_threads(small_mahnob_corpus, small_mahnob_cache, tmp_path):
    cfg = DATASETS["mahnob"].prepare_config(frames=2, face_size=32)
    report = run("mahnob", small_mahnob_corpus, tmp_path / "c", cfg, subjects=[2], workers=2)  # 2 video threads
    assert report["face_frames"] == 2 * 2 * 2
    threaded, serial = (WindowDataset(open_cache(str(c)), modality="facebio") for c in (tmp_path / "c",
                                                                                       small_mahnob_cache))
    rows = np.flatnonzero(open_cache(str(small_mahnob_cache)).index().subject == 2)
    np.testing.assert_array_equal(threaded._gather(threaded._face, np.arange(4)), serial._gather(serial._face, rows))


# ---------------------------------------------------------------------------------------------- the registry
def test_datasets_come_from_the_registry(capsys):
    with pytest.raises(ValueError, match=f"^unknown dataset 'seed'; known: {', '.join(DATASETS)}$"):
        get_dataset("seed")
    assert DATASETS["deap"].prepare_config().h_freq is None and DATASETS["mahnob"].prepare_config().h_freq == 45.0
    assert DATASETS["mahnob"].prepare_config(frames=2).frames == 2 and DATASETS["deap"].reader is deap
    assert isinstance(DATASETS["mahnob"].reader, Reader)
    with pytest.raises(TypeError, match="reader module gbvnet.data.windows lacks check_root, subject_files, "):
        assert dataclasses.replace(DATASETS["deap"], reader_module="gbvnet.data.windows").reader is None
    with pytest.raises(SystemExit):
        prepare_cli.main(["--dataset", "seed", "--root", "r", "--cache", "c"])
    assert f"invalid choice: 'seed' (choose from {', '.join(map(repr, DATASETS))})" in capsys.readouterr().err


def test_cli_keeps_the_registry_defaults_it_was_not_given(small_deap_corpus, tmp_path, monkeypatch):
    """``python -m gbvnet.prepare`` overrides only the flags given: the dataset entry's own preparation defaults
    reach the cache otherwise (they used to be replaced by PrepareConfig's generic ones)."""
    own = {"h_freq": None, "window": 2.0, "stride": 2.0, "rate": 64.0}
    monkeypatch.setitem(DATASETS, "deap", dataclasses.replace(DATASETS["deap"], prepare_defaults=own))
    args = ["--dataset", "deap", "--root", str(small_deap_corpus), "--no-face", "--subjects", "1"]
    prepare_cli.main([*args, "--cache", str(tmp_path / "own")])
    assert open_cache(str(tmp_path / "own")).manifest.config == PrepareConfig(**own)
    prepare_cli.main([*args, "--cache", str(tmp_path / "given"), "--window", "4", "--stride", "4", "--h-freq", "30",
                  "--workers", "1"])  # --workers: the old name of --processes
    config = open_cache(str(tmp_path / "given")).manifest.config
    assert (config.window, config.stride, config.h_freq, config.rate) == (4.0, 4.0, 30.0, 64.0)


def test_synthetic_demo_is_written_once_then_prepared(tmp_path, monkeypatch):
    """``--synthetic``: the demo corpus is written at data/synthetic/<dataset> (under a temporary name first) and
    prepared with the demo's settings into data/cache/<dataset>-synthetic; a re-run reuses both."""
    small = {"subjects": 2, "trials": 2, "seed": 0, "video": False}
    monkeypatch.setitem(DATASETS, "deap", dataclasses.replace(DATASETS["deap"], demo_size=small))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "synthetic" / "deap.partial").mkdir(parents=True)  # an interrupted write: not reused
    (tmp_path / "data" / "synthetic" / "deap.partial" / "junk").write_text("x")
    cache = resolve_cache("deap", root=None, synthetic=True, cache=None, need_face=False)
    assert cache == "data/cache/deap-synthetic"
    assert sorted(p.name for p in (tmp_path / "data" / "synthetic").iterdir()) == ["deap"]
    manifest = open_cache(cache).manifest
    assert sorted(manifest.subjects) == [1, 2] and manifest.config == DATASETS["deap"].prepare_config(
        **SYNTHETIC_PREPARE) and not manifest.face
    before = snapshot(tmp_path / cache)
    assert resolve_cache("deap", root=None, synthetic=True, cache=None, need_face=False) == cache
    assert snapshot(tmp_path / cache) == before
    with pytest.raises(ValueError, match="give --root"):
        resolve_cache("deap", root=None, synthetic=False, cache=None)
