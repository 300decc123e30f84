"""Evaluation protocols end to end: real Ray Tune + Ray Train + MLflow (SQLite) on a synthetic corpus."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gbvnet.data.cache import open_cache
from gbvnet.evaluation import loso, subject_dependent
from tests.conftest import store_uri


def common(mahnob_cache, tmp_path, *extra):
    return ["--dataset", "mahnob", "--cache", str(mahnob_cache), "--preset", "smoke",
            "--tracking-uri", store_uri(tmp_path), "--storage", str(tmp_path / "ray"),
            "--output", str(tmp_path / "out.json"), *extra]


def nested_runs(uri, experiment, parent):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]


def test_loso_folds_mlflow_structure_and_output(evaluations):
    """The shared LOSO run (tests/conftest.py): progress, folds, audit, MLflow parent and nested runs, --output."""
    doc, printed, subjects = evaluations.docs["valence"], evaluations.printed["valence"], evaluations.subjects
    names = [f"subject-{s}" for s in range(1, subjects + 1)]
    for fold in names:  # progress while the folds ran
        assert f"fold {fold} started" in printed
        assert f"fold {fold} done after epoch 5/5: best val_macro_f1" in printed
    assert "[loso " in printed and f"folds: {subjects} done, 0 running, 0 waiting" in printed
    assert "Configuration for experiment" not in printed and "TensorBoard" not in printed  # no Tune banner
    assert [f["test_subjects"] for f in doc["folds"]] == [[s] for s in range(1, subjects + 1)]
    assert not doc["leaky"]
    checks = doc["audit"]["fold_checks"]  # the guard's verdict on each fold, given once when it was built
    assert sorted(checks) == names
    assert {c["verdict"] for c in checks.values()} == {"passed: no subject in two of train, val and test"}
    client, children = nested_runs(evaluations.uri, "gbvnet-deap-loso", doc["mlflow_run_id"])
    assert json.loads(open(client.download_artifacts(doc["mlflow_run_id"], "audit.json")).read()) == doc["audit"]
    assert sorted(r.info.run_name for r in children) == names
    assert all(len(client.get_metric_history(r.info.run_id, "val_macro_f1")) == 5 for r in children)
    parent = client.get_run(doc["mlflow_run_id"])
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.run_name.startswith("loso-gbvnet-bio-gated-valence-smoke-")
    [dataset] = [d.dataset for d in parent.inputs.dataset_inputs]
    assert dataset.digest == open_cache(str(evaluations.cache)).index().manifest_hash
    assert json.loads(dataset.source) == {"uri": str(evaluations.cache)}
    for name in ("test_accuracy_mean", "test_accuracy_std", "test_f1_mean", "test_precision_mean",
                 "test_recall_mean"):
        assert name in parent.data.metrics
    assert parent.data.params["protocol"] == "loso" and parent.data.params["seed"] == "0"
    assert parent.data.tags["configuration"] == "preset smoke (untuned)"  # how the report groups it
    one_class = sum(f["one_class"] is not None for f in doc["folds"])  # folds predicting one class throughout
    assert parent.data.tags["one_class_folds"] == f"{one_class} of {subjects}"
    assert parent.data.metrics["n_one_class_folds"] == one_class == doc["aggregate"]["n_one_class_folds"]
    assert f"one-class folds: {one_class} of {subjects}" in printed
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"per_subject.json", "per_subject_accuracy.png", "confusion_matrix.png",
            "learning_curves.png"} <= artifacts
    # the folds ran in 2 Tune trial processes (2 in parallel), each running one fold after another
    [experiment] = [d for d in (evaluations.out / "ray").glob("eval-loso-*") if len(list(d.glob("*/result.json"))) == 6]
    pids = {json.loads(line)["pid"] for f in experiment.glob("*/result.json") for line in f.read_text().splitlines()}
    assert len(pids) == 2
    for run in children:  # each fold's real span and the project's metrics only (not Tune's bookkeeping)
        epochs = client.get_metric_history(run.info.run_id, "epoch_time_s")
        assert (run.info.end_time - run.info.start_time) / 1000 >= sum(m.value for m in epochs) - 1
        assert {"train_loss", "val_macro_f1", "test_accuracy", "best_epoch"} <= set(run.data.metrics)
        assert not {"pid", "timestamp", "iterations_since_restore", "training_iteration", "time_total_s",
                    "time_this_iter_s"} & set(run.data.metrics)
    assert not list((evaluations.out / "ray").glob("**/checkpoint_*"))  # removed once each fold was logged
    written = json.loads((evaluations.out / "valence.json").read_text())
    assert written["mlflow_run_id"] == doc["mlflow_run_id"]
    assert len(written["per_subject"]) == subjects
    assert written["aggregate"]["test_accuracy_mean"] == pytest.approx(np.mean([f["accuracy"] for f in doc["folds"]]))


def test_each_fold_is_checked_once_before_ray_starts(mahnob_cache, monkeypatch):
    """The leakage guard runs once per fold, where gbvnet.folds.protocols builds it; make_job and the audit use its verdict."""
    from gbvnet.evaluation import engine
    from gbvnet.folds import protocols as splits

    checked = []
    check_fold = splits.check_fold
    monkeypatch.setattr(splits, "check_fold",
                        lambda fold, *args, **kw: checked.append(fold.name) or check_fold(fold, *args, **kw))

    class Planned(Exception):
        pass

    def stop(**_):
        raise Planned

    monkeypatch.setattr(engine, "init_ray", stop)
    with pytest.raises(Planned):
        subject_dependent.main(["--dataset", "mahnob", "--cache", str(mahnob_cache), "--modality", "bio", "--k", "2"])
    assert len(checked) == len(set(checked)) == 8  # 4 subjects x 2 folds, each once


@pytest.mark.slow
def test_interrupted_evaluation_resumes_only_missing_folds(ray_session, mahnob_cache, tmp_path):
    """Ctrl-C after the first fold (a command with its own local Ray): one line (what finished, --resume
    continues), exit 130 within 30 s, no traceback, no Ray process left, the parent run KILLED; --resume (here on
    the session's Ray instance: no second Ray start) trains only the missing folds."""
    from tests.test_interrupts import assert_gone, descendants

    args = common(mahnob_cache, tmp_path, "--modality", "bio", "--epochs", "2", "--folds-in-parallel", "1",
                  "--test-subjects", "1", "2", "3")
    cmd = [sys.executable, "-m", "evaluation.loso", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "interrupted.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's
    results = tmp_path / "ray"
    deadline = time.time() + 300
    finished = []
    try:
        while time.time() < deadline and proc.poll() is None:
            finished = [p for p in results.glob("eval-loso-*/*/result.json") if '"done": true' in p.read_text()]
            if finished:
                break
            time.sleep(0.5)
        assert finished and proc.poll() is None, "no fold finished before the evaluation ended"
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: to the driver only, as a terminal's would reach it first
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
    printed = log.read_text()
    assert proc.returncode == 130, printed[-3000:]
    assert re.search(r"^interrupted by SIGINT: [12] of 3 folds finished; --resume continues$", printed, re.M), \
        printed[-3000:]
    assert "Traceback" not in printed and "Tuner.restore" not in printed and "Stop signal" not in printed
    assert_gone(started)
    client = MlflowClient(store_uri(tmp_path))
    [parent] = [r for r in client.search_runs([client.get_experiment_by_name("gbvnet-mahnob-loso").experiment_id])
                if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    done_before = {p.parent.name: p.read_text() for p in finished}

    loso.main([*args, "--resume"])
    doc = json.loads((tmp_path / "out.json").read_text())
    assert len(doc["folds"]) == 3
    for trial_dir, text in done_before.items():  # finished folds were not trained again
        assert (results.glob(f"eval-loso-*/{trial_dir}/result.json").__next__()).read_text() == text
    _, children = nested_runs(store_uri(tmp_path), "gbvnet-mahnob-loso", doc["mlflow_run_id"])
    assert sorted(r.info.run_name for r in children) == [f"subject-{s}" for s in (1, 2, 3)]  # no duplicates
    assert client.get_run(doc["mlflow_run_id"]).info.status == "FINISHED"
    assert not list(results.glob("**/checkpoint_*"))  # removed once each fold was logged


def test_results_survive_a_failure_of_the_final_logging(ray_session, mahnob_cache, tmp_path, monkeypatch, capsys):
    """The final MLflow logging fails (here: writing the plots, as on a full disk): the table and --output are
    already written, every fold is already a finished nested run (logged when it finished), the parent run is
    FAILED with one line saying that --resume continues; --resume then completes without training again and
    leaves no plot folder and no checkpoint behind."""
    import tempfile

    from gbvnet.evaluation import plots

    monkeypatch.chdir(tmp_path)  # a SQLite store's artifacts go to ./runs/mlartifacts
    args = common(mahnob_cache, tmp_path, "--modality", "bio", "--epochs", "1", "--test-subjects", "1", "2",
                  "--quiet")

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(plots, "make_all", full_disk)
        with pytest.raises(SystemExit) as failed:
            loso.main(args)
    assert re.fullmatch(r"error: No space left on device; .*: run the same command with --resume to continue",
                        failed.value.code)
    printed = capsys.readouterr()
    doc = json.loads((tmp_path / "out.json").read_text())
    assert f"wrote {tmp_path / 'out.json'}" in printed.out and "subject" in printed.out  # the table
    client, children = nested_runs(store_uri(tmp_path), "gbvnet-mahnob-loso", doc["mlflow_run_id"])
    assert client.get_run(doc["mlflow_run_id"]).info.status == "FAILED"
    assert sorted((r.info.run_name, r.info.status) for r in children) == [("subject-1", "FINISHED"),
                                                                          ("subject-2", "FINISHED")]
    trained = {p: p.read_text() for p in (tmp_path / "ray").glob("eval-loso-*/*/result.json")}
    assert len(trained) == 2

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the plots are drawn
    (tmp_path / "tmp").mkdir()
    resumed = loso.main([*args, "--resume"])
    assert resumed["mlflow_run_id"] == doc["mlflow_run_id"]
    assert [f["confusion"] for f in resumed["folds"]] == [f["confusion"] for f in doc["folds"]]
    assert client.get_run(doc["mlflow_run_id"]).info.status == "FINISHED"
    assert {r.info.run_id for r in nested_runs(client.tracking_uri, "gbvnet-mahnob-loso",
                                               doc["mlflow_run_id"])[1]} == {r.info.run_id for r in children}
    assert {p: p.read_text() for p in trained} == trained  # not trained again
    assert not list((tmp_path / "tmp").iterdir())  # the plots' folder removed
    assert not list((tmp_path / "ray").glob("**/checkpoint_*"))


@pytest.fixture(scope="module")
def clean_mahnob_cache(prepared_cache):
    """A clear signal: no label noise, 24 trials per subject (so a within-subject fold trains on 9 of them); 2 face
    frames of 32 x 32 per window (with 4, the face branch's training took a third longer for a balanced accuracy of
    0.78 instead of 0.77 in the learning test)."""
    return prepared_cache("mahnob", {"subjects": 2, "trials": 24, "seed": 0, "duration": 9, "label_noise": 0},
                          frames=2, face_size=32)


@pytest.fixture(scope="module")
def subject_dependent_run(ray_session, clean_mahnob_cache, tmp_path_factory):
    """``evaluation.subject_dependent --k 2 --quiet`` with faces and signals on :func:`clean_mahnob_cache`, long
    enough to learn: ``(document, what it printed, its folder)``, shared by the protocol's test and the learning
    test (one evaluation instead of two)."""
    out = tmp_path_factory.mktemp("subject_dependent")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        doc = subject_dependent.main(common(clean_mahnob_cache, out, "--modality", "facebio", "--k", "2",
                                            "--epochs", "20", "--patience", "20", "--lr", "1e-3",
                                            "--batch-size", "8", "--quiet"))
    return doc, printed.getvalue(), out


@pytest.mark.slow
def test_subject_dependent_folds_split_trials(subject_dependent_run):
    doc, printed, out = subject_dependent_run
    assert "started" not in printed and "done after epoch" not in printed  # --quiet: only the final table
    assert len(doc["folds"]) == 4  # 2 subjects x 2 folds
    assert {tuple(f["test_subjects"]) for f in doc["folds"]} == {(1,), (2,)}
    _, children = nested_runs(store_uri(out), "gbvnet-mahnob-subject-dependent", doc["mlflow_run_id"])
    assert len(children) == 4


@pytest.mark.slow
def test_facebio_beats_chance_by_a_wide_margin(subject_dependent_run):
    doc = subject_dependent_run[0]
    assert doc["aggregate"]["test_balanced_accuracy_mean"] >= 0.75
    assert doc["comparisons"]["majority"]["mean_difference"] >= 0.25


def test_config_searched_on_test_subjects_is_refused(mahnob_cache, tmp_path):
    best = tmp_path / "best.yaml"
    best.write_text("search: {dataset: mahnob, target: valence, cache_manifest_hash: x, subjects: [1, 2]}\n")
    with pytest.raises(SystemExit, match=r"searched on subjects \[1, 2\] on mahnob"):
        loso.main(common(mahnob_cache, tmp_path, "--modality", "bio", "--config", str(best)))


# ----------------------------------------------------------------------------- fast checks (no Ray, no MLflow)
def test_metrics_match_sklearn_with_undefined_as_nan():
    """Every metric equals scikit-learn's with ``zero_division=nan``, including one-class test sets."""
    import warnings

    from sklearn import metrics as skm

    from gbvnet.train.metrics import binary_metrics, confusion

    rng = np.random.default_rng(0)
    cases = [([1, 1, 1], [1, 1, 1]), ([0, 0, 0], [0, 0, 0]), ([1, 1, 1], [1, 0, 0]), ([0, 0], [1, 1]),
             ([1, 0, 1, 1], [1, 0, 0, 1])]
    cases += [(rng.integers(0, 2, 12), rng.integers(0, 2, 12)) for _ in range(20)]
    for y, p in cases:
        got = binary_metrics(confusion(y, p))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = {
                "accuracy": skm.accuracy_score(y, p),
                "precision": skm.precision_score(y, p, zero_division=np.nan),
                "recall": skm.recall_score(y, p, zero_division=np.nan),
                "f1": skm.f1_score(y, p, zero_division=np.nan),
                "macro_f1": skm.f1_score(y, p, average="macro", labels=[0, 1], zero_division=np.nan),
                "balanced_accuracy": skm.balanced_accuracy_score(y, p),
            }
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, nan_ok=True), (name, y, p)
    perfect_positive = binary_metrics(confusion([1, 1, 1], [1, 1, 1]))  # undefined counted as 0: 0.5 and 0.5
    assert perfect_positive["balanced_accuracy"] == perfect_positive["macro_f1"] == 1.0
    assert np.isnan(binary_metrics(confusion([0, 0], [0, 0]))["f1"])  # undefined counted as 0: 0


def test_subject_metrics_pool_one_class_folds_and_aggregate_over_subjects():
    """Subject 1's two folds hold one class each (a perfect model scores 1 once pooled, not 0.5 per fold);
    subject 2 has no high window, so its F1 is undefined and left out (n counts the subjects that remain).
    Baselines go through the same rule."""
    from types import SimpleNamespace

    from gbvnet.evaluation import aggregate
    from gbvnet.evaluation.baselines import baseline_confusions
    from gbvnet.folds.protocols import Fold
    from gbvnet.train.metrics import binary_metrics, confusion

    subject = np.array([1] * 4 + [2] * 4 + [3] * 4)
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0])
    index = SimpleNamespace(subject=subject)
    folds = [Fold("s1-a", "trial", [2, 3], [], [0, 1]), Fold("s1-b", "trial", [0, 1], [], [2, 3]),
             Fold("s2", "subject", [0, 1, 2], [], [4, 5, 6, 7]), Fold("s3", "subject", [0, 1, 2], [], [8, 9, 10, 11])]
    predicted = y.copy()
    predicted[[9, 11]] = 1  # subject 3: two false positives
    summary = aggregate.summarise(folds, [confusion(y[f.test], predicted[f.test]) for f in folds], index)
    by_subject = {row["subject"]: row for row in summary["per_subject"]}
    assert by_subject[1]["balanced_accuracy"] == by_subject[1]["macro_f1"] == by_subject[1]["f1"] == 1.0
    assert summary["folds"][0]["macro_f1"] == 1.0 and np.isnan(summary["folds"][1]["f1"])
    assert np.isnan(by_subject[2]["f1"]) and by_subject[2]["macro_f1"] == 1.0
    agg = summary["aggregate"]
    f1_defined = [by_subject[1]["f1"], by_subject[3]["f1"]]  # 1.0 and 2/3
    assert agg["test_f1_n"] == 2 and agg["test_f1_mean"] == pytest.approx(np.mean(f1_defined))
    assert agg["test_f1_std"] == pytest.approx(np.std(f1_defined, ddof=1))
    assert agg["test_accuracy_n"] == agg["n_subjects"] == 3 and agg["n_folds"] == 4
    # baselines: the same pooling and NaN rule (checked against metrics of the pooled predictions)
    majority = aggregate.summarise(folds, baseline_confusions(folds, y, None)["majority"], index)
    for row in majority["per_subject"]:
        rows = np.concatenate([f.test for f in folds if subject[f.test[0]] == row["subject"]])
        preds = np.concatenate([np.full(len(f.test), int(y[f.train].mean() >= 0.5)) for f in folds
                                if subject[f.test[0]] == row["subject"]])
        expected = binary_metrics(confusion(y[rows], preds))
        assert {k: row[k] for k in expected} == pytest.approx(expected, nan_ok=True)
    assert majority["per_subject"][1]["f1"] == 0  # subject 2: "high" predicted, none true: F1 0, not undefined


