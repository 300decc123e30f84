"""Shared fixtures: one local Ray instance per test session, small synthetic corpora and prepared caches.

Corpora are written and prepared through the real command-line entry points (the same code paths a user runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")  # as on a real head node; tokens live in ~/.ray
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def run_module(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` with this interpreter; output captured, failures shown in full."""
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mahnob_corpus(tmp_path_factory) -> Path:
    """4 subjects x 6 sessions in the official MAHNOB-HCI layout (12 s stimuli, face videos)."""
    root = tmp_path_factory.mktemp("mahnob")
    run_module("gbvnet.data.synthetic", "--format", "mahnob", "--out", str(root), "--subjects", "4",
               "--trials", "6", "--seed", "0", "--duration", "12")
    return root


@pytest.fixture(scope="session")
def mahnob_cache(mahnob_corpus, tmp_path_factory) -> Path:
    """The MAHNOB corpus prepared with faces: 3 s windows, 4 frames of 64 x 64."""
    cache = tmp_path_factory.mktemp("mahnob_cache")
    run_module("gbvnet.prepare", "--dataset", "mahnob", "--root", str(mahnob_corpus), "--cache", str(cache),
               "--frames", "4", "--face-size", "64")
    return cache
