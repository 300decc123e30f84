"""The training loop: one per-worker loop for 1..N workers (DDP), CPU or GPU, with checkpoints and resume.

``train_loop_per_worker(config)`` is what every evaluation fold, search trial and single run executes. ``config``
is the plain-dict form of a :class:`Job` (built and checked by :func:`make_job`): the cache location, the model
and training configs and a :class:`~gbvnet.folds.protocols.Fold` (train / val / test rows of the cache). The loop runs as
the worker function of a Ray Train ``TorchTrainer`` (:class:`TrainWorkerSession`) or in a Tune trial's own process
(:class:`TuneTrialSession`); which one, with which resources, is decided by :mod:`gbvnet.train.launch`.

Per epoch the loop trains on its shard of the training rows (each window once per epoch across workers; the last
few are repeated to give every worker the same number of steps, as ``DistributedSampler`` does), evaluates on the
validation rows (sharded, confusion matrices summed across workers), early-stops on validation macro-F1 (our
choice over the positive-class F1 of PAPER.md: a constant "always high" predictor scores a high F1 but a poor
macro-F1) and reports metrics with a checkpoint through the session (written to a local temporary folder that is
deleted once Ray has copied it to the run's storage, see :func:`report`). After a worker failure Ray restarts the
workers and the loop resumes from the latest checkpoint (epoch counter continues). At the end the model of the
best *validation* epoch is scored once on the test rows (``test_*`` metrics): the test set never steers training
or model selection. Every worker reads the cache snapshot its job was planned on (:attr:`Job.manifest_hash`,
checked when it opens the cache and before each epoch): a cache prepared again meanwhile ends the loop without a
result, and the driver's own check then stops the run with one line (:class:`~gbvnet.data.cache.CacheChanged`). The stages are the methods of :class:`WorkerState`:
:meth:`~WorkerState.build` (data, model, optimiser), :meth:`~WorkerState.restore`, :meth:`~WorkerState.run_epoch`,
:meth:`~WorkerState.test_metrics` and :meth:`~WorkerState.checkpoint`.

The passes themselves are :mod:`gbvnet.train.steps` (also run by the benchmarks without Ray): batches travel to the
device as cached (faces ``uint8``), read and copied in the background while the device works, and become model
inputs there (normalisation, augmentation); ``torch.compile`` is on by default on CUDA. Each worker runs torch
with ``cpus_per_worker`` threads on the device its session gives it.

Normalisation statistics (per bio channel) are fitted on the training rows only. Checkpoints are read with
``torch.load(weights_only=True)``: no arbitrary unpickling.

The driver that launches a single run is ``python -m gbvnet.train`` (:mod:`gbvnet.train.cli`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from gbvnet.config import (
    FUSIONS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from gbvnet.data.cache import CacheChanged, Manifest, check_snapshot, open_cache
from gbvnet.data.loader import BatchLoader
from gbvnet.data.storage import absolute
from gbvnet.data.transform import BatchTransform
from gbvnet.data.window_dataset import Normalizer, WindowDataset, fit_normalizer
from gbvnet.folds.protocols import Fold, require_checked, rows_digest
from gbvnet.models import build_model
from gbvnet.models.comparison import check_input_fits, montage_positions
from gbvnet.train.metrics import SELECTION_METRIC, prefixed
from gbvnet.train.steps import Forward, evaluate, make_optimizer, train_epoch, use_compile

CHECKPOINT_FILE = "state.pt"


# --------------------------------------------------------------------------------------------------- job spec
def select_channels(request: tuple[str, ...], available: list[str], default: str) -> tuple[str, ...]:
    """The bio channels a model reads, in the cache's order: ``request`` is ``()`` (the network's ``default``),
    ``("eeg",)`` (the channels named as 10-20 electrodes), ``("all",)`` or channel names, which must all be in
    ``available`` (the cache's channels)."""
    request = request or (default,)
    if request == ("all",):
        return tuple(available)
    if request == ("eeg",):
        chosen = tuple(c for c in available if c.lower() in montage_positions())
        if not chosen:
            raise ConfigError(f"--channels eeg: none of the cache's channels ({', '.join(available)}) is an EEG "
                              "electrode name; name the channels instead")
        return chosen
    unknown = [c for c in request if c not in available]
    if unknown:
        raise ConfigError(f"--channels: {', '.join(unknown)} not among the cache's channels "
                          f"({', '.join(available)})")
    return tuple(c for c in available if c in request)


def fit_model_to_cache(model: ModelConfig, manifest: Manifest) -> ModelConfig:
    """Set the model's inputs (its bio channels, by name, and their count, samples and rate; frames and face size)
    from the cache manifest."""
    model = copy.deepcopy(model)
    if model.modality != "face":
        model.channels = select_channels(model.channels, manifest.channels, model.kind.channels)
    model.bio.channels = len(model.channels) if model.modality != "face" else len(manifest.channels)
    model.bio.samples = manifest.window_samples
    model.bio.rate = manifest.rate
    model.face.frames = manifest.frames
    model.face.image_size = manifest.face_size
    return model.validate()


def channel_index(model: ModelConfig, manifest: Manifest) -> list[int] | None:
    """Where the fitted ``model``'s bio channels are in the cache's windows (None: all of them, in order)."""
    if model.modality == "face" or list(model.channels) == list(manifest.channels):
        return None
    return [manifest.channels.index(c) for c in model.channels]


@dataclass
class Job:
    """One training run as every worker receives it: the cache, what to train and on which rows.

    Built and checked by :func:`make_job`. Ray Train's ``train_loop_config`` must be plain data, so the loop
    receives :meth:`to_dict` and reads it back with :meth:`from_dict`.
    """

    cache: str  # absolute path or URI: the workers run in other directories
    model: ModelConfig  # input sizes fitted to the cache
    train: TrainConfig
    fold: Fold
    allow_leaky: bool
    manifest_hash: str  # the cache snapshot the job was planned on: every worker opens exactly that one

    def to_dict(self) -> dict:
        return {"cache": self.cache, "model": to_dict(self.model), "train": to_dict(self.train),
                "fold": self.fold.to_dict(), "allow_leaky": self.allow_leaky, "manifest_hash": self.manifest_hash}

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        return cls(data["cache"], from_dict(ModelConfig, data["model"]).validate(),
                   from_dict(TrainConfig, data["train"]).validate(), Fold.from_dict(data["fold"]),
                   data["allow_leaky"], data["manifest_hash"])


def make_job(cache: str, model: ModelConfig, train: TrainConfig, fold: Fold, allow_leaky: bool = False,
             manifest_hash: str | None = None) -> Job:
    """Validate everything and build the job every worker receives, on the cache as it is now, or, given
    ``manifest_hash`` (the snapshot the caller planned ``fold`` on), on that snapshot
    (:class:`~gbvnet.data.cache.CacheChanged` if the cache was prepared again since).

    Refuses (``ConfigError`` / ``LeakageError``) unknown modalities, empty training sets, a modality that needs
    faces on a cache without them, an empty validation set unless the job trains a fixed number of epochs
    (``patience >= epochs``: the last epoch's model is kept), and folds the leakage guard did not pass
    (:func:`gbvnet.folds.protocols.require_checked`).
    """
    train.validate()
    index = open_cache(cache, expect=manifest_hash).index()
    model = fit_model_to_cache(model, index.manifest)
    if model.modality != "bio" and not index.has_face:
        raise ConfigError(f"modality {model.modality!r} needs face frames but cache {cache} has none "
                          "(prepared with --no-face, or no videos); use --modality bio")
    check_input_fits(model)
    require_checked(fold, allow_leaky=allow_leaky)
    if fold.val.size == 0 and train.patience < train.epochs:
        raise ConfigError(f"fold {fold.name}: empty validation set (early stopping needs one; a fixed number of "
                          "epochs, patience >= epochs, needs none)")
    # a copy of ``train``: callers build several jobs from one config, and a job must not change with it
    return Job(absolute(cache), model, copy.deepcopy(train), fold, allow_leaky, index.manifest_hash)


# --------------------------------------------------------------------------------------------------- sessions
class TrainWorkerSession:
    """The loop runs as one of the workers of a Ray Train ``TorchTrainer`` (1..N workers, DDP when N > 1)."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.rank, self.world, self.name = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_experiment_name()
        self.device = ray.train.torch.get_device()

    def prepare(self, model: nn.Module) -> nn.Module:
        return ray.train.torch.prepare_model(model)

    def checkpoint(self):
        return ray.train.get_checkpoint()

    def report(self, metrics: dict, directory: str | None = None) -> None:
        ray.train.report(metrics, checkpoint=directory and ray.train.Checkpoint.from_directory(directory))


class TuneTrialSession:
    """The loop runs in the Tune trial's own process (one worker, no ``TorchTrainer``): no controller and worker
    processes to start. Reports and checkpoints go to Tune, so schedulers (ASHA), retries (the trial restarts from
    its last checkpoint) and ``Tuner.restore`` work as for a trainer."""

    def __init__(self):
        from ray import tune

        self.tune, self.rank, self.world = tune, 0, 1
        self.name = tune.get_context().get_trial_name()
        self.device = torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def checkpoint(self):
        return self.tune.get_checkpoint()

    def report(self, metrics: dict, directory: str | None = None) -> None:
        self.tune.report(metrics, checkpoint=directory and self.tune.Checkpoint.from_directory(directory))


# --------------------------------------------------------------------------------------------------- helpers

def _all_reduce(array: np.ndarray) -> np.ndarray:
    if not (dist.is_available() and dist.is_initialized()):
        return array
    t = torch.as_tensor(array, dtype=torch.float64)
    dist.all_reduce(t)
    return t.numpy()


def _shard(rows: np.ndarray, rank: int, world: int, rng: np.random.Generator | None) -> np.ndarray:
    """This worker's rows: shuffled and padded to equal length (training) or a plain slice (evaluation)."""
    if rng is None:
        return rows[rank::world]
    order = rows[rng.permutation(len(rows))]
    pad = (-len(order)) % world
    return np.concatenate([order, order[:pad]])[rank::world]


CHECKPOINT_PREFIX = "gbvnet-ckpt-"


def _folder_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_checkpoints(session) -> None:
    """Delete this run's local checkpoint folders (``gbvnet-ckpt-<pid>-<run name>-<random>`` in the temp folder)
    whose worker process is gone: a worker killed while writing one cannot clean up, its replacement does."""
    pattern = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)-{re.escape(_folder_name(session.name))}-\w+")
    for entry in os.scandir(tempfile.gettempdir()):
        match = pattern.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)


