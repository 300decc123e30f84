"""cluster/README.md's local walkthrough as a test: a 2-node Ray cluster on loopback with token auth (the test
session's token, so it starts on a fresh machine), then as Ray jobs (``ray job submit --working-dir . --runtime-env
...``) on shared storage: one training run with two DDP workers, one per node; the search; the evaluation.

The cluster has its own temp dirs and ports, so it can run beside the test session's Ray instance (and
anyone else's), and only its own processes are stopped afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GCS_PORT, DASHBOARD_PORT = 6399, 8299
GCS = f"127.0.0.1:{GCS_PORT}"

pytestmark = pytest.mark.skipif(shutil.which("ray", path=str(BIN)) is None, reason="no ray CLI next to python")


def ray_cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"ray {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def stop_own_processes(temp_dirs: list[str]) -> None:
    """Kill this cluster's processes (found by temp dir or GCS port, with their children), nothing else."""
    own = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.pid != os.getpid() and (any(d in cmd for d in temp_dirs) or f":{GCS_PORT}" in cmd):
            own.append(p)
    victims = {c.pid: c for p in own for c in [p, *p.children(recursive=True)] if c.pid != os.getpid()}
    for p in victims.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(victims.values()), timeout=20)


@pytest.fixture(scope="module")
def two_nodes():
    """Head (1 CPU, dashboard on 127.0.0.1) plus a second node (1 CPU) joined over loopback, token auth on."""
    # One temp dir per node (short: Ray's socket paths have a length limit). Nodes sharing one would share its
    # runtime_resources folder, and one node's clean-up would delete the job's working dir under the other.
    temp_dirs = [tempfile.mkdtemp(prefix=f"gbvray{i}-", dir="/tmp") for i in (1, 2)]
    # Token auth with the test session's own token (tests/conftest.py: RAY_AUTH_TOKEN_PATH, 0600, never ~/.ray);
    # every process below (nodes, CLI clients) inherits it.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # Ray's processes learn where the state API is, instead of guessing among the machine's Ray instances.
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{DASHBOARD_PORT}"
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 2**20), "--disable-usage-stats"]
    try:
        ray_cli("start", "--head", "--port", str(GCS_PORT), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                str(DASHBOARD_PORT), "--dashboard-agent-listen-port", "52399", "--ray-client-server-port", "9099",
                "--temp-dir", temp_dirs[0], *common, env=env)
        ray_cli("start", "--address", GCS, "--dashboard-agent-listen-port", "52398", "--resources", '{"node2": 1}',
                "--temp-dir", temp_dirs[1], *common, env=env)
        deadline = time.time() + 60
        while len(alive_nodes(env)) < 2 and time.time() < deadline:
            time.sleep(1)
        yield env
    finally:
        stop_own_processes(temp_dirs)
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def alive_nodes(env: dict) -> list[dict]:
    nodes = json.loads(ray_cli("list", "nodes", "--address", GCS, "--format", "json", env=env).stdout)
    return [n for n in nodes if n["state"] == "ALIVE"]


def submit(env: dict, *entrypoint: str) -> str:
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{DASHBOARD_PORT}",
         "--working-dir", str(REPO), "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
         *entrypoint], env=env, capture_output=True, text=True, timeout=540, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in out, out[-4000:]
    return out


def actors_by_node(env: dict) -> dict[str, int]:
    """Ray Train worker actors started so far on this cluster (alive or finished), counted per node id."""
    actors = json.loads(ray_cli("list", "actors", "--address", GCS, "--format", "json", "--limit", "1000",
                                "--filter", "class_name=RayTrainWorker", env=env).stdout)
    counts: dict[str, int] = {}
    for actor in actors:
        counts[actor["node_id"]] = counts.get(actor["node_id"], 0) + 1
    return counts


def test_two_node_cluster_runs_the_walkthrough(two_nodes, mahnob_cache, tmp_path):
    env = two_nodes
    nodes = alive_nodes(env)
    assert len(nodes) == 2
    job_api = f"http://127.0.0.1:{DASHBOARD_PORT}"
    for client, what in (({"RAY_AUTH_MODE": "disabled"}, "without a token"),
                         ({"RAY_AUTH_TOKEN": "not-the-token"}, "with another token")):
        refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", job_api], env={**env, **client},
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0, f"the job API answered a client {what}"

    shared = tmp_path / "shared"  # both nodes see this folder: the shared storage of the walkthrough
    storage, uri, best = shared / "ray", f"sqlite:///{shared}/mlflow.db", shared / "best.yaml"
    shared.mkdir()
    # One run, two DDP workers: one CPU each on 1-CPU nodes, so one worker per node (gloo over loopback).
    out = submit(env, "python", "-m", "gbvnet.train", "--cache", str(mahnob_cache), "--modality", "bio",
                 "--train-subjects", "1", "2", "--val-subjects", "3", "--test-subjects", "4", "--workers", "2",
                 "--epochs", "1", "--storage", str(storage), "--name", "ddp-two-nodes")
    assert "final:" in out and "done=True" in out, out[-3000:]
    assert set(actors_by_node(env)) == {n["node_id"] for n in nodes}, "the DDP run did not span both nodes"

    submit(env, "python", "tune/search.py", "--dataset", "mahnob", "--cache", str(mahnob_cache), "--modality",
           "bio", "--space", "smoke", "--num-samples", "2", "--max-epochs", "1", "--search-subjects", "1", "2",
           "--concurrent", "2", "--storage", str(storage), "--tracking-uri", uri, "--output", str(best))
    assert yaml.safe_load(best.read_text())["search"]["trials"] == 2

    submit(env, "python", "-m", "evaluation.loso", "--dataset", "mahnob", "--cache", str(mahnob_cache),
           "--modality", "bio", "--config", str(best), "--epochs", "2", "--test-subjects", "3", "4",
           "--folds-in-parallel", "2", "--storage", str(storage), "--tracking-uri", uri,
           "--output", str(shared / "loso.json"))
    doc = json.loads((shared / "loso.json").read_text())
    assert [f["fold"] for f in doc["folds"]] == ["subject-3", "subject-4"]

    client = MlflowClient(uri)
    parent = client.get_run(doc["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and "test_accuracy_mean" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["subject-3", "subject-4"]
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in children)