def eval_spec(tmp_path, *extra):
    """``spec_from_args`` of ``evaluation.loso`` (the cache is not opened: nothing is prepared or trained)."""
    import argparse

    from gbvnet.evaluation import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    args = parser.parse_args(["--dataset", "mahnob", "--cache", str(tmp_path / "cache"), "--modality", "face",
                              *extra])
    return run.spec_from_args(args, "loso", {})


def test_searched_config_provenance_and_patience(tmp_path):
    import yaml

    from gbvnet.config import TrainConfig
    from gbvnet.evaluation.audit import check_search_subjects
    from gbvnet.folds.protocols import LeakageError

    config = tmp_path / "best.yaml"
    config.write_text("train: {lr: 0.001}\n")
    with pytest.raises(ValueError, match="no 'search' section"):  # a stripped searched config is not "unsearched"
        eval_spec(tmp_path, "--config", str(config))
    config.write_text("search: none\ntrain: {lr: 0.001, patience: 3}\n")  # hand-written: its patience counts
    assert eval_spec(tmp_path, "--config", str(config)).train.patience == 3
    search = {"dataset": "mahnob", "target": "valence", "cache_manifest_hash": "abc", "subjects": [1, 2]}
    config.write_text(yaml.safe_dump({"train": {"lr": 0.001, "patience": 20, "epochs": 20}, "search": search}))
    spec = eval_spec(tmp_path, "--config", str(config))
    assert spec.train.lr == 0.001 and spec.search == search
    assert (spec.train.patience, spec.train.epochs) == (TrainConfig.patience, TrainConfig.epochs)  # its own
    config.write_text(yaml.safe_dump({"search": {k: v for k, v in search.items() if k != "dataset"}}))
    with pytest.raises(ValueError, match=r"field 'search.dataset' is missing"):
        eval_spec(tmp_path, "--config", str(config))
    # the refusal: same dataset (the same people), whatever the target and cache; other dataset: other people
    with pytest.raises(LeakageError, match=r"subjects \[2\] on mahnob, target valence \(this evaluation: arousal\), "
                                           r"cache abc \(this evaluation: def\)"):
        check_search_subjects(search, "mahnob", "arousal", "def", [2, 3], allowed=False)
    other = check_search_subjects(search, "deap", "valence", "def", [1, 2], allowed=False)
    assert "another dataset (mahnob)" in other["search"]
    same = check_search_subjects(search, "mahnob", "valence", "abc", [3, 4], allowed=False)
    assert same["search"] == "passed; searched on mahnob (same target and cache)"


def test_face_weights_flags(tmp_path):
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"")  # existence is what the CLI checks; test_models loads a real state dict
    spec = eval_spec(tmp_path, "--face-checkpoint", str(weights))
    assert spec.model.face.checkpoint == str(weights.resolve()) and not spec.model.face.pretrained
    assert spec.model.face.weights == f"checkpoint:{weights.resolve()}"
    assert eval_spec(tmp_path, "--pretrained").model.face.weights == "timm-pretrained"
    assert eval_spec(tmp_path).model.face.weights == "scratch"
    with pytest.raises(ValueError, match="--face-checkpoint .*missing.pth: no such file"):
        eval_spec(tmp_path, "--face-checkpoint", str(tmp_path / "missing.pth"))
    with pytest.raises(SystemExit):  # one source of weights
        eval_spec(tmp_path, "--pretrained", "--face-checkpoint", str(weights))
