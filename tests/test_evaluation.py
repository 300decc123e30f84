"""Evaluation protocols end to end: real Ray Tune + Ray Train + MLflow (SQLite) on a synthetic corpus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_module
from mlflow.tracking import MlflowClient

from evaluation import loso, subject_dependent
from gbvnet.data.cache import open_cache


def common(mahnob_cache, tmp_path, *extra):
    return ["--dataset", "mahnob", "--cache", str(mahnob_cache), "--preset", "smoke",
            "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--storage", str(tmp_path / "ray"),
            "--output", str(tmp_path / "out.json"), *extra]


def nested_runs(tmp_path, experiment, parent):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]


def test_loso_folds_mlflow_structure_and_output(ray_session, mahnob_cache, tmp_path, capsys):
    doc = loso.main(common(mahnob_cache, tmp_path, "--modality", "bio", "--epochs", "2", "--test-subjects", "2", "4"))
    printed = capsys.readouterr().out
    for fold in ("subject-2", "subject-4"):  # progress while the folds ran
        assert f"fold {fold} started" in printed
        assert f"fold {fold} done after epoch 2/2: best val_macro_f1" in printed
    assert "[loso " in printed and "folds: 2 done, 0 running, 0 waiting" in printed
    assert [f["test_subjects"] for f in doc["folds"]] == [[2], [4]]  # each trained on the 3 other subjects
    assert not doc["leaky"]
    client, children = nested_runs(tmp_path, "gbvnet-mahnob-loso", doc["mlflow_run_id"])
    assert sorted(r.info.run_name for r in children) == ["subject-2", "subject-4"]
    assert all(len(client.get_metric_history(r.info.run_id, "val_macro_f1")) == 2 for r in children)
    parent = client.get_run(doc["mlflow_run_id"])
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.run_name.startswith("loso-bio-gated-valence-smoke-")
    [dataset] = [d.dataset for d in parent.inputs.dataset_inputs]
    assert dataset.digest == open_cache(str(mahnob_cache)).index().manifest_hash
    assert json.loads(dataset.source) == {"uri": str(mahnob_cache)}
    for name in ("test_accuracy_mean", "test_accuracy_std", "test_f1_mean", "test_precision_mean",
                 "test_recall_mean"):
        assert name in parent.data.metrics
    assert parent.data.params["protocol"] == "loso" and parent.data.params["seed"] == "0"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"per_subject.json", "per_subject_accuracy.png", "confusion_matrix.png",
            "learning_curves.png"} <= artifacts
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["mlflow_run_id"] == doc["mlflow_run_id"]
    assert len(written["per_subject"]) == 2
    assert written["aggregate"]["test_accuracy_mean"] == pytest.approx(np.mean([f["accuracy"] for f in doc["folds"]]))


def test_subject_dependent_folds_split_trials(ray_session, mahnob_cache, tmp_path, capsys):
    doc = subject_dependent.main(common(mahnob_cache, tmp_path, "--modality", "bio", "--epochs", "1", "--k", "2",
                                        "--test-subjects", "1", "2", "--quiet"))
    printed = capsys.readouterr().out
    assert "started" not in printed and "done after epoch" not in printed  # --quiet: only the final table
    assert len(doc["folds"]) == 4  # 2 subjects x 2 folds
    assert {tuple(f["test_subjects"]) for f in doc["folds"]} == {(1,), (2,)}
    _, children = nested_runs(tmp_path, "gbvnet-mahnob-subject-dependent", doc["mlflow_run_id"])
    assert len(children) == 4


def test_interrupted_evaluation_resumes_only_missing_folds(mahnob_cache, tmp_path):
    args = common(mahnob_cache, tmp_path, "--modality", "bio", "--epochs", "2", "--folds-in-parallel", "1",
                  "--test-subjects", "1", "2", "3")
    cmd = [sys.executable, "-m", "evaluation.loso", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    results = tmp_path / "ray"
    deadline = time.time() + 300
    finished = []
    while time.time() < deadline and proc.poll() is None:
        finished = [p for p in results.glob("eval-loso-*/*/result.json") if '"done": true' in p.read_text()]
        if finished:
            break
        time.sleep(0.5)
    assert finished and proc.poll() is None, "no fold finished before the evaluation ended"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    proc.wait()
    done_before = {p.parent.name: p.read_text() for p in finished}

    subprocess.run(cmd + ["--resume"], check=True, capture_output=True, env=env)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert len(doc["folds"]) == 3
    for trial_dir, text in done_before.items():  # finished folds were not trained again
        assert (results.glob(f"eval-loso-*/{trial_dir}/result.json").__next__()).read_text() == text
    _, children = nested_runs(tmp_path, "gbvnet-mahnob-loso", doc["mlflow_run_id"])
    assert sorted(r.info.run_name for r in children) == [f"subject-{s}" for s in (1, 2, 3)]  # no duplicates


@pytest.fixture(scope="module")
def clean_mahnob_cache(tmp_path_factory):
    """A clear signal: no label noise, 16 trials per subject (so a within-subject fold trains on 6 of them)."""
    root, cache = tmp_path_factory.mktemp("mahnob_clean"), tmp_path_factory.mktemp("mahnob_clean_cache")
    run_module("gbvnet.data.synthetic", "--format", "mahnob", "--out", str(root), "--subjects", "2",
               "--trials", "16", "--seed", "0", "--duration", "9", "--label-noise", "0")
    run_module("gbvnet.prepare", "--dataset", "mahnob", "--root", str(root), "--cache", str(cache),
               "--frames", "4", "--face-size", "64")
    return cache


def test_facebio_beats_chance_by_a_wide_margin(ray_session, clean_mahnob_cache, tmp_path):
    doc = subject_dependent.main(common(clean_mahnob_cache, tmp_path, "--modality", "facebio", "--k", "2",
                                        "--epochs", "20", "--patience", "20", "--lr", "1e-3",
                                        "--batch-size", "8"))
    assert len(doc["folds"]) == 4
    assert doc["aggregate"]["test_balanced_accuracy_mean"] >= 0.75
    assert doc["comparisons"]["majority"]["mean_difference"] >= 0.25


def test_config_searched_on_test_subjects_is_refused(mahnob_cache, tmp_path):
    best = tmp_path / "best.yaml"
    best.write_text("search:\n  subjects: [1, 2]\n")
    with pytest.raises(ValueError, match=r"searched on subjects \[1, 2\]"):
        loso.main(common(mahnob_cache, tmp_path, "--modality", "bio", "--config", str(best)))
