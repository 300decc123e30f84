"""MLflow tracking for evaluations and searches: one parent run per invocation, one nested run per fold/trial.

Everything is logged from the driver through ``MlflowClient`` (no global active run), so only the driver needs
to reach the tracking server. Default tracking URI: a local SQLite file ``runs/mlflow.db``; ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` point anywhere else. A SQLite store's new experiments keep their artifacts beside the
database (``mlartifacts`` in its folder, :func:`artifact_root`), wherever the command runs.

A tracking server that stops answering costs a command seconds, not minutes: each call waits a short, stated time
(:data:`HTTP_LIMITS`), and the first call that finds the server gone ends the conversation for the rest of the
run (an :class:`Outage`: nothing is sent to it again, the folds go on training, their results stay on disk). The
command still prints its table and writes ``--output``, then ends with one line
(:class:`TrackingUnavailable`): what MLflow lacks, the parent run marked ``FAILED`` if the server is back by then
(else left ``RUNNING``), and the ``--resume`` that logs the rest.

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
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs
import requests
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

from gbvnet.data.cache import CacheChanged
from gbvnet.data.storage import join, read_text

RESUME_NOTE = "what finished is kept: run the same command with --resume to continue"
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


HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""How long one call to a tracking server may take, unless the environment sets these variables: 10 s per attempt,
2 retries (after 0-1 s and 2-3 s). A call to a server that is gone then fails within about 3 s (connection
refused) or 35 s (no answer); MLflow's own defaults (120 s, 7 retries up to 2 minutes apart) block for minutes."""


def limit_http_requests() -> None:
    """Set :data:`HTTP_LIMITS` in the environment (where MLflow reads them at every call), keeping values set."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite store URI (``sqlite:///runs/mlflow.db``: relative to the current folder), or
    ``None`` for other stores and in-memory databases."""
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not uri.startswith("sqlite:///") or not path or path.startswith(":memory:"):
        return None
    return Path(path)


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of the store ``uri`` keeps its artifacts: for a SQLite store, ``mlartifacts`` in the
    database's folder (``runs/mlflow.db`` -> ``runs/mlartifacts``), whichever folder the command runs in; else
    ``None``, the store's own choice (a tracking server's ``--artifacts-destination``)."""
    path = sqlite_path(uri)
    return None if path is None else (path.resolve().parent / "mlartifacts").as_uri()


@contextlib.contextmanager
def store_lock(uri: str):
    """Hold an exclusive lock on ``<database>.lock`` beside a SQLite store (nothing for other stores).

    The first client of a new SQLite file creates its tables (MLflow's schema migration); two commands doing it at
    once fail (``table _alembic_tmp_experiments already exists``), as do two creating the same experiment.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    lock = Path(f"{path}.lock")
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
    so commands started together share one store safely. A store that cannot be reached is
    :class:`TrackingUnavailable`, within :data:`HTTP_LIMITS`."""
    limit_http_requests()
    with reaching(uri), store_lock(uri):
        client = MlflowClient(uri)  # creates (migrates) a new store's tables
        return client, experiment_id(client, experiment)


@contextlib.contextmanager
def reaching(uri: str):
    """Around a command's first calls to the store ``uri``: one that cannot reach it is one line,
    :class:`TrackingUnavailable`."""
    try:
        yield
    except Exception as exc:
        if not unreachable(exc):
            raise
        raise TrackingUnavailable(f"MLflow at {uri} cannot be reached ({reason(exc)}): start the tracking server, "
                                  "or give another --tracking-uri") from exc


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment ``name``, created if missing; tagged as a model-training experiment unless it has a kind."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if KIND_TAG not in found.tags:  # made without the tag (by MLflow's own API, say): tag it now
            client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND)
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(client.tracking_uri),
                                        tags={KIND_TAG: KIND})
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


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    return chain


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the tracking server could not be reached (connection refused or lost, no answer in
    time, server errors after the retries) rather than that it refused a request."""
    return any(isinstance(e, requests.exceptions.RequestException) for e in causes(exc))


def reason(exc: BaseException) -> str:
    """Why the server could not be reached, in a few words (``[Errno 111] Connection refused``, ``no answer within
    10 s``), from the innermost exception that says it."""
    for e in reversed(causes(exc)):
        if isinstance(e, requests.exceptions.Timeout):
            return f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '120')} s"
        if isinstance(e, OSError) and e.errno is not None:
            return f"[Errno {e.errno}] {e.strerror}"
        if (found := re.search(r"\[Errno \d+\] [^'\")]+", str(e))) is not None:
            return found.group(0)
    return type(causes(exc)[-1]).__name__