def report(session, metrics: dict, state: dict | None) -> None:
    """Report ``metrics`` with ``state`` (if any) as the checkpoint, written to a local folder that is deleted
    once the report returns: Ray's synchronous upload has then copied it to the run's storage."""
    if state is None:
        session.report(metrics)
        return
    prefix = f"{CHECKPOINT_PREFIX}{os.getpid()}-{_folder_name(session.name)}-"
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
        session.report(metrics, directory)


def load_state(checkpoint: ray.train.Checkpoint) -> dict:
    """Read a training checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    with checkpoint.as_directory() as directory:
        return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------------- the loop
@dataclass
class WorkerState:
    """One worker's run of a :class:`Job`: data, model, optimiser and schedule (:meth:`build`), and the
    early-stopping progress that a checkpoint carries across restarts (:meth:`checkpoint`, :meth:`restore`)."""

    job: Job
    session: Any  # TrainWorkerSession or TuneTrialSession
    dataset: WindowDataset
    transform: BatchTransform
    normalizer: Normalizer | None  # None for the face model (no bio channels)
    model: nn.Module  # as the session prepared it (DDP-wrapped with several workers)
    forward: Forward
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    weight: torch.Tensor | None  # class weights of the training loss
    best_model: dict = field(default_factory=dict)  # state of the best validation epoch's model
    progress: dict = field(default_factory=lambda: {"epoch": 0, "best_score": -1.0, "best_epoch": -1,
                                                    "bad_epochs": 0})

    @classmethod
    def build(cls, job: Job, session) -> WorkerState:
        """Torch threads, data (normalisation fitted on the training rows only) and the seeded model."""
        tc, mc, device = job.train, job.model, session.device
        torch.set_num_threads(max(1, int(tc.cpus_per_worker)))  # Ray leaves a worker one thread unless told
        cache = open_cache(job.cache, expect=job.manifest_hash)  # the snapshot the job was planned on, or stop
        normalizer = fit_normalizer(cache, job.fold.train) if mc.modality != "face" else None
        dataset = WindowDataset(cache, target=tc.target, modality=mc.modality)
        transform = BatchTransform(mc.modality, device, normalizer, channel_index(mc, cache.manifest))

        torch.manual_seed(tc.seed)
        model = build_model(mc)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        model = session.prepare(model)
        forward = Forward(model, compile=use_compile(tc.compile, device))
        steps_per_epoch = math.ceil(math.ceil(len(job.fold.train) / session.world) / tc.batch_size)
        optimizer, scheduler = make_optimizer(model, tc, device, steps_per_epoch)
        weight = None
        if tc.class_weights:
            counts = np.bincount(dataset.labels[job.fold.train], minlength=2).astype(np.float64)
            weight = torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32, device=device)
        worker = cls(job, session, dataset, transform, normalizer, model, forward, optimizer, scheduler, weight)
        worker.best_model = copy.deepcopy(worker.core.state_dict())
        return worker

    @property
    def core(self) -> nn.Module:
        """The bare model (without its DDP wrapper): what is evaluated and checkpointed."""
        return self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model

    def restore(self, checkpoint: ray.train.Checkpoint | None) -> None:
        """Continue where ``checkpoint`` (if any) left off: weights, optimiser, schedule, best model, progress."""
        if not checkpoint:
            return
        state = load_state(checkpoint)
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_model, self.progress = state["best_model"], state["progress"]

    def checkpoint(self) -> dict:
        """What :meth:`restore` reads back."""
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "best_model": self.best_model, "progress": self.progress}

    def batches(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> BatchLoader:
        """Batches of this worker's shard of ``rows`` (shuffled and padded with ``rng``, see :func:`_shard`)."""
        shard = _shard(rows, self.session.rank, self.session.world, rng)
        return BatchLoader(self.dataset, shard, self.job.train.batch_size, self.session.device)

    def run_epoch(self, epoch: int, start_epoch: int) -> dict:
        """Train ``epoch``, validate (summed across workers) and track early stopping; the epoch's metrics."""
        tc, fold, rank = self.job.train, self.job.fold, self.session.rank
        started = time.perf_counter()
        generator = torch.Generator(self.session.device).manual_seed(tc.seed * 1_000_003 + epoch * 1009 + rank)
        loss_sum, seen = train_epoch(self.forward, self.batches(fold.train, np.random.default_rng([tc.seed, epoch])),
                                     self.transform, tc, self.optimizer, self.scheduler, generator, self.weight)
        train_time = time.perf_counter() - started

        cm, val_loss, gate = evaluate(self.core, self.batches(fold.val), self.transform)
        totals = _all_reduce(np.concatenate([cm.ravel(), [val_loss, gate, loss_sum, seen]]))
        cm, (val_loss, gate, loss_sum, seen) = totals[:4].reshape(2, 2), totals[4:]
        n_val = cm.sum()
        validation = prefixed(cm, "val")
        finished = self._track(validation[SELECTION_METRIC], epoch)
        progress = self.progress
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_loss": val_loss / max(n_val, 1),
                   **validation, f"best_{SELECTION_METRIC}": progress["best_score"],
                   "best_epoch": progress["best_epoch"] + 1,
                   "lr": self.scheduler.get_last_lr()[0], "train_time_s": train_time,
                   "train_windows": int(seen), "epoch_time_s": time.perf_counter() - started,
                   "threads": torch.get_num_threads(), "compiled": self.forward.compiled is not None,
                   "cuda": self.session.device.type == "cuda",
                   "start_epoch": start_epoch, "done": finished}
        if self.job.model.modality == "facebio" and FUSIONS[self.job.model.fusion.kind].gates:
            metrics["val_gate_face"] = gate / max(n_val, 1)
        if self.normalizer is not None:
            metrics["normalizer_digest"] = rows_digest(self.normalizer.fitted_rows)  # checked by the leakage audit
        return metrics

    def _track(self, score: float, epoch: int) -> bool:
        """Early stopping: keep the model of the best validation ``score`` (without validation rows: the last
        epoch's); whether training is finished."""
        progress = self.progress
        if score > progress["best_score"] or not self.job.fold.val.size:
            self.best_model = copy.deepcopy(self.core.state_dict())
            progress.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        else:
            progress["bad_epochs"] += 1
        progress["epoch"] = epoch + 1
        return progress["epoch"] == self.job.train.epochs or progress["bad_epochs"] >= self.job.train.patience

    def test_metrics(self) -> dict:
        """``test_*`` metrics of the best validation epoch's model, which stays loaded (and checkpointed)."""
        self.core.load_state_dict(self.best_model)
        cm, _, _ = evaluate(self.core, self.batches(self.job.fold.test), self.transform)
        return prefixed(_all_reduce(cm), "test")


