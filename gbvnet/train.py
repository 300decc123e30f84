"""Training on Ray Train: one per-worker loop for 1..N workers (DDP), CPU or GPU, with checkpoints and resume.

``train_loop_per_worker(job)`` is what every evaluation fold, search trial and single run executes: as the
worker function of a Ray Train ``TorchTrainer`` (:class:`TrainWorkerSession`), or, for the one-worker folds and
trials of the evaluations and the search, directly inside the Tune trial's process (:class:`TuneTrialSession`),
which saves starting a Train controller and a worker process per fold or trial (:func:`fit_in_tune`). ``job`` is a
plain dict (see :func:`make_job`): the cache location, the model and training configs and a
:class:`~gbvnet.splits.Fold` (train / val / test rows of the cache). Per epoch the loop trains on its shard of the
training rows (each window once per epoch across workers; the last few are repeated to give every worker the
same number of steps, as ``DistributedSampler`` does), evaluates on the validation rows (sharded, confusion
matrices summed across workers), early-stops on validation macro-F1 (our choice over the positive-class F1 of
PAPER.md: a constant "always high" predictor scores a high F1 but a poor macro-F1) and reports metrics with a checkpoint through
``ray.train.report`` (written to a local temporary folder that is deleted once Ray has copied it to the run's
storage, see :func:`report`). After a worker failure Ray restarts the workers and the loop resumes from the latest
checkpoint (epoch counter continues). At the end the model of the best *validation* epoch is scored once on the
test rows (``test_*`` metrics): the test set never steers training or model selection.

The passes themselves are :mod:`gbvnet.steps` (also run by the benchmarks without Ray): batches travel to the
device as cached (faces ``uint8``), read and copied in the background while the device works, and become model
inputs there (normalisation, augmentation); ``torch.compile`` is on by default on CUDA. Each worker runs torch
with ``cpus_per_worker`` threads and holds ``gpus_per_worker`` GPUs (a share such as 0.25 packs four one-worker
runs onto one GPU): :func:`scaling`.

Normalisation statistics (per bio channel) are fitted on the training rows only. Checkpoints are read with
``torch.load(weights_only=True)``: no arbitrary unpickling.

CLI: ``python -m gbvnet.train --cache DIR --modality facebio --target valence --train-subjects 1 2
--val-subjects 3 [--test-subjects 4] [--workers N] [--gpus-per-worker G] [--cpus-per-worker C]
[--compile/--no-compile] [--epochs E] [--seed S] [--max-failures K]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import shutil
import socket
import tempfile
import time
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from gbvnet.cli import add_compute_arguments, apply_compute_arguments
from gbvnet.config import (
    FUSIONS,
    MODALITIES,
    ConfigError,
    ModelConfig,
    TrainConfig,
    from_dict,
    model_preset,
    to_dict,
)
from gbvnet.data.cache import Manifest, absolute, open_cache
from gbvnet.data.dataset import WindowDataset, fit_normalizer
from gbvnet.data.loader import BatchLoader
from gbvnet.data.transform import BatchTransform
from gbvnet.metrics import binary_metrics, prefixed
from gbvnet.models import GBVNet
from gbvnet.splits import Fold, check_fold, rows_digest
from gbvnet.steps import Forward, evaluate, make_optimizer, train_epoch, use_compile

CHECKPOINT_FILE = "state.pt"


# --------------------------------------------------------------------------------------------------- job spec
def fit_model_to_cache(model: ModelConfig, manifest: Manifest) -> ModelConfig:
    """Set the model's input sizes (bio channels/samples, frames, face size) from the cache manifest."""
    model = copy.deepcopy(model)
    model.bio.channels = len(manifest.channels)
    model.bio.samples = manifest.window_samples
    model.face.frames = manifest.frames
    model.face.image_size = manifest.face_size
    return model.validate()