def add_note(exc: BaseException, note: str) -> None:
    """Add ``note`` to ``exc`` (shown after its message) unless it has it (several runs of a command may add it)."""
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


class TrackingUnavailable(ConnectionError):
    """The tracking store cannot be reached: at the start (nothing ran), or since some point of the run (what
    MLflow lacks and the ``--resume`` that logs it, :meth:`Outage.summary`)."""


class StoreLost(Exception):
    """Raised by a :class:`GuardedClient` call once its store is lost: the :class:`Tracker` method that made it
    is skipped."""


class Outage:
    """The tracking store ``uri`` stopped answering during this process's run (``error``): nothing is sent to it
    again (:class:`GuardedClient`), what is not logged is listed (``missed``: nested runs by name, and whether
    results of the parent runs), and the parent runs are marked once at the end if the store is back then."""

    def __init__(self, uri: str, error: BaseException):
        self.uri, self.reason, self.since = uri, reason(error), time.time()
        self.missed: dict[str, None] = {}  # the nested runs not logged, in order
        self.results = False  # parameters, metrics or artifacts of a parent run not logged
        self.back: bool | None = None  # whether the store answered at the end (None: not asked yet)
        print(f"MLflow at {uri} stopped answering ({self.reason}): nothing more is sent to it in this run; the "
              "folds go on, and the last line says how to log them", file=sys.stderr, flush=True)

    def note(self, method: str, args: tuple, kwargs: dict, logged: set[str]) -> dict | None:
        """Note what the skipped :class:`Tracker` call ``method(*args, **kwargs)`` did not log: a nested run of a
        parent run (by name; not one ``logged`` before), or results of a parent run; return what it returns when
        nothing is found."""
        if method == "children":
            return {}
        if method != "log_child":
            self.results = True
        elif kwargs.get("parent") is None and args[0] not in logged:
            self.missed[args[0]] = None
        return None

    def end(self, client: MlflowClient, run_id: str, status: str) -> None:
        """Mark the run ``run_id`` as ended (``status``) if the store answers now: asked once; once it has not
        answered, no run is marked."""
        if self.back is False:
            return
        try:
            client.set_terminated(run_id, status=status)
            self.back = True
        except Exception as exc:
            if not unreachable(exc):
                raise
            self.back = False

    def summary(self) -> str:
        """The command's last line: what MLflow lacks, the parent run's state and the ``--resume`` that logs the
        rest."""
        names = list(self.missed)
        runs = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        lacks = " and ".join(part for part in (runs, "the results of the run" if self.results else "") if part)
        state = "marked FAILED" if self.back else "left RUNNING (the server did not answer at the end either)"
        return (f"MLflow at {self.uri} stopped answering at {time.strftime('%H:%M:%S', time.localtime(self.since))} "
                f"({self.reason}): not logged: {lacks or 'nothing'}; the parent run is {state}; once the server "
                "answers, run the same command with --resume to log the rest (nothing is trained again)")


OUTAGES: dict[str, Outage] = {}  # by tracking URI: the stores lost during this process's current run


class GuardedClient:
    """An ``MlflowClient`` of ``uri`` whose calls raise :class:`StoreLost` at once while the store is lost
    (:data:`OUTAGES`), and lose it on the first call that finds it unreachable."""

    def __init__(self, uri: str, client: MlflowClient | None = None):
        self.uri, self.client = uri, client or MlflowClient(uri)

    def __getattr__(self, name: str):
        method = getattr(self.client, name)
        if not callable(method):
            return method

        @wraps(method)
        def call(*args, **kwargs):
            if self.uri in OUTAGES:
                raise StoreLost
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                OUTAGES[self.uri] = Outage(self.uri, exc)
                raise StoreLost from exc

        return call


