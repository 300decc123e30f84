"""Nested LOSO (``evaluation.loso --search-trials N``): every subject tested once by a fold searched without it, each fold
trained with its own choice, resume after a driver kill, per-fold searchers and schedulers, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from gbvnet.evaluation import engine, loso, nested
from gbvnet.search.fold_search import SCORE, FoldScheduler, FoldSearcher
from gbvnet.search.space import search_space
from tests.conftest import store_uri

SUBJECTS = 4
SIZE = {"subjects": SUBJECTS, "trials": 4, "seed": 3, "label_noise": 0, "video": False}


@pytest.fixture(scope="module")
def nested_cache(prepared_cache) -> Path:
    """DEAP layout, 4 subjects x 4 trials, bio only."""
    return prepared_cache("deap", SIZE, face=False, baseline_norm=True)


def nested_args(cache, out: Path, *extra) -> list[str]:
    """2 search trials per fold, folds trained with their best and untuned, all for 1 epoch."""
    return ["--dataset", "deap", "--cache", str(cache), "--preset", "smoke", "--modality", "bio",
            "--search-trials", "2", "--search-epochs", "1", "--epochs", "1", "--compare-untuned", "--lr", "2e-3",
            "--tracking-uri", store_uri(out), "--storage", str(out / "ray"),
            "--output", str(out / "out.json"), *extra]


@dataclass
class Resumed:
    doc: dict
    printed: str
    out: Path
    done_before: dict[str, str]  # trial folder -> result.json of the trials finished when the driver was killed


def trial_files(out: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in (out / "ray").glob("nested-loso-*/*/result.json")}


def recorded_finished(out: Path) -> set[str]:
    """The trial folders that Tune's last saved experiment state records as finished: what ``--resume`` knows
    (a trial that ends after that save and before a kill is trained again)."""
    names: set[str] = set()
    for state in (out / "ray").glob("nested-loso-*/experiment_state-*.json"):
        try:
            trials = [json.loads(data[0]) for data in json.loads(state.read_text())["trial_data"]]
        except (OSError, ValueError, KeyError):
            continue  # being replaced
        names |= {trial["relative_logdir"] for trial in trials if trial["status"] == "TERMINATED"}
    return names


@pytest.fixture(scope="module")
def resumed(ray_session, nested_cache, tmp_path_factory) -> Resumed:
    """A nested run whose driver (on the session's Ray instance) is killed (SIGKILL) once Tune has recorded 3
    trials as finished, then resumed here."""
    out = tmp_path_factory.mktemp("nested")
    cmd = [sys.executable, "-m", "evaluation.loso", *nested_args(nested_cache, out, "--quiet")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    log = out / "driver.log"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env, start_new_session=True)
    deadline, finished = time.time() + 240, {}
    while time.time() < deadline and proc.poll() is None and len(finished) < 3:
        recorded = recorded_finished(out)
        finished = {name: p.read_text() for name, p in trial_files(out).items() if name in recorded}
        time.sleep(0.3)
    assert len(finished) >= 3 and proc.poll() is None, f"the nested run ended early: {log.read_text()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver: Ray ends its trials
    proc.wait()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        doc = loso.main(nested_args(nested_cache, out, "--resume"))
    return Resumed(doc, stdout.getvalue(), out, finished)


@pytest.mark.slow
def test_every_subject_is_tested_once_by_a_fold_searched_without_it(resumed):
    doc = resumed.doc
    assert [f["test_subjects"] for f in doc["folds"]] == [[s] for s in range(1, SUBJECTS + 1)]
    assert doc["nested"]["failed_folds"] == {}
    inner = doc["audit"]["inner_folds"]
    assert sorted(inner) == [f"subject-{s}" for s in range(1, SUBJECTS + 1)]
    for name, fold in inner.items():
        k = int(name.split("-")[1])
        assert fold["outer_test_subjects"] == [k]
        assert k not in fold["train_subjects"] + fold["val_subjects"]
        assert fold["train_subjects"] and fold["val_subjects"]
        assert not set(fold["train_subjects"]) & set(fold["val_subjects"])
        assert fold["check"]["verdict"].endswith(f"none of the outer test subjects [{k}]")
    assert doc["audit"]["inner_normalizer"] == "passed (fitted on training rows only)"
    budget = doc["nested"]["budget"]
    assert budget["trials"] == 2 * SUBJECTS and budget["trial_epochs"] == 2 * SUBJECTS
    assert set(doc["nested"]["stability"]["train.batch_size"]["counts"]) == {"16", "32"}
    assert {"model.face.depth", "model.fusion.gate_hidden"} <= set(doc["nested"]["not_searched"])  # bio only
    assert not {"model.face.depth", "model.fusion.gate_hidden"} & set(doc["nested"]["stability"])
    assert "not searched (cannot change this model): " in resumed.printed
    assert sum(doc["nested"]["stability"]["train.batch_size"]["counts"].values()) == SUBJECTS
    untuned = doc["nested"]["untuned"]
    assert [row["subject"] for row in untuned["per_subject"]] == list(range(1, SUBJECTS + 1))
    assert untuned["tests"]["balanced_accuracy"]["n_subjects"] == SUBJECTS
    assert untuned["family"] == "Holm over 2 tests: tuned vs untuned x 2 metrics, two-sided"
    assert all(t["p_holm"] >= t["p_value"] for t in untuned["tests"].values())
    assert f"({untuned['family']}; raw p beside)" in resumed.printed and "Holm p = " in resumed.printed
    assert set(doc["comparisons"]) == set(doc["baselines"])  # model vs baselines, Holm-corrected
    assert "nested search: 2 trials per fold, random search (2 trials" in resumed.printed  # not TPE
    assert "tuned vs untuned" in resumed.printed
    assert "val macro-F1 test macro-F1" in resumed.printed and " f1_high " in resumed.printed  # which F1
    assert json.loads((resumed.out / "out.json").read_text())["nested"] == json.loads(json.dumps(doc["nested"]))


@pytest.mark.slow
def test_each_fold_trained_with_its_own_best_configuration_read_back_from_mlflow(resumed):
    client = MlflowClient(store_uri(resumed.out))
    parent = resumed.doc["mlflow_run_id"]
    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert sorted(children) == [f"subject-{s}" for s in range(1, SUBJECTS + 1)]  # no duplicates after the resume
    chosen = {}
    for name, fold_run in children.items():
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == fold_run.info.run_id]
        assert sorted(r.info.run_name for r in trials) == ["search-0", "search-1", "untuned"]
        searched = [r for r in trials if r.info.run_name != "untuned"]
        best = max(searched, key=lambda r: (r.data.metrics["best_val_macro_f1"], -int(r.info.run_name[-1])))
        used = {k.removeprefix("chosen."): v for k, v in fold_run.data.params.items() if k.startswith("chosen.")}
        assert used == best.data.params  # the fold's training used its own search's best point
        assert fold_run.data.tags["chosen_trial"] == best.info.run_name.removeprefix("search-")
        assert fold_run.data.metrics["inner_best_val_macro_f1"] == best.data.metrics["best_val_macro_f1"]
        chosen[name] = used
    assert len({json.dumps(c, sort_keys=True) for c in chosen.values()}) == SUBJECTS  # each fold its own sampler


@pytest.mark.slow
def test_resume_after_a_kill_trains_nothing_finished_again(resumed):
    files = trial_files(resumed.out)
    # the resumed run's trials, all finished (a trial started after Tune's last save before the kill is unknown to
    # the resume: its folder stays on disk, unused, and the searcher proposes that trial again)
    recorded = recorded_finished(resumed.out)
    assert len(recorded) == SUBJECTS * (2 + 1 + 1)  # search trials, tuned and untuned training per fold
    for name, text in resumed.done_before.items():  # finished before the kill: not trained again
        assert name in recorded and files[name].read_text() == text
    configs = [json.loads((files[name].parent / "params.json").read_text()) for name in recorded]
    assert len({(c["fold"], c["job"], c["number"]) for c in configs}) == len(configs)
    assert not [p for name in recorded for p in files[name].parent.glob("checkpoint_*")]  # removed at the end


# ----------------------------------------------------------------------------- no Ray
def test_searcher_interleaves_folds_and_trains_each_fold_after_its_own_search():
    searcher = FoldSearcher(search_space("smoke"), folds=2, trials=2, seed=0, compare_untuned=True)
    first = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [(c["fold"], c["job"], c["number"]) for c in first] == [(0, "inner", 0), (1, "inner", 0),
                                                                   (0, "inner", 1), (1, "inner", 1)]
    assert first[0] != first[1]  # each fold its own sampler (seeded per fold)
    assert searcher.suggest("u0")["job"] == "untuned" and searcher.suggest("u1")["job"] == "untuned"
    assert searcher.suggest("wait") is None  # both searches still running
    searcher.on_trial_complete("t0", {SCORE: 0.4})
    searcher.on_trial_complete("t2", {SCORE: 0.7})
    tuned = searcher.suggest("f0")
    assert tuned == {**first[2], "job": "tuned"}  # fold 0's best trial (number 1), fold 1 still searching
    path = "/tmp/fold-searcher-test.pkl"
    searcher.save(path)
    restored = FoldSearcher(search_space("smoke"), folds=2, trials=2, seed=0, compare_untuned=True)
    restored.restore(path)
    os.remove(path)
    restored.on_trial_complete("t1", error=True)
    restored.on_trial_complete("t3", error=True)
    assert restored.suggest("x") is None  # fold 0's training still running (it may need a retry)
    restored.on_trial_complete("f0", {"test_confusion": [[1, 0], [0, 1]]})
    assert restored.suggest("x") == Searcher.FINISHED  # fold 1's search failed: no tuned training for it


def test_a_fold_whose_training_fails_is_retried_with_its_next_best_configuration():
    """The tuned training fails: the same fold is trained with its next-best configuration, at most RETRIES times;
    collect() keeps the failures in the order tried, and the run's tags count only the folds that were tested."""
    import numpy as np

    from gbvnet.folds.protocols import Fold, folds_digest
    from gbvnet.search.fold_search import RETRIES

    searcher = FoldSearcher(search_space("smoke"), folds=2, trials=4, seed=0, compare_untuned=False)
    inner = [searcher.suggest(f"t{i}") for i in range(8)]
    for i, score in enumerate((0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4)):  # fold 0 ranks its trials 0, 1, 2, 3
        searcher.on_trial_complete(f"t{i}", {SCORE: score})
    first, other = searcher.suggest("a"), searcher.suggest("b")
    assert (first["fold"], first["job"], first["number"]) == (0, "tuned", 0) and other["fold"] == 1
    assert searcher.suggest("wait") is None  # trainings running: a retry may come
    tried = [0]
    for attempt in range(RETRIES):
        searcher.on_trial_complete("a" if attempt == 0 else f"r{attempt - 1}", error=True)  # out of memory, say
        retry = searcher.suggest(f"r{attempt}")
        assert (retry["fold"], retry["job"]) == (0, "tuned") and retry == {**inner[2 * (attempt + 1)], "job": "tuned"}
        tried.append(retry["number"])
    assert tried == [0, 1, 2]  # the best, then the next-best ones
    searcher.on_trial_complete(f"r{RETRIES - 1}", error=True)
    searcher.on_trial_complete("b", {"test_confusion": [[1, 0], [0, 1]]})
    assert searcher.suggest("x") == Searcher.FINISHED  # the bound is spent: fold 0 failed

    def result(fold, job, number, error=None, score=None):
        metrics = {SCORE: score} if job == "inner" else ({} if error else {"test_confusion": [[1, 0], [0, 1]]})
        return SimpleNamespace(config={"fold": fold, "job": job, "number": number}, error=error, metrics=metrics)

    grid = [result(0, "inner", n, score=s) for n, s in enumerate((0.9, 0.8, 0.7))]
    grid += [result(1, "inner", n, score=s) for n, s in enumerate((0.5, 0.6, 0.4))]
    grid += [result(0, "tuned", 1, error="OOM"), result(0, "tuned", 0, error="OOM"), result(0, "tuned", 2, "OOM")]
    grid += [result(1, "tuned", 1, error="OOM\ntraceback"), result(1, "tuned", 0)]
    failed, retried = nested.collect(grid, [Fold("subject-1", "subject", [], []), Fold("subject-2", "subject", [], [])])
    assert failed.tuned is None and [n for n, _ in failed.failed_trainings] == [0, 1, 2]
    assert failed.failure.startswith("training failed with each of its 3 best configurations (trials [0, 1, 2]")
    assert retried.tuned.config["number"] == 0 and retried.failed_trainings == [(1, "OOM")]

    index = SimpleNamespace(subject=np.repeat([1, 2, 3], 2), manifest_hash="h")
    folds = [Fold(f"subject-{s}", "subject", [0], [], [2 * s - 2, 2 * s - 1]) for s in (1, 2, 3)]
    tags = nested.tested_tags(index, folds, done=[0, 2])
    assert tags == {"tested_subjects": "1 3", "n_subjects": 2, "folds_digest": folds_digest([folds[0], folds[2]], "h"),
                    "untested_folds": "subject-2"}
    from gbvnet.evaluation import report
    assert report.fold_failures({"untested_folds": "subject-2", "retried_folds": "subject-1"}) == \
        "untested: subject-2; retried: subject-1"


def test_scheduler_never_compares_trials_of_different_folds():
    scheduler = FoldScheduler(2, max_t=4, grace_period=1, reduction_factor=2)

    def trial(i, fold, job="inner"):
        return SimpleNamespace(trial_id=f"t{i}", config={"fold": fold, "job": job})

    trials = [trial(0, 0), trial(1, 0), trial(2, 1), trial(3, 0, "tuned")]
    for t in trials:
        scheduler.on_trial_add(None, t)
    result = {"epoch": 1, "val_macro_f1": 0.9}
    assert scheduler.on_trial_result(None, trials[0], result) == TrialScheduler.CONTINUE
    low = {"epoch": 1, "val_macro_f1": 0.1}
    assert scheduler.on_trial_result(None, trials[2], low) == TrialScheduler.CONTINUE  # alone in fold 1's ASHA
    assert scheduler.on_trial_result(None, trials[1], low) == TrialScheduler.STOP  # below fold 0's rung
    assert scheduler.on_trial_result(None, trials[3], low) == TrialScheduler.CONTINUE  # outer training runs on


def test_bad_input_is_refused_before_ray_starts(nested_cache, prepared_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nested, "init_ray", lambda **_: pytest.fail("Ray was started"))
    monkeypatch.setattr(engine, "init_ray", lambda **_: pytest.fail("Ray was started"))
    for bad in ("0", "-2"):
        with pytest.raises(SystemExit):
            loso.main(nested_args(nested_cache, tmp_path, "--search-trials", bad))
        assert f"argument --search-trials: must be at least 1, got {bad}" in capsys.readouterr().err
    config = tmp_path / "best.yaml"
    config.write_text("search: none\n")
    with pytest.raises(SystemExit, match=r"--search-trials 2 searches every outer fold itself; it cannot also take --config"):
        loso.main(nested_args(nested_cache, tmp_path, "--config", str(config)))
    with pytest.raises(SystemExit, match="--compare-untuned compares a nested search"):
        loso.main(nested_args(nested_cache, tmp_path)[:8] + nested_args(nested_cache, tmp_path)[10:])
    two = prepared_cache("deap", {**SIZE, "subjects": 2}, face=False)
    with pytest.raises(SystemExit, match=r"fold subject-1 \(test subjects \[1\]\): its search needs at least 2 "
                                         r"training subjects \(some train, some validate\), got \[2\]"):
        loso.main(nested_args(two, tmp_path, "--validation", "trials"))


def test_plain_loso_warns_when_folds_train_on_few_subjects(nested_cache, tmp_path, monkeypatch):
    class Planned(Exception):
        pass

    def stop(**_):
        raise Planned

    monkeypatch.setattr(engine, "init_ray", stop)
    with pytest.warns(UserWarning, match=r"4 fold\(s\) train on fewer than 3 subjects \(e.g. subject-1: \[\d, \d\]\)"):
        with pytest.raises(Planned):
            loso.main(["--dataset", "deap", "--cache", str(nested_cache), "--preset", "smoke", "--modality", "bio"])