def train_loop_per_worker(config: dict, session=None) -> None:
    """The training loop (see the module docstring) of the job ``config`` (:meth:`Job.to_dict`): a Ray Train
    worker function, or, with a :class:`TuneTrialSession`, the body of a one-worker Tune trial.

    A cache prepared again since the job was planned ends the loop at once without a result (a retry would meet
    the same cache): the driver checks the snapshot when the folds end and stops the run with that one line."""
    session = session or TrainWorkerSession()
    job = Job.from_dict(config)
    with ends_if_cache_changed(job.fold.name):
        _train(WorkerState.build(job, session), session)


@contextlib.contextmanager
def ends_if_cache_changed(name: str):
    """Run the body; a :class:`~gbvnet.data.cache.CacheChanged` ends it with one printed line instead of an error:
    a retry would meet the same cache, and the driver, which checks the snapshot once its trials end, stops the
    run with that line."""
    try:
        yield
    except CacheChanged as exc:
        print(f"[{name}] stopped: {exc}", flush=True)


def _train(worker: WorkerState, session) -> None:
    """Epochs from the latest checkpoint (if any) until early stopping, each reported with a checkpoint."""
    remove_orphaned_checkpoints(session)
    worker.restore(session.checkpoint())
    job = worker.job
    start_epoch = worker.progress["epoch"]  # > 0 after a restart: reported, so a resume is visible
    for epoch in range(start_epoch, job.train.epochs):
        check_snapshot(job.cache, job.manifest_hash)  # a cache prepared again meanwhile stops the run now
        metrics = worker.run_epoch(epoch, start_epoch)
        if metrics["done"] and job.fold.test.size:
            metrics.update(worker.test_metrics())
        state = None
        if session.rank == 0:
            state = worker.checkpoint()
            print(f"[{job.fold.name}] epoch {epoch + 1}/{job.train.epochs} loss {metrics['train_loss']:.4f} "
                  f"val acc {metrics['val_accuracy']:.3f} {SELECTION_METRIC} {metrics[SELECTION_METRIC]:.3f}"
                  + (f" | test acc {metrics['test_accuracy']:.3f}" if "test_accuracy" in metrics else ""),
                  flush=True)
        report(session, metrics, state)
        if metrics["done"]:
            break
