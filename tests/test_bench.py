"""Every benchmark script still runs: each ``bench/*.py`` imports and has a smoke run here, run at its smallest
size (a refactor that breaks one fails here, not weeks later when someone reruns it), without touching
``bench/RESULTS.md`` (no ``--write``).

The scripts that start Ray (a search, Ray Train runs) take minutes even at their smallest size, more than the
suite's budget allows: they run with ``GBVNET_BENCH_SMOKE=1`` (``GBVNET_BENCH_SMOKE=1 pytest tests/test_bench.py``,
before publishing a figure or after changing what they import); the others always run."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.common import machine

BENCH = Path(__file__).resolve().parents[1] / "bench"
HELPERS = {"__init__", "common", "tune_floor"}  # imported by the scripts, not run
# Each script's smallest run. gpu_train's smallest CPU run is tests/test_steps.py's (it also checks its imports).
SMOKE = {
    "prepare": ["--quick"],
    "train_overhead": ["--epochs", "2", "--subjects", "3", "--threads", "1"],
    "search_efficiency": ["--seeds", "1", "--num-samples", "2", "--max-epochs", "1"],
    "object_store": ["--trials", "1", "--workers", "1"],
    "gap": ["--subjects", "3", "--trials", "4", "--k", "2", "--epochs", "1"],
    "benchmark": ["--subjects", "3", "--trials", "2", "--models", "gbvnet:bio", "eegnet", "--epochs", "1"],
    "nested": ["--sizes", "3x2", "--max-epochs", "1", "--epochs", "1"],
    "scoring_tail": ["--subjects", "3", "--trials", "3", "--folds-seconds", "5"],
    "ray_gpu": ["--smoke", "--parts", "folds"],
    "predict": ["--subjects", "2", "--trials", "2", "--repeats", "1"],
}
COVERED_ELSEWHERE = {"gpu_train": "tests/test_steps.py::test_gpu_bench_runs_on_cpu_and_imports_no_cluster_stack",
                     "gpu_wheels": "a build step, not a measurement: it downloads wheels from PyPI (no network here)"}
GPU_ONLY: set[str] = set()  # scripts that need CUDA: run here only where a GPU is present
RAY = {"train_overhead", "search_efficiency", "object_store", "gap", "benchmark", "nested", "scoring_tail",
       "ray_gpu"}  # minutes each: only with GBVNET_BENCH_SMOKE=1


def scripts() -> list[str]:
    return sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in HELPERS)


def test_every_bench_script_imports_and_has_a_smoke_run():
    for name in scripts():
        assert callable(importlib.import_module(f"bench.{name}").main), name
        assert name in SMOKE or name in COVERED_ELSEWHERE or name in GPU_ONLY, (
            f"bench/{name}.py has no smoke run: add its smallest arguments to SMOKE in tests/test_bench.py")


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.ray] if n in RAY else []) for n in sorted(SMOKE)])
def test_bench_script_runs_at_its_smallest_size(name):
    if name in RAY and not os.environ.get("GBVNET_BENCH_SMOKE"):
        pytest.skip("starts Ray (minutes): run with GBVNET_BENCH_SMOKE=1")
    if name in GPU_ONLY and not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    results = (BENCH / "RESULTS.md").read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", *SMOKE[name]], cwd=BENCH.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert machine() in proc.stdout  # it printed its figures, with the machine they ran on
    assert (BENCH / "RESULTS.md").read_bytes() == results
