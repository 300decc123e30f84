"""GPU shares and the GPU default without a GPU: four one-worker trials at 0.25 GPU run at once on one (declared)
GPU, and ``--gpus-per-worker``'s default follows the GPUs a cluster has or can autoscale to."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import ray
from ray.core.generated import autoscaler_pb2

from gbvnet.config import TrainConfig
from gbvnet.train import launch

# Runs in its own process: a local Ray declaring 1 GPU and 4 CPUs (the session's Ray has 2 CPUs and no GPU). Each
# trial takes the resources an evaluation's fold takes at --gpus-per-worker 0.25 (launch.tune_trial_resources)
# and runs through launch.run_tuner, as the folds do; instead of training (no CUDA here) it waits at a barrier
# until all four trials are running, or 30 s.
PACKING = textwrap.dedent("""
    import json, os, sys, time
    import ray
    from ray import tune
    from gbvnet.config import TrainConfig
    from gbvnet.train.launch import run_tuner, tune_trial_resources

    barrier = sys.argv[1]

    def trial(config):
        start = time.time()
        open(os.path.join(barrier, str(config["fold"])), "w").close()
        while len(os.listdir(barrier)) < 4 and time.time() - start < 30:
            time.sleep(0.05)
        tune.report({"start": start, "end": time.time(), "together": len(os.listdir(barrier)),
                     "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))})

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    resources = tune_trial_resources(TrainConfig(gpus_per_worker=0.25))
    grid = run_tuner(tune.with_resources(trial, resources), "packing", os.path.join(barrier, os.pardir, "ray"),
                     resume=False, param_space={"fold": tune.grid_search([0, 1, 2, 3])},
                     tune_config=tune.TuneConfig(max_concurrent_trials=4), callbacks=[], max_failures=0)
    print(json.dumps({"resources": resources, "trials": [r.metrics for r in grid]}, default=str))
""")


@pytest.mark.slow
def test_four_trials_at_a_quarter_gpu_run_at_once(tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    done = subprocess.run([sys.executable, "-c", PACKING, str(barrier)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["resources"] == {"cpu": 1.0, "gpu": 0.25}
    trials = out["trials"]
    assert len(trials) == 4
    assert [t["together"] for t in trials] == [4] * 4, "the four 0.25-GPU trials did not all run at once"
    assert max(t["start"] for t in trials) < min(t["end"] for t in trials)  # their intervals overlap
    assert {t["gpu_ids"] for t in trials} == {"0"}  # each on the one GPU (each would train on cuda)


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    """A connected cluster whose resources, autoscaler config (Ray's cluster config) and launcher config (a file)
    the test sets: ``set(gpus=..., groups=[(name, gpus, max_count)], launcher={...})``."""
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(launch, "LAUNCHER_CONFIG", str(tmp_path / "ray_bootstrap_config.yaml"))

    def set(gpus=0, groups=None, launcher=None):
        node = SimpleNamespace(resources_total={"CPU": 4.0, **({"GPU": gpus} if gpus else {})}, state=launch.ALIVE)
        gone = SimpleNamespace(resources_total={"CPU": 4.0, "GPU": 8.0}, state=launch.ALIVE + 1)  # a dead node
        config = None
        if groups is not None:
            config = autoscaler_pb2.ClusterConfig(node_group_configs=[
                autoscaler_pb2.NodeGroupConfig(name=name, resources={"CPU": 4, **({"GPU": g} if g else {})},
                                               max_count=count) for name, g, count in groups])
        gcs = SimpleNamespace(get_all_node_info=lambda timeout: {b"up": node, b"gone": gone},
                              internal_kv_get=lambda key, namespace, timeout: config and config.SerializeToString())
        monkeypatch.setattr(launch, "_gcs", lambda: gcs)
        if launcher is not None:
            (tmp_path / "ray_bootstrap_config.yaml").write_text(json.dumps(launcher))
    return set


@pytest.mark.parametrize("state, expected", [
    ({}, 0.0),  # a CPU cluster without an autoscaler
    ({"gpus": 1}, 1.0),  # a GPU node is up
    ({"groups": [("head", 0, 0), ("gpu-workers", 1, 4)]}, 1.0),  # GPU workers autoscaling from zero (v2, KubeRay)
    ({"groups": [("head", 0, 0), ("gpu-workers", 1, 0)]}, 0.0),  # a GPU type that may not scale up
    ({"groups": [("head", 0, 0), ("cpu-workers", 0, 8)]}, 0.0),  # CPU workers only
    ({"launcher": {"available_node_types": {"ray.head.default": {"resources": {"CPU": 0}},
                                            "ray.worker.gpu": {"resources": {"CPU": 4, "GPU": 1},
                                                               "min_workers": 0, "max_workers": 4}}}}, 1.0),
    ({"launcher": {"available_node_types": {"ray.head.default": {"resources": {"CPU": 4}}}}}, 0.0),
])
def test_default_gpus_per_worker_counts_gpu_nodes_that_can_autoscale(cluster, state, expected):
    cluster(**state)
    assert launch.gpus_per_worker(TrainConfig()) == expected
    assert launch.tune_trial_resources(TrainConfig())["gpu"] == expected
    assert launch.gpus_per_worker(TrainConfig(gpus_per_worker=0)) == 0.0  # the flag always wins
