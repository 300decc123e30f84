"""The protocol gap (``evaluation.gap``): one configuration under the leaky, trial-level and LOSO protocols, as one
pool of Ray Tune trials, on a synthetic corpus whose trials carry a signature unrelated to their labels."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gbvnet.evaluation import gap, report
from tests.conftest import store_uri

# 3 subjects x 4 trials (k=2: 2 subjects' worth of folds each), no signal in the labels (half the trials flipped),
# and a strong per-trial EEG signature: only a split that trains on windows of the test trials can score.
SIGNATURE = {"subjects": 3, "trials": 4, "seed": 3, "video": False, "label_noise": 0.5, "trial_signature": 3.0}


@pytest.fixture(scope="module")
def signature_cache(prepared_cache):
    return prepared_cache("deap", SIGNATURE, face=False, baseline_norm=True)


@dataclass
class Interrupted:
    """What the first attempt of :func:`gap_run`, whose final MLflow logging failed, left behind."""

    document: dict  # its --output
    statuses: list[tuple[str, str]]  # (MLflow run name, status), sorted
    trained: dict[str, str]  # result.json path -> text


@pytest.fixture(scope="module")
def gap_run(ray_session, signature_cache, tmp_path_factory):
    """The gap command with --equal-budget, whose final MLflow logging fails once (as with the tracking server down
    at the end), then the same command with --resume."""
    out = tmp_path_factory.mktemp("gap")
    uri = store_uri(out)
    args = ["--dataset", "deap", "--cache", str(signature_cache), "--preset", "smoke", "--modality", "bio", "--k",
            "2", "--epochs", "3", "--batch-size", "4", "--lr", "3e-3", "--quiet", "--equal-budget",
            "--tracking-uri", uri,
            "--storage", str(out / "ray"), "--output", str(out / "gap.json")]

    def down(*args, **kwargs):
        raise ConnectionError("tracking server down")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gap, "log_gap", down)
        with pytest.raises(SystemExit, match="tracking server down.*--resume"):  # one line
            gap.main(args)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gbvnet-deap-gap").experiment_id], max_results=1000)
    first = Interrupted(json.loads((out / "gap.json").read_text()), sorted((r.info.run_name, r.info.status) for r in runs),
                        {str(p): p.read_text() for p in (out / "ray").glob("eval-gap-deap-*/*/result.json")})
    return gap.main([*args, "--resume"]), uri, out, first


@pytest.mark.slow
def test_leaky_split_scores_by_recognising_the_trial(gap_run, capsys):
    doc, uri, out, _ = gap_run
    accuracy = {p: {r["subject"]: r["accuracy"] for r in d["per_subject"]} for p, d in doc["protocols"].items()}
    above = [s for s in (1, 2, 3) if accuracy["segment-random"][s] > accuracy["loso"][s]]
    assert len(above) >= 2, accuracy
    assert json.loads((out / "gap.json").read_text())["mlflow_run_id"] == doc["mlflow_run_id"]
    assert doc["inflation"]["leaky_minus_trial"]["accuracy"]["n_subjects"] == 3
    # one pool of trials: a single Tune experiment holding every fold of the three protocols
    [pool] = list((out / "ray").glob("eval-gap-deap-*"))
    assert len(list(pool.glob("*/result.json"))) == 6 + 6 + 3


@pytest.mark.slow
def test_arms_share_configuration_and_only_the_leaky_one_is_labelled(gap_run):
    doc, uri, _, _ = gap_run
    client = MlflowClient(uri)
    parent = client.get_run(doc["mlflow_run_id"])
    assert parent.data.tags["kind"] == "gap"
    assert {"protocol_gap.png", "gap.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    arms = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    arms = {r.data.tags["protocol"]: r for r in arms}
    assert sorted(arms) == sorted(gap.ARMS)
    shared = {p: {k: v for k, v in r.data.params.items() if k.startswith(("model.", "train.")) or k in
                  ("seed", "rows", "cache_manifest_hash")} for p, r in arms.items()}
    assert shared["loso"]["seed"] == "0" and any(k.startswith("model.") for k in shared["loso"])
    assert shared["segment-random"] == shared["subject-dependent"] == shared["loso"]
    for protocol, run in arms.items():
        leaky = protocol == "segment-random"
        assert run.data.tags["leaky"] == str(leaky)
        audit = json.loads(open(client.download_artifacts(run.info.run_id, "audit.json")).read())
        assert audit == doc["protocols"][protocol]["audit"]
        assert audit["folds"] == ("LEAKY (allowed by the user)" if leaky else "passed")
        assert ("leaky_split" in audit) == leaky
        folds = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        assert len(folds) == {"segment-random": 6, "subject-dependent": 6, "loso": 3}[protocol]
        assert run.data.metrics["test_accuracy_mean"] == pytest.approx(
            doc["protocols"][protocol]["aggregate"]["test_accuracy_mean"])


@pytest.mark.slow
def test_a_failed_final_logging_loses_nothing_and_resume_finishes_it(gap_run, capsys):
    """The tables and --output come before the final MLflow logging, each fold reached MLflow as it finished, the
    failure marked the gap's runs FAILED; --resume trains nothing again and finishes the same runs."""
    doc, uri, out, first = gap_run
    assert first.document["protocols"]["loso"]["per_subject"] == doc["protocols"]["loso"]["per_subject"]
    assert first.document["mlflow_run_id"] == doc["mlflow_run_id"]
    fold = re.compile(r"subject-\d")  # a fold's run: subject-3, subject-3-fold-1, ...
    folds = [status for name, status in first.statuses if fold.match(name)]
    assert folds == ["FINISHED"] * (6 + 6 + 3)  # each logged as it finished
    assert [s for n, s in first.statuses if not fold.match(n)] == ["FAILED"] * 4  # the gap and its arms
    assert {str(p): p.read_text() for p in (out / "ray").glob("eval-gap-deap-*/*/result.json")} == first.trained
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gbvnet-deap-gap").experiment_id], max_results=1000)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [(n, "FINISHED") for n, _ in first.statuses]
    assert not list((out / "ray").glob("**/checkpoint_*"))


