"""Hyper-parameter search: smoke search end to end, resume, seeded proposals (``ray job submit``: test_cluster_jobs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from evaluation import loso
from tune import search
from tune.space import search_space

REPO = Path(__file__).resolve().parents[1]


def search_args(cache, tmp_path, *extra):
    return ["--dataset", "mahnob", "--cache", str(cache), "--modality", "bio", "--space", "smoke",
            "--num-samples", "4", "--max-epochs", "2", "--search-subjects", "1", "2",
            "--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--output", str(tmp_path / "best.yaml"), *extra]


def test_smoke_search_writes_a_config_that_loso_accepts(ray_session, mahnob_cache, tmp_path, capsys):
    doc = search.main(search_args(mahnob_cache, tmp_path))
    printed = capsys.readouterr().out
    assert printed.count(" started\n") == 4 and "[search " in printed  # progress of the 4 trials
    parent = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(doc["search"]["mlflow_run_id"])
    assert parent.inputs.dataset_inputs[0].dataset.digest == doc["search"]["cache_manifest_hash"]
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best == json.loads(json.dumps(doc))
    assert best["search"]["subjects"] == [1, 2] and best["search"]["trials"] == 4
    assert set(best["search"]["val_subjects"]) < {1, 2}  # validation subjects come from the search subjects
    assert best["model"]["bio"]["channels"] == 38  # fitted to the MAHNOB cache
    out = loso.main(["--dataset", "mahnob", "--cache", str(mahnob_cache), "--modality", "bio", "--config",
                     str(tmp_path / "best.yaml"), "--epochs", "1", "--test-subjects", "3", "4",
                     "--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert [f["test_subjects"] for f in out["folds"]] == [[3], [4]]


def test_same_seed_proposes_same_first_configurations():
    def proposals(seed):
        alg = search.make_search_alg(seed, concurrent=3)
        alg.set_search_properties(search.METRIC, "max", search_space("smoke"))
        return [alg.suggest(f"t{i}") for i in range(3)]

    assert proposals(5) == proposals(5)
    assert proposals(5) != proposals(6)


def test_interrupted_search_resumes_to_the_same_trial_count(mahnob_cache, tmp_path):
    cmd = [sys.executable, str(REPO / "tune" / "search.py"), *search_args(mahnob_cache, tmp_path,
                                                                          "--concurrent", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any('"done": true' in p.read_text() or '"training_iteration": 2' in p.read_text()
               for p in (tmp_path / "ray").glob("search-*/*/result.json")):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd + ["--resume"], check=True, capture_output=True)
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["search"]["trials"] == 4
