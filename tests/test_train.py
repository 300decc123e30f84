"""Training on Ray Train: DDP, fault tolerance (a killed worker resumes), determinism, learning, bad configs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from gbvnet.config import ConfigError, TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.folds.protocols import Fold, LeakageError, subject_fold
from gbvnet.train.launch import make_trainer
from gbvnet.train.loop import CHECKPOINT_PREFIX, make_job


def bio_job(cache, epochs=3, seed=0, **train):
    index = open_cache(str(cache)).index()
    fold = subject_fold(index, [1, 2], [3], [4])
    cfg = TrainConfig(epochs=epochs, batch_size=16, seed=seed, patience=epochs, **train)
    return make_job(str(cache), model_preset("smoke", modality="bio"), cfg, fold)


def fit(job, tmp_path, name):
    return make_trainer(job, name, storage=str(tmp_path)).fit()


@pytest.fixture(scope="module")
def ddp_run(ray_session, mahnob_cache, tmp_path_factory):
    """One two-worker DDP run (2 epochs, seed 3), shared by the DDP test and the same-seed test."""
    return fit(bio_job(mahnob_cache, epochs=2, seed=3, num_workers=2), tmp_path_factory.mktemp("ddp"), "ddp")


@pytest.mark.slow
def test_two_worker_ddp_run_reports_metrics(ddp_run, mahnob_cache):
    result = ddp_run
    m = result.metrics
    assert m["epoch"] == 2 and m["done"] and m["threads"] == 1 and not m["compiled"] and not m["cuda"]
    assert 0 <= m["val_accuracy"] <= 1 and 0 <= m["test_accuracy"] <= 1
    index = open_cache(str(mahnob_cache)).index()
    train_rows = int(np.isin(index.subject, [1, 2]).sum())
    assert m["train_windows"] == train_rows + train_rows % 2  # each window once, padded to equal shards
    # validation and test confusion matrices cover every window exactly once across both workers
    assert np.sum(m["val_confusion"]) == np.sum(index.subject == 3)
    assert np.sum(m["test_confusion"]) == np.sum(index.subject == 4)
    assert result.checkpoint is not None


@pytest.mark.slow
def test_same_seed_same_metrics(ddp_run, mahnob_cache, tmp_path, monkeypatch):
    """The DDP run again with the same seed (the initial weights, each epoch's order and each worker's augmentation
    follow it): the same metrics. This run with relative paths, as users type them: workers run elsewhere, so they
    must be resolved."""
    a = ddp_run.metrics
    monkeypatch.chdir(mahnob_cache.parent)
    job = bio_job(mahnob_cache.name, epochs=2, seed=3, num_workers=2)
    assert job.cache == str(mahnob_cache)
    result = make_trainer(job, "seed-b", storage=os.path.relpath(tmp_path)).fit()
    assert result.path.startswith(str(tmp_path))
    b = result.metrics
    for key in ("train_loss", "val_loss", "val_accuracy", "test_accuracy"):
        assert a[key] == pytest.approx(b[key], rel=1e-6), key


@pytest.mark.slow
def test_learning_works_end_to_end(ray_session, mahnob_cache, tmp_path):
    """The training loss on the synthetic corpus falls far below chance level (ln 2 = 0.69)."""
    job = bio_job(mahnob_cache, epochs=12, lr=3e-3, augment=False, warmup_epochs=0, cpus_per_worker=2)
    m = fit(job, tmp_path, "learn").metrics
    assert m["train_loss"] < 0.2
    assert m["threads"] == 2  # torch in the worker runs as many threads as the worker has CPUs


def _train_workers(alive: bool = True) -> list:
    """The Ray Train worker actors of this test session's Ray instance (Ray's state API): the live ones, or every
    one it has started."""
    import ray
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker"), *([("state", "=", "ALIVE")] if alive else [])]
    return list_actors(address=ray.get_runtime_context().gcs_address, limit=10_000, filters=filters)


def _registered_checkpoints(snapshot) -> int:
    try:
        return len(json.loads(snapshot.read_text())["checkpoint_results"])
    except (OSError, ValueError, KeyError):  # not written yet, or caught mid-write
        return 0


def _trial_pid_after_two_checkpoints(experiment: Path) -> int | None:
    """The process of the Tune trial in ``experiment`` (the ``pid`` of its first result) once a checkpoint after
    its first exists (the first is then complete); None before."""
    for checkpoint in (c for c in experiment.glob("*/checkpoint_*") if c.name != "checkpoint_000000"):
        try:
            return json.loads((checkpoint.parent / "result.json").read_text().splitlines()[0])["pid"]
        except (OSError, IndexError, ValueError, KeyError):  # not written yet, or caught mid-write
            return None
    return None


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_and_leaves_no_local_checkpoints(ray_session, mahnob_cache, tmp_path,
                                                                               request):
    """A killed worker resumes from its checkpoint; no local checkpoint folder outlives the run, not even one
    that a worker killed mid-write left behind (planted here for a dead process)."""
    name = f"kill-{uuid.uuid4().hex[:8]}"
    orphan = Path(tempfile.gettempdir()) / f"{CHECKPOINT_PREFIX}{_dead_pid()}-{name}-x1"
    orphan.mkdir()
    request.addfinalizer(lambda: shutil.rmtree(orphan, ignore_errors=True))
    (orphan / "state.pt").write_bytes(b"partial")
    job = bio_job(mahnob_cache, epochs=20, max_failures=2)
    trainer = make_trainer(job, name, storage=str(tmp_path))
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=trainer.fit()))
    thread.start()
    snapshot = tmp_path / name / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 240
    while not _registered_checkpoints(snapshot) and time.time() < deadline:
        time.sleep(0.1)  # kill only once the controller has registered a checkpoint (a file alone is not enough)
    assert _registered_checkpoints(snapshot), "no checkpoint was registered"
    pids = [a.pid for a in _train_workers()]
    assert pids, "no Ray Train worker process found"
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=400)
    m = outcome["result"].metrics
    assert m["epoch"] == 20 and m["done"]
    assert m["start_epoch"] > 0, "the restarted run began from scratch instead of its checkpoint"
    left = sorted(p.name for p in Path(tempfile.gettempdir()).glob(f"{CHECKPOINT_PREFIX}*-{name}-*"))
    assert not left, f"local checkpoint folders left behind: {left}"


def test_killed_one_worker_trial_resumes_from_its_checkpoint(ray_session, mahnob_cache, tmp_path):
    """A one-worker fold trains in its Tune trial's own process (no TorchTrainer); when that process is killed,
    Tune restarts the trial from its last checkpoint."""
    from ray import tune

    from gbvnet.train.launch import tune_fold, tune_trial_resources

    job = bio_job(mahnob_cache, epochs=20)
    resources = tune_trial_resources(job.train)
    assert resources == {"cpu": 1.0, "gpu": 0.0}  # the trial holds the worker's resources itself
    trainable = tune.with_resources(tune.with_parameters(tune_fold, jobs=[job], names=["fold"],
                                                         storage=str(tmp_path), prefix="trial"), resources)
    tuner = tune.Tuner(trainable, param_space={"fold": 0},
                       run_config=tune.RunConfig(name="trial", storage_path=str(tmp_path), verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=2),
                                                 checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    train_workers = len(_train_workers(alive=False))
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(grid=tuner.fit()))
    thread.start()
    deadline = time.time() + 240
    while not (pid := _trial_pid_after_two_checkpoints(tmp_path / "trial")) and time.time() < deadline:
        time.sleep(0.1)
    assert pid, "the trial wrote no second checkpoint"
    os.kill(pid, signal.SIGKILL)  # at once: a state-API query can take seconds on busy cores, time to finish
    thread.join(timeout=400)
    assert len(_train_workers(alive=False)) == train_workers, "expected the trial to train in its own process"
    result = outcome["grid"][0]
    assert result.error is None
    assert result.metrics["epoch"] == 20 and result.metrics["done"]
    assert result.metrics["start_epoch"] > 0, "the restarted trial began from scratch instead of its checkpoint"
    assert len(list((tmp_path / "trial").glob("*/checkpoint_*"))) <= 2  # num_to_keep


def test_bad_configs_are_refused(mahnob_cache):
    cache = str(mahnob_cache)
    index = open_cache(cache).index()
    with pytest.raises(ConfigError, match="modality"):
        model_preset("smoke", modality="audio")
    with pytest.raises(ConfigError, match=r"subject\(s\) \[2\] in both train and val"):
        subject_fold(index, [1, 2], [2], [])
    with pytest.raises(ConfigError, match="not in the cache"):
        subject_fold(index, [1, 99], [3], [])
    with pytest.raises(LeakageError, match="empty training set"):
        subject_fold(index, [], [3], [])
    rows = np.arange(len(index.subject))
    unchecked = Fold("by hand", "subject", rows[index.subject == 1], rows[index.subject == 1])  # shares subject 1
    with pytest.raises(LeakageError, match="never checked by the leakage guard"):
        make_job(cache, model_preset("smoke", modality="bio"), TrainConfig(), unchecked)
    with pytest.raises(ConfigError, match="target"):
        make_job(cache, model_preset("smoke", modality="bio"), TrainConfig(target="dominance"),
                 subject_fold(index, [1], [2], []))
