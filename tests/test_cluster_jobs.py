"""cluster/README.md's local walkthrough as a test: a 2-node Ray cluster on loopback with token auth (the test
session's token, so it starts on a fresh machine), started by ``cluster/slurm/start-node.sh`` exactly as the Slurm
recipe starts its nodes; then, as Ray jobs (``ray job submit --working-dir . --runtime-env ...``) on shared
storage: one training run with two DDP workers, one per node; the search; the evaluation.

The nodes pick free ports and have their own temp dirs, so the cluster runs beside the test session's Ray
instance (and anyone else's); clean-up stops the process groups this test started, and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import store_uri

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START_NODE = REPO / "cluster" / "slurm" / "start-node.sh"

pytestmark = pytest.mark.skipif(shutil.which("ray", path=str(BIN)) is None, reason="no ray CLI next to python")


def ray_cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"ray {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def stop(nodes: list[subprocess.Popen]) -> None:
    """Stop the nodes this test started: each one's process group (its own session), then any descendant that
    left it. Other Ray instances on the machine are never touched."""
    procs = []
    for node in nodes:
        try:
            procs += [psutil.Process(node.pid), *psutil.Process(node.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for node in nodes:
        try:
            os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def two_nodes():
    """Head (1 CPU, dashboard on 127.0.0.1) plus a second node (1 CPU) joined over loopback, token auth on;
    yields ``(env, job API address)``; ``submit(env, job_api, ...)`` runs a job on it."""
    # One temp dir per node (short: Ray's socket paths have a length limit). Nodes sharing one would share its
    # runtime_resources folder, and one node's clean-up would delete the job's working dir under the other.
    state, *temp_dirs = [tempfile.mkdtemp(prefix=f"gbvray{i}-", dir="/tmp") for i in (0, 1, 2)]
    # Token auth with the test session's own token (tests/conftest.py: RAY_AUTH_TOKEN_PATH, 0600, never ~/.ray);
    # every process below (nodes, CLI clients) inherits it.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for name in ("RAY_ADDRESS", "GBVNET_NODE_IP", "SLURM_CPUS_PER_TASK", "SLURM_GPUS_ON_NODE", "SLURM_JOB_ID"):
        env.pop(name, None)
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 2**20)]
    nodes = []
    try:
        for role, temp_dir, extra in (("head", temp_dirs[0], []), ("worker", temp_dirs[1], ["--resources",
                                                                                            '{"node2": 1}'])):
            nodes.append(subprocess.Popen([str(START_NODE), role, state, *common, *extra], cwd=REPO,
                                          env={**env, "GBVNET_RAY_TEMP_DIR": temp_dir}, start_new_session=True))
        waited = subprocess.run([str(START_NODE), "wait", state, "2"], env=env, capture_output=True, text=True,
                                timeout=1500)  # start-node.sh starts a node again when it fails during start-up
        assert waited.returncode == 0, waited.stdout + waited.stderr
        head = dict(line.split("=", 1) for line in waited.stdout.split())
        env.update(RAY_AUTH_MODE="token", RAY_API_SERVER_ADDRESS=head["RAY_API_SERVER_ADDRESS"])
        yield env, head["RAY_API_SERVER_ADDRESS"]
    finally:
        stop(nodes)
        for d in (state, *temp_dirs):
            shutil.rmtree(d, ignore_errors=True)


def alive_nodes(env: dict, job_api: str) -> list[dict]:
    nodes = json.loads(ray_cli("list", "nodes", "--address", job_api, "--format", "json", env=env).stdout)
    return [n for n in nodes if n["state"] == "ALIVE"]


def start_job(env: dict, job_api: str, *entrypoint: str) -> subprocess.Popen:
    """``ray job submit`` as cluster/README.md runs it (repository uploaded, runtime_env.yaml), started."""
    return subprocess.Popen(
        [str(BIN / "ray"), "job", "submit", "--address", job_api,
         "--working-dir", str(REPO), "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
         *entrypoint], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def job_output(proc: subprocess.Popen) -> str:
    """Waits for a job started by :func:`start_job`; asserts success and returns what the job printed."""
    try:
        out, _ = proc.communicate(timeout=540)
    finally:
        if proc.poll() is None:
            proc.kill()  # the CLI this test started (the job itself ends with the cluster)
    assert proc.returncode == 0 and "succeeded" in out, out[-4000:]
    return out


def submit(env: dict, job_api: str, *entrypoint: str) -> str:
    """One job, submitted and waited for (:func:`job_output`)."""
    return job_output(start_job(env, job_api, *entrypoint))


def actors_by_node(env: dict, job_api: str) -> dict[str, int]:
    """Ray Train worker actors started so far on this cluster (alive or finished), counted per node id."""
    actors = json.loads(ray_cli("list", "actors", "--address", job_api, "--format", "json", "--limit", "1000",
                                "--filter", "class_name=RayTrainWorker", env=env).stdout)
    counts: dict[str, int] = {}
    for actor in actors:
        counts[actor["node_id"]] = counts.get(actor["node_id"], 0) + 1
    return counts


# node start-up, four jobs and the nodes' stop: about 4 minutes on idle cores, 10 beside the demo (2 cores)
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_node_cluster_runs_the_walkthrough(two_nodes, mahnob_cache, tmp_path):
    env, job_api = two_nodes
    nodes = alive_nodes(env, job_api)
    assert len(nodes) == 2
    for client, what in (({"RAY_AUTH_MODE": "disabled"}, "without a token"),
                         ({"RAY_AUTH_TOKEN": "not-the-token"}, "with another token")):
        refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", job_api], env={**env, **client},
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0, f"the job API answered a client {what}"

    shared = tmp_path / "shared"  # both nodes see this folder: the shared storage of the walkthrough
    storage, uri, best = shared / "ray", store_uri(shared), shared / "best.yaml"
    # One run, two DDP workers: one CPU each on 1-CPU nodes, so one worker per node (gloo over loopback).
    out = submit(env, job_api, "python", "-m", "gbvnet.train", "--cache", str(mahnob_cache), "--preset", "smoke",
                 "--modality", "bio",
                 "--train-subjects", "1", "2", "--val-subjects", "3", "--test-subjects", "4", "--workers", "2",
                 "--epochs", "1", "--storage", str(storage), "--name", "ddp-two-nodes")
    assert "final:" in out and "done=True" in out, out[-3000:]
    assert set(actors_by_node(env, job_api)) == {n["node_id"] for n in nodes}, "the DDP run did not span both nodes"

    # the search and the nested evaluation (every outer fold searched on its own training subjects, all in one Tune
    # run) are independent: submitted together, as users run commands side by side, sharing the nodes and the store
    search = start_job(env, job_api, "python", "tune/search.py", "--dataset", "mahnob", "--cache", str(mahnob_cache),
                       "--modality", "bio", "--space", "smoke", "--search-trials", "2", "--search-epochs", "1",
                       "--search-subjects", "1", "2", "--concurrent", "2", "--storage", str(storage),
                       "--tracking-uri", uri, "--output", str(best))
    nested = start_job(env, job_api, "python", "-m", "evaluation.loso", "--dataset", "mahnob", "--cache",
                       str(mahnob_cache), "--modality", "bio", "--preset", "smoke", "--search-trials", "2",
                       "--search-epochs", "1", "--epochs", "1", "--only-test-subjects", "3", "4", "--concurrent", "2", "--storage",
                       str(storage), "--tracking-uri", uri, "--output", str(shared / "nested.json"))
    job_output(search)
    assert yaml.safe_load(best.read_text())["search"]["trials"] == 2

    submit(env, job_api, "python", "-m", "evaluation.loso", "--dataset", "mahnob", "--cache", str(mahnob_cache),
           "--modality", "bio", "--config", str(best), "--epochs", "2", "--only-test-subjects", "3", "4",
           "--concurrent", "2", "--storage", str(storage), "--tracking-uri", uri,
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

    job_output(nested)
    nested = json.loads((shared / "nested.json").read_text())
    assert [f["fold"] for f in nested["folds"]] == ["subject-3", "subject-4"]
    assert nested["nested"]["failed_folds"] == {} and nested["nested"]["budget"]["trials"] == 4
