"""Launching training on Ray: the cluster connection, resources, trainers, and the Tune trainables of the
evaluations and the search.

Every run executes the loop of :mod:`gbvnet.train.loop` on a :class:`~gbvnet.train.loop.Job`, in one of two ways:

- a single run (``python -m gbvnet.train``), and every fold or trial with 2+ workers, is a Ray Train
  ``TorchTrainer`` (:func:`make_trainer`): a controller and ``num_workers`` worker processes training with DDP, a
  restarted worker resuming from the latest checkpoint;
- a one-worker fold or trial trains directly in its Tune trial's process (:func:`fit_in_tune`), which saves
  starting a controller and a worker process per fold or trial. Tune then handles its reports, checkpoints,
  retries and schedulers (ASHA) as it does a trainer's.

Resources (:func:`scaling`, :func:`tune_trial_resources`): each worker reserves ``cpus_per_worker`` CPUs and
``gpus_per_worker`` GPUs, ``None`` meaning 1 GPU where the cluster has GPUs or an autoscaler that can add GPU
nodes. A GPU share below 1 is what Ray reserves, so four one-worker trials at 0.25 train at once on one GPU
(shares need one worker per run: DDP needs a GPU per worker). A one-worker trial reserves its worker's resources
itself; a trial that only waits on its trainer reserves a sliver of a CPU (:data:`DRIVER_CPU`), which its
workers leave out.

The Tune trainables :func:`tune_fold` (evaluations), :func:`search_trial` (search) and :func:`nested_trial` (the
nested evaluation's search trials and folds) live here rather than next
to their drivers so that each trial's process imports the training code only (no MLflow, Optuna or sklearn).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading

import pyarrow.fs as pafs
import ray
import ray._private.worker
import ray.train
import ray.train.torch
import yaml
from ray import tune
from ray.core.generated import autoscaler_pb2
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.progress_reporter import TrialProgressCallback

from gbvnet import cli
from gbvnet.cli import Interrupted
from gbvnet.config import TrainConfig
from gbvnet.data.storage import absolute, delete_quietly_dir, filesystem
from gbvnet.search.space import apply
from gbvnet.train.loop import Job, TuneTrialSession, ends_if_cache_changed, make_job, train_loop_per_worker

# A Tune trial whose function only waits on its TorchTrainer reserves this sliver of a CPU (Ray refuses
# zero-resource trials) and its workers take the rest, so one trial occupies exactly its workers' CPUs.
DRIVER_CPU = 0.01


# --------------------------------------------------------------------------------------------------- Ray
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
    # Tune's console reporter prints an experiment header and a TensorBoard hint (a /tmp/ray folder) whatever the
    # verbosity; its other reporter honours ``verbose=0``. Progress is the project's own table
    # (gbvnet.cli.progress), results are in MLflow.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
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


def storage_path(storage: str | None = None) -> str:
    """Where Ray keeps results and checkpoints: ``storage``, else ``GBVNET_STORAGE``, else ``./runs/ray`` (a path
    or URI; local paths made absolute, since trials run in their own directories)."""
    return absolute(storage or os.environ.get("GBVNET_STORAGE") or "runs/ray")


# --------------------------------------------------------------------------------------------------- resources
# Where the cluster launcher puts its config on the head node (the autoscaler reads its node types from it).
LAUNCHER_CONFIG = "~/ray_bootstrap_config.yaml"


def declared_gpu_node_types() -> list[str]:
    """The node types of the cluster's autoscaler that carry GPUs, up or not: from the cluster config that Ray's
    autoscaler (v2, KubeRay) reports to the cluster, else from the cluster launcher's config on the head node
    (:data:`LAUNCHER_CONFIG`, where jobs' drivers run). Empty without an autoscaler (a fixed or local cluster)."""
    serialized = _gcs().internal_kv_get(ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(),
                                        ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode(), timeout=GCS_TIMEOUT_S)
    config = autoscaler_pb2.ClusterConfig.FromString(serialized) if serialized else None
    if config is not None and config.node_group_configs:
        return [g.name for g in config.node_group_configs if g.resources.get("GPU", 0) > 0 and g.max_count != 0]
    path = os.path.expanduser(LAUNCHER_CONFIG)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        types = (yaml.safe_load(f) or {}).get("available_node_types") or {}
    return [name for name, t in types.items()
            if (t.get("resources") or {}).get("GPU", 0) > 0 and t.get("max_workers", 1) != 0]


def gpus_per_worker(tc: TrainConfig) -> float:
    """``tc.gpus_per_worker``, with ``None`` resolved: 1 when the Ray cluster has GPUs or can scale up nodes with
    GPUs (:func:`declared_gpu_node_types`: GPU workers that autoscale from zero are not up when the run starts),
    else 0."""
    if tc.gpus_per_worker is not None:
        return float(tc.gpus_per_worker)
    if not ray.is_initialized():
        return 0.0
    nodes = _gcs().get_all_node_info(timeout=GCS_TIMEOUT_S).values()
    gpus = sum(node.resources_total.get("GPU", 0) for node in nodes if node.state == ALIVE)
    return 1.0 if gpus > 0 or declared_gpu_node_types() else 0.0


GCS_TIMEOUT_S = 30  # a cluster's control plane that does not answer in this long is an error, not a wait
ALIVE = 0  # GcsNodeInfo.state of a live node


def _gcs():
    """This driver's own GCS client (the one its tasks use, with per-call timeouts). Ray's global-state accessor,
    behind ``ray.cluster_resources()``, was seen waiting forever in a long-lived process (a test session) while
    the GCS answered everything else."""
    return ray._private.worker.global_worker.gcs_client


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


# --------------------------------------------------------------------------------------------------- launch
def make_trainer(job: Job, name: str, *, storage: str | None = None, callbacks=(),
                 in_tune: bool = False) -> ray.train.torch.TorchTrainer:
    """A ``TorchTrainer`` for ``job``: workers, resources and failure retries from its ``TrainConfig``
    (see :func:`scaling`)."""
    tc = job.train
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.to_dict(),
        scaling_config=scaling(tc, in_tune),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path(storage),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )


def fit_in_tune(job: Job, name: str, *, storage: str) -> None:
    """Fit ``job`` from inside a Tune function trainable reserving :func:`tune_trial_resources`.

    One worker: the loop runs right here, in the trial's process (:class:`~gbvnet.train.loop.TuneTrialSession`).
    Several: a ``TorchTrainer`` named ``name`` whose metrics reach Tune through ``TuneReportCallback``.
    """
    if job.train.num_workers == 1:
        train_loop_per_worker(job.to_dict(), TuneTrialSession())
        return
    make_trainer(job, name, storage=storage, callbacks=[TuneReportCallback()], in_tune=True).fit()


def exit_on_interrupt(note: str | None = None):
    """:func:`gbvnet.cli.exit_on_interrupt` (``note``: what the line says after the signal) for a command that runs
    Ray: after the line the local Ray instance is shut down (no Ray process is left)."""
    return cli.exit_on_interrupt(note, cleanup=ray.shutdown)


TUNE_LOG = logging.getLogger("ray.tune.tune")  # where Tune says it was stopped, and how to restore the run


class TuneStopLines(logging.Filter):
    """Drops Tune's messages about a stop signal and how to restore the stopped run (with ``Tuner.restore``,
    which a gbvnet user never calls: ``--resume`` does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Stop signal received", "Experiment has been interrupted"))


class QuietTrials(TrialProgressCallback):
    """Tune's per-trial printer, silent: given to a run, it stands in for the one Tune adds by itself, which prints
    "Trial ... completed. Last result: ..." for a trial that ends without a new result (whatever the verbosity).
    Progress is the project's own table (:class:`~gbvnet.cli.progress.ProgressTable`)."""

    def _print(self, msg: str) -> None:
        pass


