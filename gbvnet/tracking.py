"""MLflow tracking for evaluations and searches: one parent run per invocation, one nested run per fold/trial.

Everything is logged from the driver through ``MlflowClient`` (no global active run), so only the driver needs
to reach the tracking server. Default tracking URI: a local SQLite file ``runs/mlflow.db`` (artifacts under
``runs/mlartifacts``); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` point anywhere else.

What the MLflow UI shows: every experiment the project creates is tagged as a model-training experiment
(``mlflow.experimentKind = custom_model_development``; MLflow 3.17's UI nevertheless picks an experiment's view from
its global "GenAI / Model training" switch, ``?workflowType=machine_learning`` in the URL, not from this tag); each
parent run carries MLflow's source tags (``mlflow.source.name``, and
``mlflow.source.git.commit`` when the code runs from a git checkout: the Source column) and the window cache as a
dataset input (name, digest = cache manifest hash, source URI, row count: the Dataset column).

Each Tune trial (a fold, or a search trial) becomes a nested run named after it, with its per-epoch metrics
(``step`` = epoch; the project's metrics only, not Tune's bookkeeping such as ``pid`` or ``timestamp``) and the
trial's real start and end, logged by :class:`TrialLogger` as soon as the trial finishes (a trial it could not
log, e.g. while the tracking server is down, is logged by the command's final step). On ``--resume`` the parent
run is found again by its invocation key and folds already logged are kept, so no duplicates appear.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
)
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

from gbvnet.storage import join, read_text

PARENT_TAG = "gbvnet.invocation"
TRIAL_TAG = "gbvnet.trial"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # MLflow's kind for model training
PROJECT = Path(__file__).resolve().parents[1]


def tracking_uri(cli_value: str | None = None) -> str:
    """``cli_value``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/runs/mlflow.db``."""
    if cli_value:
        return cli_value
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    Path("runs").mkdir(exist_ok=True)
    return f"sqlite:///{Path('runs/mlflow.db').resolve()}"


@contextlib.contextmanager
def store_lock(uri: str):
    """Hold an exclusive lock on ``<database>.lock`` beside a SQLite store (nothing for other stores).

    The first client of a new SQLite file creates its tables (MLflow's schema migration); two commands doing it at
    once fail (``table _alembic_tmp_experiments already exists``), as do two creating the same experiment.
    """
    path = uri.removeprefix("sqlite:///")
    if not uri.startswith("sqlite:///") or not path or path.startswith(":memory:"):
        yield
        return
    lock = Path(path.split("?", 1)[0] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_store(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client of the tracking store ``uri`` and the id of ``experiment`` in it (:func:`experiment_id`), the
    store created (a new SQLite file: its tables) and the experiment found or created under :func:`store_lock`,
    so commands started together share one store safely."""
    with store_lock(uri):
        client = MlflowClient(uri)  # creates (migrates) a new store's tables
        return client, experiment_id(client, experiment)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment ``name``, created if missing; tagged as a model-training experiment unless it has a kind."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if KIND_TAG not in found.tags:  # made without the tag (by MLflow's own API, say): tag it now
            client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
        return found.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:"):
        location = Path("runs/mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})
    except MlflowException as exc:  # a tracking server's client created it meanwhile
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def git_commit(path: str | Path = PROJECT) -> str:
    """The HEAD commit of the git checkout holding ``path`` (default: this code), or ``"unknown"``."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=path).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_tags(entry: str | None = None, code: str | Path = PROJECT) -> dict[str, str]:
    """MLflow's source tags: ``entry`` (default: the running script, relative to the project when inside it),
    type ``LOCAL``, and the git commit of ``code`` when it is a git checkout (none otherwise)."""
    entry = entry or sys.argv[0]
    if Path(entry).is_absolute() and Path(entry).resolve().is_relative_to(PROJECT):
        entry = str(Path(entry).resolve().relative_to(PROJECT))
    tags = {MLFLOW_SOURCE_NAME: entry, MLFLOW_SOURCE_TYPE: "LOCAL"}
    commit = git_commit(code)
    if commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


def cache_input(uri: str, manifest_hash: str, rows: int, subjects: int, context: str) -> DatasetInput:
    """The window cache as an MLflow dataset input: name = the cache folder's name, digest = manifest hash,
    source = its URI (type ``local`` or the URI's scheme), profile = rows (windows) and subjects."""
    scheme = urlparse(uri).scheme if "://" in uri else ""
    dataset = Dataset(name=uri.rstrip("/").rsplit("/", 1)[-1], digest=manifest_hash,
                      source_type=scheme if scheme not in ("", "file") else "local", source=json.dumps({"uri": uri}),
                      profile=json.dumps({"num_rows": rows, "subjects": subjects}))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def flat_params(prefix: str, value: Any) -> dict[str, str]:
    """Nested dicts as dotted MLflow params (values truncated to MLflow's 6000 characters)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flat_params(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:6000]}


TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | frozenset(DEBUG_METRICS) | {"done", "should_checkpoint"}


def scalar_metrics(result: dict) -> dict[str, float]:
    """The project's numeric metrics of one Tune result (Tune's own keys left out)."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k.split("/")[0] not in TUNE_KEYS}


def trial_history(path: str, filesystem: pafs.FileSystem | None = None) -> list[dict]:
    """Every result a Tune trial reported (its ``result.json`` at ``path``), in order. ``path`` is a local path or
    URI, or a path on ``filesystem``: a Tune result's ``path`` on its ``filesystem`` (``--storage s3://...`` gives
    bucket paths without the scheme)."""
    text = read_text(join(path, "result.json"), filesystem)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def trial_times(history: list[dict]) -> tuple[int | None, int | None]:
    """Start and end (ms since the epoch) of the trial that reported ``history``: its first result's time less
    that iteration's duration, and its last result's time."""
    if not history or "timestamp" not in history[0]:
        return None, None
    start = history[0]["timestamp"] - history[0].get("time_this_iter_s", 0.0)
    return int(start * 1000), int(history[-1]["timestamp"] * 1000)


def log_json(client: MlflowClient, run_id: str, data: Any, name: str) -> None:
    """``data`` as the JSON artifact ``name`` (may contain folders, e.g. ``comparisons/vs_x.json``) of a run."""
    folder, _, filename = name.rpartition("/")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / filename
        path.write_text(json.dumps(data, indent=2, default=str))
        client.log_artifact(run_id, str(path), artifact_path=folder or None)


class Tracker:
    """The parent run of one invocation (found again by its invocation key on resume)."""

    def __init__(self, uri: str, experiment: str, invocation: str, run_name: str, resume: bool):
        """Find (``resume``) or create the parent run; a new one gets :func:`source_tags`."""
        self.uri = uri
        self.client, self.experiment_id = open_store(uri, experiment)
        self.invocation = invocation
        existing = self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{invocation}'",
                                           max_results=1) if resume else []
        if existing:
            self.run_id = existing[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name,
                                                 tags={PARENT_TAG: invocation, **source_tags()}).info.run_id

    def __getstate__(self) -> dict:  # pickled with a Tune run's callbacks (:class:`TrialLogger`): no client
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(self.uri)

    def log_cache(self, uri: str, index, context: str) -> None:
        """Record the window cache (:func:`cache_input`; ``index`` its :class:`~gbvnet.data.cache.CacheIndex`) as
        this run's dataset input; logging the same cache again (``--resume``) adds nothing."""
        rows, subjects = len(index.subject), len(set(index.subject.tolist()))
        self.client.log_inputs(self.run_id, [cache_input(uri, index.manifest_hash, rows, subjects, context)])

    def log_params(self, params: dict[str, Any], run_id: str | None = None) -> None:
        flat = flat_params("", params)
        have = self.client.get_run(run_id or self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id or self.run_id, params=new[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], run_id: str | None = None, step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id or self.run_id, metrics=batch[i:i + 500])

    def set_tags(self, tags: dict[str, str], run_id: str | None = None) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id or self.run_id, k, str(v))

    def log_json(self, data: Any, name: str, run_id: str | None = None) -> None:
        log_json(self.client, run_id or self.run_id, data, name)

    def log_file(self, path: str | Path, run_id: str | None = None) -> None:
        self.client.log_artifact(run_id or self.run_id, str(path))

    def children(self, parent: str | None = None) -> dict[str, Any]:
        """Nested runs of this parent (or of its nested run ``parent``; deleted ones excluded), by trial name."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{parent or self.run_id}'",
                                       max_results=10000)
        return {r.data.tags.get(TRIAL_TAG): r for r in runs}

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def fail(self, exc: BaseException, quiet: bool = False) -> None:
        """End the parent run after ``exc``: ``KILLED`` for an interruption (Ctrl-C, SIGTERM), else ``FAILED``
        with a line saying that ``--resume`` continues (what finished is kept; ``quiet``: no line, another run of the
        command says it); never left ``RUNNING`` while the store can be reached."""
        interrupted = isinstance(exc, KeyboardInterrupt)
        if not interrupted and not quiet:
            print(f"failed: {type(exc).__name__}: {exc}\nwhat finished is kept: run the same command with --resume "
                  "to continue", file=sys.stderr, flush=True)
        try:
            self.finish("KILLED" if interrupted else "FAILED")
        except Exception as error:  # the tracking store itself is unreachable
            print(f"could not mark MLflow run {self.run_id} as ended: {error}", file=sys.stderr, flush=True)

    def log_child(self, name: str, history: list[dict], params: dict | None = None, parent: str | None = None) -> str:
        """A FINISHED nested run ``name`` with per-epoch ``history`` (Tune results; step = epoch, the project's
        metrics only) spanning the trial's real start and end (:func:`trial_times`), under the parent run (or under
        its nested run ``parent``: a nested evaluation's search trials under their fold); kept if already logged.

        An unfinished run of the same name (an interrupted earlier attempt) is replaced.
        """
        old = self.children(parent).get(name)
        if old is not None and old.info.status == "FINISHED":
            return old.info.run_id
        if old is not None:
            self.client.delete_run(old.info.run_id)
        start, end = trial_times(history)
        run_id = self.client.create_run(self.experiment_id, run_name=name, start_time=start,
                                        tags={"mlflow.parentRunId": parent or self.run_id, TRIAL_TAG: name}).info.run_id
        if params:
            items = [Param(k, v) for k, v in flat_params("", params).items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i:i + 100])
        for row in history:
            self.log_metrics(scalar_metrics(row), run_id, step=int(row.get("epoch", 0)))
        self.client.set_terminated(run_id, status="FINISHED", end_time=end)
        return run_id


class TrialLogger(tune.Callback):
    """A Tune callback logging each trial as a nested run of ``tracker(trial)`` (:meth:`Tracker.log_child`) as
    soon as it finishes: named ``name(trial)``, with ``params(trial)``; ``then(trial)`` runs once it is logged (e.g.
    the trial's checkpoints removed). A trial that cannot be logged (the tracking store unreachable) is reported in
    one line and left to the command's final step."""

    def __init__(self, tracker: Callable[[Any], Tracker], name: Callable[[Any], str],
                 params: Callable[[Any], dict], then: Callable[[Any], None] | None = None):
        self.tracker, self.name, self.params, self.then = tracker, name, params, then

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        name = self.name(trial)
        try:
            self.tracker(trial).log_child(name, trial_history(trial.local_path), self.params(trial))
        except Exception as exc:
            print(f"could not log {name} to MLflow yet ({type(exc).__name__}: {str(exc)[:200]}); logged at the end",
                  file=sys.stderr, flush=True)
            return
        if self.then is not None:
            self.then(trial)