def make_job(cache: str, model: ModelConfig, train: TrainConfig, fold: Fold, allow_leaky: bool = False) -> dict:
    """Validate everything and build the plain-dict job every worker receives.

    Refuses (``ConfigError`` / ``LeakageError``) unknown modalities, empty training sets, a modality that needs
    faces on a cache without them, and folds that share subjects/trials between their parts.
    """
    train.validate()
    index = open_cache(cache).index()
    model = fit_model_to_cache(model, index.manifest)
    if model.modality != "bio" and not index.has_face:
        raise ConfigError(f"modality {model.modality!r} needs face frames but cache {cache} has none "
                          "(prepared with --no-face, or no videos); use --modality bio")
    check_fold(fold, index.subject, index.trial, allow_leaky=allow_leaky)
    if fold.val.size == 0:
        raise ConfigError(f"fold {fold.name}: empty validation set (early stopping needs one)")
    return {"cache": absolute(cache), "model": to_dict(model), "train": to_dict(train), "fold": fold.to_dict(),
            "allow_leaky": allow_leaky}


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
def train_loop_per_worker(job: dict[str, Any], session=None) -> None:
    """The training loop (see the module docstring): a Ray Train worker function, or, with a
    :class:`TuneTrialSession`, the body of a one-worker Tune trial."""
    session = session or TrainWorkerSession()
    tc: TrainConfig = from_dict(TrainConfig, job["train"]).validate()
    mc: ModelConfig = from_dict(ModelConfig, job["model"]).validate()
    fold = Fold.from_dict(job["fold"])
    rank, world, device = session.rank, session.world, session.device
    torch.set_num_threads(max(1, int(tc.cpus_per_worker)))  # Ray leaves a worker one thread unless told

    cache = open_cache(job["cache"])
    normalizer = fit_normalizer(cache, fold.train) if mc.modality != "face" else None
    ds = WindowDataset(cache, target=tc.target, modality=mc.modality)
    transform = BatchTransform(mc.modality, device, normalizer)
    labels = ds.labels

    def batches(rows: np.ndarray) -> BatchLoader:
        return BatchLoader(ds, rows, tc.batch_size, device)

    torch.manual_seed(tc.seed)
    model = GBVNet(mc)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = session.prepare(model)
    core = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    forward = Forward(model, compile=use_compile(tc.compile, device))

    steps_per_epoch = math.ceil(math.ceil(len(fold.train) / world) / tc.batch_size)
    optimizer, scheduler = make_optimizer(model, tc, device, steps_per_epoch)
    weight = None
    if tc.class_weights:
        counts = np.bincount(labels[fold.train], minlength=2).astype(np.float64)
        weight = torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32, device=device)

    progress = {"epoch": 0, "best_score": -1.0, "best_epoch": -1, "bad_epochs": 0}
    best_model = copy.deepcopy(core.state_dict())
    remove_orphaned_checkpoints(session)
    checkpoint = session.checkpoint()
    if checkpoint:
        state = load_state(checkpoint)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best_model, progress = state["best_model"], state["progress"]

    start_epoch = progress["epoch"]  # > 0 after a restart: reported, so a resume is visible
    for epoch in range(start_epoch, tc.epochs):
        started = time.perf_counter()
        shard = _shard(fold.train, rank, world, np.random.default_rng([tc.seed, epoch]))
        generator = torch.Generator(device).manual_seed(tc.seed * 1_000_003 + epoch * 1009 + rank)
        loss_sum, seen = train_epoch(forward, batches(shard), transform, tc, optimizer, scheduler, generator,
                                     weight)
        train_time = time.perf_counter() - started

        cm, val_loss, gate = evaluate(core, batches(_shard(fold.val, rank, world, None)), transform)
        totals = _all_reduce(np.concatenate([cm.ravel(), [val_loss, gate, loss_sum, seen]]))
        cm, (val_loss, gate, loss_sum, seen) = totals[:4].reshape(2, 2), totals[4:]
        n_val = cm.sum()
        val = binary_metrics(cm)
        if val["macro_f1"] > progress["best_score"]:
            best_model = copy.deepcopy(core.state_dict())
            progress.update(best_score=val["macro_f1"], best_epoch=epoch, bad_epochs=0)
        else:
            progress["bad_epochs"] += 1
        progress["epoch"] = epoch + 1
        finished = progress["epoch"] == tc.epochs or progress["bad_epochs"] >= tc.patience

        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_loss": val_loss / max(n_val, 1),
                   **prefixed(cm, "val"), "best_val_macro_f1": progress["best_score"],
                   "best_epoch": progress["best_epoch"] + 1,
                   "lr": scheduler.get_last_lr()[0], "train_time_s": train_time,
                   "epoch_time_s": time.perf_counter() - started, "threads": torch.get_num_threads(),
                   "compiled": forward.compiled is not None,
                   "start_epoch": start_epoch, "done": finished}
        if mc.modality == "facebio" and mc.fusion.kind == "gated":
            metrics["val_gate_face"] = gate / max(n_val, 1)
        if normalizer is not None:
            metrics["normalizer_digest"] = rows_digest(normalizer.fitted_rows)  # checked by the leakage audit
        if finished and fold.test.size:
            core.load_state_dict(best_model)
            test_cm, _, _ = evaluate(core, batches(_shard(fold.test, rank, world, None)), transform)
            metrics.update(prefixed(_all_reduce(test_cm), "test"))
        state = None
        if rank == 0:
            state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "best_model": best_model, "progress": progress}
            print(f"[{fold.name}] epoch {epoch + 1}/{tc.epochs} loss {metrics['train_loss']:.4f} "
                  f"val acc {val['accuracy']:.3f} macro-F1 {val['macro_f1']:.3f}"
                  + (f" | test acc {metrics['test_accuracy']:.3f}" if "test_accuracy" in metrics else ""),
                  flush=True)
        report(session, metrics, state)
        if finished:
            break