@contextlib.contextmanager
def tune_signals():
    """While a Tuner runs (in the main thread): the first SIGINT or SIGTERM asks Tune to stop gracefully (it saves
    the experiment state, stops the trials and returns), a second one stops at once; afterwards the handlers in
    place before are restored, so a later Ctrl-C (a test session's) works as before. Yields a list that receives
    the signal that arrived.

    Tune's own SIGINT handler stays off (``TUNE_DISABLE_SIGINT_HANDLER``: it would outlive the run); its SIGUSR1
    handler, which every Tune run installs, is how this asks it to stop. Tune's own lines about it ("Stop signal
    received (e.g. via SIGINT/Ctrl+C)", "Resume experiment with: Tuner.restore(...)") are left out
    (:class:`TuneStopLines`): the command's one line says what happened and how to go on."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def stop(signum, frame):
        if caught:
            raise Interrupted(caught[0])  # a second signal: no more waiting
        caught.append(signum)
        signal.raise_signal(signal.SIGUSR1)

    def before_tune(signum, frame):  # SIGUSR1 before Tune has installed its handler
        raise Interrupted(caught[0] if caught else signal.SIGINT)

    names = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    saved = {s: signal.getsignal(s) for s in names}
    env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGUSR1, before_tune)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    lines = TuneStopLines()
    TUNE_LOG.addFilter(lines)
    try:
        yield caught
    finally:
        TUNE_LOG.removeFilter(lines)
        for s, handler in saved.items():
            signal.signal(s, handler)
        if env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = env


def run_tuner(trainable, name: str, storage: str, *, resume: bool, param_space: dict, tune_config,
              callbacks: list, max_failures: int, total: int | None = None, kind: str = "trial"):
    """Fit the Tune experiment ``name`` under ``storage`` and return its ``ResultGrid``: restored (finished trials
    kept, errored ones retried) when ``resume`` and a previous run is there, else created. Each trial keeps its
    last 2 checkpoints and is retried ``max_failures`` times from its latest one. A restored run keeps the
    callbacks it was created with.

    A finished trial's process runs the next trial (Tune's ``reuse_actors``): a fold or search trial then pays no
    process start and no import of torch and the model code (3-4 s per trial on 2 CPU cores). Tune prints nothing
    of its own per trial (:class:`QuietTrials`).

    SIGINT / SIGTERM (:func:`tune_signals`) stop the run with its state saved and raise :class:`Interrupted`,
    counting the finished trials (those whose last result says ``done``; of ``total``, each called a ``kind``)."""
    path = f"{storage.rstrip('/')}/{name}"
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space, tune_config=dataclasses.replace(tune_config, reuse_actors=True),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=[*callbacks, QuietTrials()],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                      failure_config=tune.FailureConfig(max_failures=max_failures)))
    with tune_signals() as caught:
        grid = tuner.fit()
    if caught:  # trials stopped by the interruption are TERMINATED too: count those that reported "done"
        raise Interrupted(caught[0], sum(bool(r.metrics and r.metrics.get("done")) for r in grid), total, kind)
    return grid


def remove_checkpoints(path: str, fs: pafs.FileSystem | None = None) -> None:
    """Delete the ``checkpoint_*`` folders of a finished trial or trainer run at ``path`` (a path or URI, or a path
    on ``fs``, :func:`gbvnet.data.storage.filesystem`); its results stay."""
    fs, root = filesystem(path, fs)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
            delete_quietly_dir(fs, info.path)


# --------------------------------------------------------------------------------------------------- trainables
def tune_fold(config: dict, jobs: list[Job], names: list[str], storage: str, prefix: str) -> None:
    """Tune trainable of the evaluations: fit fold ``config["fold"]`` of ``jobs``.

    A retried fold resumes from its own last checkpoint: the trial's (one worker), or that of the trainer, whose
    name is fixed per fold (several workers).
    """
    i = config["fold"]
    fit_in_tune(jobs[i], f"{prefix}-{names[i]}", storage=storage)


def search_trial(config: dict, base: dict, storage: str, experiment: str) -> None:
    """Tune trainable of ``tune/search.py``: the sampled point ``config`` written into the ``base`` model and
    training configs (:func:`gbvnet.search.space.apply`), trained on the search fold of the cache snapshot
    ``base["manifest_hash"]``."""
    model, train = apply(config, base["model"], base["train"])
    name = f"{experiment}-{tune.get_context().get_trial_id()}"
    with ends_if_cache_changed(name):
        job = make_job(base["cache"], model, train, base["fold"], manifest_hash=base.get("manifest_hash"))
        fit_in_tune(job, name, storage=storage)


NESTED_KEYS = ("fold", "job", "number")  # a nested trial's config: these, plus the sampled point (if any)


def nested_trial(config: dict, jobs: dict[str, list[Job]], storage: str, experiment: str) -> None:
    """Tune trainable of the nested evaluation (``evaluation.loso --search-trials``): one trial of outer fold
    ``config["fold"]``. ``config["job"]`` says which: ``inner`` (a search trial on that fold's inner fold,
    ``jobs["inner"]``), ``tuned`` (the outer fold trained with its search's best point and tested) or ``untuned``
    (the outer fold with the base configuration); the rest of ``config`` is the point written into the job's
    configs (:func:`gbvnet.search.space.apply`)."""
    base = jobs["inner" if config["job"] == "inner" else "outer"][config["fold"]]
    model, train = apply({k: v for k, v in config.items() if k not in NESTED_KEYS}, base.model, base.train)
    job = dataclasses.replace(base, model=model, train=train)  # the fold and cache were checked by make_job
    name = f"{experiment}-{tune.get_context().get_trial_id()}"
    with ends_if_cache_changed(name):
        fit_in_tune(job, name, storage=storage)