def skipped_once_lost(method):
    """A :class:`Tracker` method that does nothing once its store is lost (:class:`Outage`): returns ``None`` (a
    query: nothing found), noting what was not logged (:meth:`Outage.note`); called by another of the tracker's
    methods, it leaves that to the caller."""
    @wraps(method)
    def call(self, *args, **kwargs):
        if self._depth:
            return method(self, *args, **kwargs)
        self._depth += 1
        try:
            return method(self, *args, **kwargs)
        except StoreLost:
            return OUTAGES[self.uri].note(method.__name__, args, kwargs, self.logged)
        finally:
            self._depth -= 1

    return call


class Tracker:
    """The parent run of one invocation (found again by its invocation key on resume). Its logging methods are
    skipped once the store is lost (:func:`skipped_once_lost`), and :meth:`finish` then says what was missed."""

    def __init__(self, uri: str, experiment: str, invocation: str, run_name: str, resume: bool):
        """Find (``resume``) or create the parent run; a new one gets :func:`source_tags`. A store lost in an
        earlier run of this process is asked again."""
        self.uri, self._depth, self.logged = uri, 0, set()  # logged: nested runs of the parent logged by this run
        OUTAGES.pop(uri, None)
        client, self.experiment_id = open_store(uri, experiment)
        self.client = GuardedClient(uri, client)
        self.invocation = invocation
        with reaching(uri):
            existing = client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{invocation}'",
                                          max_results=1) if resume else []
            if existing:
                self.run_id = existing[0].info.run_id
                client.update_run(self.run_id, status="RUNNING")
            else:
                self.run_id = client.create_run(self.experiment_id, run_name=run_name,
                                                tags={PARENT_TAG: invocation, **source_tags()}).info.run_id

    def __getstate__(self) -> dict:  # pickled with a Tune run's callbacks (:class:`TrialLogger`): no client
        return {k: v for k, v in self.__dict__.items() if k not in ("client", "_depth")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.client, self._depth = GuardedClient(self.uri), 0

    @property
    def outage(self) -> Outage | None:
        """The loss of this tracker's store during the run, if it was lost."""
        return OUTAGES.get(self.uri)

    @skipped_once_lost
    def log_cache(self, uri: str, index, context: str) -> None:
        """Record the window cache (:func:`cache_input`; ``index`` its :class:`~gbvnet.data.cache.CacheIndex`) as
        this run's dataset input; logging the same cache again (``--resume``) adds nothing."""
        rows, subjects = len(index.subject), len(set(index.subject.tolist()))
        self.client.log_inputs(self.run_id, [cache_input(uri, index.manifest_hash, rows, subjects, context)])

    @skipped_once_lost
    def log_params(self, params: dict[str, Any], run_id: str | None = None) -> None:
        flat = flat_params("", params)
        have = self.client.get_run(run_id or self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id or self.run_id, params=new[i:i + 100])

    @skipped_once_lost
    def log_metrics(self, metrics: dict[str, float], run_id: str | None = None, step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id or self.run_id, metrics=batch[i:i + 500])

    @skipped_once_lost
    def set_tags(self, tags: dict[str, str], run_id: str | None = None) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id or self.run_id, k, str(v))

    @skipped_once_lost
    def log_json(self, data: Any, name: str, run_id: str | None = None) -> None:
        log_json(self.client, run_id or self.run_id, data, name)

    @skipped_once_lost
    def log_file(self, path: str | Path, run_id: str | None = None) -> None:
        self.client.log_artifact(run_id or self.run_id, str(path))

    @skipped_once_lost
    def children(self, parent: str | None = None) -> dict[str, Any]:
        """Nested runs of this parent (or of its nested run ``parent``; deleted ones excluded), by trial name."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{parent or self.run_id}'",
                                       max_results=10000)
        return {r.data.tags.get(TRIAL_TAG): r for r in runs}

    def finish(self, status: str = "FINISHED") -> None:
        """End the parent run as ``status``; after an outage, mark it ``FAILED`` if the store answers again and raise
        :class:`TrackingUnavailable`, saying what MLflow lacks (:meth:`Outage.summary`)."""
        self._end(status if self.outage is None else "FAILED")
        if self.outage is not None:
            raise TrackingUnavailable(self.outage.summary())

    def fail(self, exc: BaseException, quiet: bool = False) -> None:
        """End the parent run after ``exc``: ``KILLED`` for an interruption (Ctrl-C, SIGTERM), else ``FAILED``;
        never left ``RUNNING`` while the store can be reached. Adds to ``exc`` the note that ``--resume`` continues
        (what finished is kept; ``quiet``: no note, another run of the command adds it), except where it would
        not: after a cache prepared again (a new run; its message says so), an interruption or an outage (their
        messages say it)."""
        interrupted = isinstance(exc, KeyboardInterrupt)
        if not (quiet or interrupted or isinstance(exc, (CacheChanged, TrackingUnavailable))):
            add_note(exc, RESUME_NOTE)
        self._end("KILLED" if interrupted else "FAILED")
        if self.outage is not None and not isinstance(exc, TrackingUnavailable):
            add_note(exc, self.outage.summary())

    def _end(self, status: str) -> None:
        """Mark the parent run ended as ``status``; after an outage only if the store answers again (asked once)."""
        if self.outage is None:
            try:
                self.client.set_terminated(self.run_id, status=status)
                return
            except StoreLost:
                self.outage.back = False  # it has just not answered
        self.outage.end(self.client.client, self.run_id, status)

    @skipped_once_lost
    def log_child(self, name: str, history: list[dict], params: dict | None = None, parent: str | None = None,
                  status: str = "FINISHED") -> str:
        """A nested run ``name`` ended as ``status`` (``KILLED``, ``FAILED``: a trial stopped before its end), with
        per-epoch ``history`` (Tune results; step = epoch, the project's metrics only) spanning the trial's real
        start and end (:func:`trial_times`), under the parent run (or under its nested run ``parent``: a nested
        evaluation's search trials under their fold); kept if already logged ``FINISHED``.

        An unfinished run of the same name (an interrupted, stopped or failed earlier attempt) is replaced.
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
        self.client.set_terminated(run_id, status=status, end_time=end)
        if parent is None:
            self.logged.add(name)
        return run_id


class TrialLogger(tune.Callback):
    """A Tune callback logging each trial as a nested run of ``tracker(trial)`` (:meth:`Tracker.log_child`) as
    soon as it ends: named ``name(trial)``, with ``params(trial)``, ``FINISHED`` when ``finished(trial)`` (default:
    every trial that completes), else ``KILLED`` (stopped before its end, as by a cache prepared again), and
    ``FAILED`` when it failed for good. ``then(trial)`` runs once a finished trial is logged (e.g. its checkpoints
    removed). Nothing is logged once the store is lost (:class:`Outage`: the command's last line says how to log
    it); a trial whose results cannot be read is reported in one line and left to the command's final step."""

    def __init__(self, tracker: Callable[[Any], Tracker], name: Callable[[Any], str],
                 params: Callable[[Any], dict], then: Callable[[Any], None] | None = None,
                 finished: Callable[[Any], bool] | None = None):
        self.tracker, self.name, self.params, self.then, self.finished = tracker, name, params, then, finished

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        finished = self.finished is None or self.finished(trial)
        if self._log(trial, "FINISHED" if finished else "KILLED") and finished and self.then is not None:
            self.then(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._log(trial, "FAILED")

    def _log(self, trial, status: str) -> bool:
        """Log ``trial`` as ``status``; whether it was."""
        name = self.name(trial)
        try:
            try:
                history = trial_history(trial.local_path)
            except FileNotFoundError:
                if status == "FINISHED":
                    raise
                history = []  # stopped or failed before its first result
            return self.tracker(trial).log_child(name, history, self.params(trial), status=status) is not None
        except Exception as exc:
            print(f"could not log {name} to MLflow yet ({type(exc).__name__}: {str(exc)[:200]}); logged at the end",
                  file=sys.stderr, flush=True)
            return False
