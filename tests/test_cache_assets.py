"""A prepared cache is an asset: never replaced by a command of other options, read only as the snapshot a run
planned on, and a damaged subject file is named (and prepared again by ``gbvnet.prepare``)."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gbvnet.config import TrainConfig, model_preset
from gbvnet.data.cache import CacheChanged, check_snapshot, open_cache, read_manifest
from gbvnet.data.records import DataError
from gbvnet.data.registry import get_dataset
from gbvnet.data.sources import resolve_cache
from gbvnet.data.window_dataset import WindowDataset
from gbvnet.evaluation import loso
from gbvnet.folds.protocols import subject_fold
from gbvnet.prepare import CacheConflict, prepare_dataset
from gbvnet.prepare import cli as prepare
from gbvnet.train.loop import Job, WorkerState, make_job, train_loop_per_worker


def files_of(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.iterdir())}


@pytest.fixture
def face_cache(small_mahnob_cache, tmp_path) -> Path:
    """A copy of ``small_mahnob_cache`` (faces: 2 frames of 32 x 32, prepared from ``small_mahnob_corpus``)."""
    return Path(shutil.copytree(small_mahnob_cache, tmp_path / "faces"))


def test_bio_command_through_root_keeps_a_face_cache(face_cache, small_mahnob_corpus):
    """A bio model needs nothing a face cache lacks: a bio-only command on the same root and signal options uses
    the face cache as it is (other frame counts and sizes than the defaults included), byte for byte."""
    before = files_of(face_cache)
    assert read_manifest(str(face_cache)).face
    for _ in range(2):
        assert resolve_cache("mahnob", root=str(small_mahnob_corpus), synthetic=False, cache=str(face_cache),
                             need_face=False) == str(face_cache)
        assert files_of(face_cache) == before
    index = open_cache(str(face_cache)).index()
    assert index.has_face_rows.all() and index.manifest.config.frames == 2

    # ``gbvnet.prepare --no-face`` asks the same: faces not needed, the face cache stands
    report = prepare_dataset("mahnob", small_mahnob_corpus, str(face_cache), face=False, progress=False)
    assert report["redone"] == [] and files_of(face_cache) == before


def test_other_options_are_refused_naming_both_and_the_way_out(face_cache, small_mahnob_corpus, tmp_path):
    before = files_of(face_cache)
    root = str(small_mahnob_corpus)
    # a face command with the dataset's default frames, and a bio command with another threshold
    for need_face, kw, held, asked in (
            (True, {}, "frames=2, face_size=32", "frames=8, face_size=64"),
            (False, {"threshold": 6.0}, "threshold=5.0", "threshold=6.0")):
        with pytest.raises(CacheConflict) as info:
            if kw:
                prepare_dataset("mahnob", root, str(face_cache), get_dataset("mahnob").prepare_config(**kw),
                                face=need_face, progress=False)
            else:
                resolve_cache("mahnob", root=root, synthetic=False, cache=str(face_cache), need_face=need_face)
        message = str(info.value)
        assert message.startswith(f"{face_cache}: prepared with {held}; this command asks {asked}: the cache is kept")
        assert "another --cache" in message and "--rebuild" in message and "\n" not in message
        assert files_of(face_cache) == before

    # the evaluation CLI: one line, before Ray starts, nothing touched
    bio_cache = tmp_path / "bio"
    prepare.main(["--dataset", "mahnob", "--root", root, "--cache", str(bio_cache), "--no-face",
                  "--threshold", "6"])
    bio_before = files_of(bio_cache)
    with pytest.raises(SystemExit) as exit_info:
        loso.main(["--dataset", "mahnob", "--root", root, "--cache", str(bio_cache), "--modality", "bio"])
    assert re.fullmatch(rf"error: {re.escape(str(bio_cache))}: prepared with threshold=6.0; this command asks "
                        r"threshold=5.0: .*--rebuild to replace it", str(exit_info.value.code))
    assert files_of(bio_cache) == bio_before

    # --rebuild replaces it: every subject prepared again with the options asked for
    assert resolve_cache("mahnob", root=root, synthetic=False, cache=str(bio_cache), need_face=False,
                         rebuild=True) == str(bio_cache)
    manifest = read_manifest(str(bio_cache))
    assert manifest.config.threshold == 5.0 and not manifest.face
    assert not set(bio_before) & {e.file for e in manifest.subjects.values()}


class _Session:
    """The parts of a training session ``WorkerState.build`` uses: one CPU worker."""

    rank, world, name, device = 0, 1, "test", torch.device("cpu")

    def prepare(self, model):
        return model


def test_a_run_stops_when_its_cache_is_prepared_again(small_deap_corpus, tmp_path, capsys):
    """A job carries the snapshot its driver planned on; a cache prepared again (another threshold) meanwhile
    stops every later fold's worker, the driver's check before scoring and the driver's own reads with one line,
    never a ``FileNotFoundError`` and never a fold trained on other labels than the driver scores with."""
    cache = str(tmp_path / "cache")
    prepare_dataset("deap", small_deap_corpus, cache, face=False, progress=False)
    driver = open_cache(cache)  # the driver's cache: its files are read (memory-mapped) only when scoring
    index = driver.index()
    planned = index.manifest_hash
    job = make_job(cache, model_preset("smoke", modality="bio"), TrainConfig(epochs=1),
                   subject_fold(index, [1], [2], [3]), manifest_hash=planned)
    assert Job.from_dict(job.to_dict()).manifest_hash == planned  # what every worker receives
    open_cache(job.cache, expect=planned)  # the snapshot is there (every training test builds workers on it)
    check_snapshot(cache, planned)

    prepare_dataset("deap", small_deap_corpus, cache, get_dataset("deap").prepare_config(threshold=6.0),
                    face=False, progress=False, rebuild=True)
    now = read_manifest(cache).digest
    expected = f"cache {cache} changed since the run started (hash {planned} -> {now})"
    for stage in (lambda: WorkerState.build(job, _Session()),  # a fold's worker (a Ray trial) as it starts
                  lambda: make_job(cache, job.model, job.train, job.fold, manifest_hash=planned),  # a search trial
                  lambda: check_snapshot(cache, planned),  # the driver, before scoring
                  lambda: driver.tables):  # the driver's reads, the old files gone
        with pytest.raises(CacheChanged) as info:
            stage()
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)  # crosses process boundaries intact
    # the training loop ends at once without a result (no retries), so the driver's check says why
    train_loop_per_worker(job.to_dict(), _Session())
    assert f"[{job.fold.name}] stopped: {expected}" in capsys.readouterr().out


def test_truncated_file_is_named_by_readers_and_prepared_again(small_deap_corpus, tmp_path):
    cache = tmp_path / "cache"
    prepare_dataset("deap", small_deap_corpus, str(cache), face=False, subjects=[1, 2], progress=False)
    expected = WindowDataset(open_cache(str(cache)), modality="bio").bio_array(np.arange(100))
    entry = read_manifest(str(cache)).subjects[2]
    path = cache / entry.file
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # truncate -s 50%
    message = (f"{path}: subject 2's file is truncated ({len(data) // 2} of {entry.bytes} bytes): "
               "run gbvnet.prepare again")
    for read in (lambda: open_cache(str(cache)).index(), lambda: open_cache(str(cache)).tables):
        with pytest.raises(DataError) as info:
            read()
        assert str(info.value) == message
    with pytest.raises(SystemExit) as exit_info:  # an evaluation: one line, before Ray starts
        loso.main(["--dataset", "deap", "--cache", str(cache), "--modality", "bio"])
    assert exit_info.value.code == f"error: {message}"

    path.write_bytes(b"\0" * len(data))  # the right size, but not an Arrow file
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: subject 2's file is damaged \(.*\): run "
                                        "gbvnet.prepare again$"):
        open_cache(str(cache)).index()

    path.write_bytes(data[:len(data) // 2])
    with pytest.warns(UserWarning, match=re.escape(f"{path}: subject 2's file is truncated ({len(data) // 2} of "
                                                   f"{entry.bytes} bytes): preparing it again")):
        report = prepare_dataset("deap", small_deap_corpus, str(cache), face=False, subjects=[1, 2], progress=False)
    assert report["redone"] == [2] and report["unchanged"] == [1]
    assert not path.exists()
    np.testing.assert_array_equal(WindowDataset(open_cache(str(cache)), modality="bio").bio_array(np.arange(100)),
                                  expected)
