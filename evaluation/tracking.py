"""MLflow tracking for evaluations and searches: one parent run per invocation, one nested run per fold/trial.

Everything is logged from the driver through ``MlflowClient`` (no global active run), so only the driver needs
to reach the tracking server. Default tracking URI: a local SQLite file ``runs/mlflow.db`` (artifacts under
``runs/mlartifacts``); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` point anywhere else.

Each Tune trial (a fold, or a search trial) becomes a nested run named after it, with its per-epoch metrics
(``step`` = epoch), logged from Tune's results once the trial has finished. On ``--resume`` the parent run is
found again by its invocation key and folds already logged are kept, so no duplicates appear.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

PARENT_TAG = "gbvnet.invocation"
TRIAL_TAG = "gbvnet.trial"


def tracking_uri(cli_value: str | None = None) -> str:
    """``cli_value``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/runs/mlflow.db``."""
    if cli_value:
        return cli_value
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    Path("runs").mkdir(exist_ok=True)
    return f"sqlite:///{Path('runs/mlflow.db').resolve()}"


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:"):
        location = Path("runs/mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def flat_params(prefix: str, value: Any) -> dict[str, str]:
    """Nested dicts as dotted MLflow params (values truncated to MLflow's 6000 characters)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flat_params(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:6000]}


def scalar_metrics(result: dict) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k.split("/")[0] != "config"}


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
        self.client = MlflowClient(uri)
        self.experiment_id = experiment_id(self.client, experiment)
        self.invocation = invocation
        existing = self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{invocation}'",
                                           max_results=1) if resume else []
        if existing:
            self.run_id = existing[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name,
                                                 tags={PARENT_TAG: invocation}).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        flat = flat_params("", params)
        have = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])

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

    def children(self) -> dict[str, Any]:
        """Nested runs of this parent (deleted ones excluded), by trial name."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.run_id}'",
                                       max_results=10000)
        return {r.data.tags.get(TRIAL_TAG): r for r in runs}

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def log_child(self, name: str, history: list[dict], params: dict | None = None) -> str:
        """A FINISHED nested run ``name`` with per-epoch ``history`` (step = epoch); kept if already logged.

        An unfinished run of the same name (an interrupted earlier attempt) is replaced.
        """
        old = self.children().get(name)
        if old is not None and old.info.status == "FINISHED":
            return old.info.run_id
        if old is not None:
            self.client.delete_run(old.info.run_id)
        run_id = self.client.create_run(self.experiment_id, run_name=name,
                                        tags={"mlflow.parentRunId": self.run_id, TRIAL_TAG: name}).info.run_id
        if params:
            items = [Param(k, v) for k, v in flat_params("", params).items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i:i + 100])
        for row in history:
            self.log_metrics(scalar_metrics(row), run_id, step=int(row.get("epoch", 0)))
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id