@pytest.mark.slow
def test_report_shows_the_gap(gap_run):
    doc, uri, _, _ = gap_run
    text = report.main(["--experiment", doc["mlflow_experiment"], "--tracking-uri", uri])
    assert "segment-random LEAKY" in text  # the leaky evaluation in the runs table
    assert "protocol gap on deap: bio (gated), target valence" in text
    leaky = doc["metrics"]["leaky_minus_trial_accuracy_mean_difference"]
    assert f"| leaky - trial | accuracy | {leaky:+.3f} |" in text
    m = doc["protocols"]["loso"]["aggregate"]
    assert f"{m['test_accuracy_mean']:.3f} ± {m['test_accuracy_std']:.3f}" in text


@pytest.mark.slow
def test_equal_budget_trains_every_arm_on_the_same_windows_and_steps(gap_run):
    """With --equal-budget (the fixture) every fold of every arm trains on the same number of windows, for all its
    epochs, so the same optimiser steps; the audit, the printed tables and MLflow say so."""
    doc, uri, _, _ = gap_run
    training = {p: d["audit"]["training"] for p, d in doc["protocols"].items()}
    windows = {row["windows"] for t in training.values() for row in t["per_fold"].values()}
    steps = {row["steps"] for t in training.values() for row in t["per_fold"].values()}
    assert len(windows) == 1 and steps == {3 * -(-min(windows) // 4)}  # 3 epochs of ceil(windows / batch 4)
    assert doc["budget"].startswith("equal: ") and "training size per fold" in gap.format_gap(doc)
    parent = MlflowClient(uri).get_run(doc["mlflow_run_id"])
    assert parent.data.tags["budget"] == doc["budget"]
    assert parent.data.metrics["loso_train_windows_max"] == min(windows)


def test_each_arm_states_its_training_size(signature_cache):
    """Without --equal-budget a LOSO fold trains on more windows and steps than a within-subject fold; each arm's
    audit says how many, and whom its normaliser saw (one subject within a subject)."""
    import argparse

    from gbvnet.data.cache import open_cache
    from gbvnet.evaluation import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    spec = run.spec_from_args(parser.parse_args(["--dataset", "deap", "--cache", str(signature_cache), "--preset",
                                                 "smoke", "--modality", "bio", "--batch-size", "4"]), "gap", {})
    index = open_cache(str(signature_cache)).index()
    arms = gap.plan(gap.arm_specs(spec, 2, "subjects"), index)
    sizes = {p: a.audit["training"] for p, a in arms.items()}
    assert sizes["loso"]["windows"]["min"] > 2 * sizes["subject-dependent"]["windows"]["max"]
    assert sizes["loso"]["steps"]["min"] > sizes["subject-dependent"]["steps"]["max"]
    assert sizes["subject-dependent"]["normalizer_subjects"]["max"] == 1
    assert gap.budget_of(arms, equal=False) == "as each protocol gives (not equal)"
    equal = gap.plan(gap.arm_specs(spec, 2, "subjects", equal=True), index, equal=True)
    assert {a.spec.train.patience for a in equal.values()} == {spec.train.epochs}  # no early stop
    assert len({len(f.train) for a in equal.values() for f in a.folds}) == 1
    assert all(set(f.train) <= set(u.train) for p in arms for f, u in zip(equal[p].folds, arms[p].folds, strict=True))


def test_too_few_subjects_or_trials_are_refused_before_ray(prepared_cache, signature_cache, tmp_path, monkeypatch):
    def no_ray(**_):
        raise AssertionError("Ray started")

    monkeypatch.setattr(gap, "init_ray", no_ray)
    two = prepared_cache("deap", {**SIGNATURE, "subjects": 2}, face=False, baseline_norm=True)
    args = ["--dataset", "deap", "--preset", "smoke", "--modality", "bio", "--tracking-uri",
            store_uri(tmp_path), "--storage", str(tmp_path / "ray")]
    with pytest.raises(SystemExit, match=r"loso .*needs at least 3 subjects.*subjects \[1, 2\]"):
        gap.main([*args, "--cache", str(two), "--k", "2"])
    with pytest.raises(SystemExit, match=r"subject-dependent \(k=4\).*subjects \[1, 2, 3\].*have 4, 4, 4"):
        gap.main([*args, "--cache", str(signature_cache), "--k", "4"])
    assert not (tmp_path / "ray").exists()


def test_trial_signature_offsets_the_eeg_during_the_stimulus_only(tmp_path):
    """The same corpus with and without a signature differs by one offset per trial and EEG channel, during the
    stimulus only; ratings and every other channel are unchanged."""
    import pickle

    from gbvnet.data import deap, synthetic

    data = {}
    for strength in (0.0, 1.0):
        deap.write_deap(tmp_path / str(strength), subjects=1, trials=3, seed=4, video=False,
                        trial_signature=strength)
        data[strength] = pickle.loads(deap.dat_path(tmp_path / str(strength), 1).read_bytes(), encoding="latin1")
    np.testing.assert_array_equal(data[0.0]["labels"], data[1.0]["labels"])
    diff = data[1.0]["data"] - data[0.0]["data"]
    start = int(deap.DEAP_STIM_START * deap.DEAP_SFREQ)
    assert not diff[:, 32:].any() and not diff[:, :, :start].any()
    offsets = diff[:, :32, start]
    np.testing.assert_allclose(diff[:, :32, start:], offsets[..., None] * np.ones(diff.shape[-1] - start))
    assert np.std(offsets) == pytest.approx(synthetic._EEG_RMS, rel=0.4)  # 1 x the EEG's RMS, 96 draws
    with pytest.raises(ValueError, match="trial_signature must be >= 0"):
        deap.write_deap(tmp_path / "bad", subjects=1, trials=1, video=False, trial_signature=-1)
