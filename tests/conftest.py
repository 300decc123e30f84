"""Shared fixtures: one local Ray instance per test session, small synthetic corpora and prepared caches.

Corpora are written and prepared through the real command-line entry points (the same code paths a user runs).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")  # as on a real head node
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _session_ray_token() -> None:
    """Give the test session its own Ray auth token, so it never reads or writes the user's ``~/.ray``.

    ``ray start --head`` under token auth refuses to start without a token (only ``ray.init()`` makes one, in
    ``~/.ray``), so on a fresh machine the suite must bring its own. Every Ray process the tests start (local
    instances, ``ray start`` nodes, ``ray job submit`` clients) inherits ``RAY_AUTH_TOKEN_PATH``. A token the
    caller set explicitly is kept.
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    folder = tempfile.mkdtemp(prefix="gbvnet-test-ray-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "auth_token"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes: 256 random bits, hex
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


_session_ray_token()


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

    from gbvnet.launch import init_ray

    init_ray(num_cpus=2, log_to_driver=False, configure_logging=False)
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


# Small corpora for the preparation, cache and dataset tests (written through the Python API: faster).
@pytest.fixture(scope="session")
def small_deap_corpus(tmp_path_factory) -> Path:
    """3 subjects x 3 trials in the official DEAP layout, without face videos (tests copy it to damage it)."""
    from gbvnet.data import synthetic

    root = tmp_path_factory.mktemp("deap_small")
    synthetic.write_deap(root, subjects=3, trials=3, seed=3, video=False)
    return root


@pytest.fixture(scope="session")
def small_mahnob_corpus(tmp_path_factory) -> Path:
    """2 subjects x 2 sessions in the official MAHNOB-HCI layout: 6 s stimuli, face videos."""
    from gbvnet.data import synthetic

    root = tmp_path_factory.mktemp("mahnob_small")
    synthetic.write_mahnob(root, subjects=2, trials=2, seed=5, duration=6.0)
    return root


@pytest.fixture(scope="session")
def small_mahnob_cache(small_mahnob_corpus, tmp_path_factory) -> Path:
    """``small_mahnob_corpus`` prepared with faces: 3 s windows, 2 frames of 32 x 32 (read-only)."""
    from gbvnet.prepare import dataset_config, prepare_dataset

    cache = tmp_path_factory.mktemp("mahnob_small_cache")
    prepare_dataset("mahnob", small_mahnob_corpus, str(cache), dataset_config("mahnob", frames=2, face_size=32),
                    progress=False)
    return cache