# --------------------------------------------------------------------------------------------------- driver
def fit_in_tune(job: dict, name: str, *, storage: str) -> None:
    """Fit ``job`` from inside a Tune function trainable reserving :func:`tune_trial_resources`.

    One worker: the loop runs right here, in the trial's process (:class:`TuneTrialSession`). Several: a
    ``TorchTrainer`` named ``name`` whose metrics reach Tune through ``TuneReportCallback``.
    """
    if from_dict(TrainConfig, job["train"]).num_workers == 1:
        train_loop_per_worker(job, TuneTrialSession())
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    make_trainer(job, name, storage=storage, callbacks=[TuneReportCallback()], in_tune=True).fit()


def tune_fold(config: dict, jobs: list[dict], names: list[str], storage: str, prefix: str) -> None:
    """Tune trainable of the evaluations: fit fold ``config["fold"]`` of ``jobs``.

    A retried fold resumes from its own last checkpoint: the trial's (one worker), or that of the trainer, whose
    name is fixed per fold (several workers). It lives here,
    not in ``evaluation.run``, so that each trial's process imports the training code only (no MLflow, sklearn).
    """
    i = config["fold"]
    fit_in_tune(jobs[i], f"{prefix}-{names[i]}", storage=storage)


def run_tuner(trainable, name: str, storage: str, *, resume: bool, param_space: dict, tune_config,
              callbacks: list, max_failures: int):
    """Fit the Tune experiment ``name`` under ``storage`` and return its ``ResultGrid``: restored (finished trials
    kept, errored ones retried) when ``resume`` and a previous run is there, else created. Each trial keeps its
    last 2 checkpoints and is retried ``max_failures`` times from its latest one. A restored run keeps the
    callbacks it was created with."""
    from ray import tune

    path = f"{storage.rstrip('/')}/{name}"
    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_errored=True).fit()
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=callbacks,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    ).fit()


def storage_path(storage: str | None = None) -> str:
    """Where Ray keeps results and checkpoints: ``storage``, else ``GBVNET_STORAGE``, else ``./runs/ray`` (a path
    or URI; local paths made absolute, since trials run in their own directories)."""
    return absolute(storage or os.environ.get("GBVNET_STORAGE") or "runs/ray")


def init_ray(**local_options) -> None:
    """Connect to ``RAY_ADDRESS`` when set (a cluster); otherwise start a local Ray with ``local_options``.

    A local instance gets its dashboard on a free port, and every worker learns that address
    (``RAY_API_SERVER_ADDRESS``): Ray Train's placement-group cleaner queries the state API, which otherwise
    guesses the cluster and fails when a machine runs more than one Ray instance; training runs would then leak
    their placement groups and later runs would wait for CPUs forever.
    """
    # Tune keeps 2 checkpoints per trial, which makes it snapshot the experiment state at every epoch's checkpoint
    # and warn each time; a few kB per epoch is the price of resuming exactly, so the warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=local_options.get("log_to_driver", True))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
             runtime_env={"env_vars": env}, **local_options)


# A Tune trial whose function only waits on its TorchTrainer reserves this sliver of a CPU (Ray refuses
# zero-resource trials) and its workers take the rest, so one trial occupies exactly its workers' CPUs.
DRIVER_CPU = 0.01


def gpus_per_worker(tc: TrainConfig) -> float:
    """``tc.gpus_per_worker``, with ``None`` resolved: 1 when the Ray cluster has GPUs, else 0."""
    if tc.gpus_per_worker is not None:
        return float(tc.gpus_per_worker)
    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def tune_trial_resources(tc: TrainConfig) -> dict:
    """Resources of a Tune trial running :func:`fit_in_tune` for ``tc``: the worker's own CPUs and GPU share
    when it trains in the trial's process (one worker), else the sliver of a trainer's driver."""
    if tc.num_workers == 1:
        return {"cpu": tc.cpus_per_worker, "gpu": gpus_per_worker(tc)}
    return {"cpu": DRIVER_CPU}


def scaling(tc: TrainConfig, in_tune: bool = False) -> ray.train.ScalingConfig:
    """Workers and their resources, from the job's ``TrainConfig``: ``num_workers`` workers of
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs each (``None``: 1 GPU when the cluster has GPUs).

    A GPU share below 1 is what Ray reserves, so e.g. four one-worker trials at 0.25 run at once on one GPU.
    ``in_tune``: the trainer runs inside a Tune trial reserving :func:`tune_trial_resources`; its workers then
    take ``DRIVER_CPU / num_workers`` CPU less each, so a trial occupies exactly its workers' CPUs.
    """
    gpus = gpus_per_worker(tc)
    cpus = tc.cpus_per_worker - (DRIVER_CPU / tc.num_workers if in_tune else 0)
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return ray.train.ScalingConfig(num_workers=tc.num_workers, use_gpu=gpus > 0, resources_per_worker=resources)


def make_trainer(job: dict, name: str, *, storage: str | None = None, callbacks=(),
                 in_tune: bool = False) -> ray.train.torch.TorchTrainer:
    """A ``TorchTrainer`` for ``job``: workers, resources and failure retries from its ``TrainConfig``
    (see :func:`scaling`)."""
    tc = from_dict(TrainConfig, job["train"]).validate()
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job,
        scaling_config=scaling(tc, in_tune),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path(storage),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gbvnet.train", description="Train GBV-Net once on a window cache.")
    p.add_argument("--cache", required=True, help="window cache directory or URI (python -m gbvnet.prepare)")
    p.add_argument("--modality", choices=MODALITIES, default="facebio")
    p.add_argument("--fusion", choices=FUSIONS, default="gated")
    p.add_argument("--target", choices=("valence", "arousal"), default="valence")
    p.add_argument("--preset", choices=("smoke", "paper"), default="smoke")
    p.add_argument("--train-subjects", type=int, nargs="+", required=True)
    p.add_argument("--val-subjects", type=int, nargs="+", required=True)
    p.add_argument("--test-subjects", type=int, nargs="*", default=[])
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-failures", type=int, default=0, help="worker failures to recover from (-1: always)")
    p.add_argument("--storage", default=None, help="Ray results/checkpoints path or URI (default ./runs/ray)")
    p.add_argument("--name", default=None)
    add_compute_arguments(p)
    return p.parse_args(argv)


def subject_fold(index, train: list[int], val: list[int], test: list[int]) -> Fold:
    """A subject-level fold from subject lists; overlapping or unknown subjects are refused."""
    parts = {"train": set(train), "val": set(val), "test": set(test)}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if parts[a] & parts[b]:
            raise ConfigError(f"subject(s) {sorted(parts[a] & parts[b])} in both {a} and {b} subjects")
    known = set(np.unique(index.subject).tolist())
    for part, subjects in parts.items():
        if subjects - known:
            raise ConfigError(f"{part} subject(s) {sorted(subjects - known)} not in the cache (has {sorted(known)})")
    rows = np.arange(len(index.subject))
    pick = {p: rows[np.isin(index.subject, sorted(s))] for p, s in parts.items()}
    return Fold("subjects", "subject", pick["train"], pick["val"], pick["test"])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model = model_preset(args.preset, modality=args.modality, fusion=args.fusion)
    train = apply_compute_arguments(args, TrainConfig(target=args.target, epochs=args.epochs,
                                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                                      max_failures=args.max_failures))
    index = open_cache(args.cache).index()
    fold = subject_fold(index, args.train_subjects, args.val_subjects, args.test_subjects)
    job = make_job(args.cache, model, train, fold)
    init_ray()
    trainer = make_trainer(job, args.name or f"train-{args.modality}-{args.target}-{int(time.time())}",
                           storage=args.storage)
    result = trainer.fit()
    metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
    print("final:", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return result.metrics


if __name__ == "__main__":
    main()
