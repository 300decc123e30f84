"""Baselines, paired statistics and ``evaluation.report`` on real evaluations (Ray + MLflow on SQLite).

The corpus is DEAP-format, bio only, with a clean signal and per-subject offsets that the pre-stimulus baseline
normalisation removes, so a leave-one-subject-out model should beat the majority baseline on every subject.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_module
from mlflow.tracking import MlflowClient
from scipy.stats import wilcoxon

from evaluation import aggregate, loso, report
from evaluation.stats import paired_comparison

SUBJECTS = 5  # the fewest subjects for which a one-sided Wilcoxon test can reach p < 0.05 (1/32)


@pytest.fixture(scope="module")
def deap_bio_cache(tmp_path_factory):
    root, cache = tmp_path_factory.mktemp("deap_clean"), tmp_path_factory.mktemp("deap_clean_cache")
    run_module("gbvnet.data.synthetic", "--format", "deap", "--out", str(root), "--subjects", str(SUBJECTS),
               "--trials", "8", "--seed", "3", "--label-noise", "0", "--no-video")
    run_module("gbvnet.prepare", "--dataset", "deap", "--root", str(root), "--cache", str(cache), "--no-face",
               "--baseline-norm")
    return cache


@pytest.fixture(scope="module")
def evaluations(ray_session, deap_bio_cache, tmp_path_factory):
    """LOSO bio runs for valence and arousal in one MLflow database: ``(tracking_uri, {target: document})``.

    The arousal run tests subjects 1 and 2 only (it feeds the layout and pairing tests; time is short in CI)."""
    out = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{out}/mlflow.db"
    docs = {}
    for target in ("valence", "arousal"):
        docs[target] = loso.main(["--dataset", "deap", "--cache", str(deap_bio_cache), "--preset", "smoke",
                                  "--modality", "bio", "--target", target, "--epochs", "8", "--lr", "1e-3",
                                  "--tracking-uri", uri, "--storage", str(out / "ray"),
                                  "--output", str(out / f"{target}.json"),
                                  *(["--test-subjects", "1", "2"] if target == "arousal" else [])])
        assert json.loads((out / f"{target}.json").read_text())["mlflow_run_id"] == docs[target]["mlflow_run_id"]
    return uri, docs


def test_paired_test_matches_scipy():
    a = {1: 0.91, 2: 0.62, 3: 0.75, 4: 0.58, 5: 0.83, 6: 0.70}
    b = {1: 0.50, 2: 0.65, 3: 0.52, 4: 0.49, 5: 0.55, 6: 0.61, 7: 0.9}  # subject 7 is not paired
    diffs = [a[s] - b[s] for s in sorted(a)]
    for alternative in ("two-sided", "greater"):
        out = paired_comparison(a, b, alternative=alternative)
        expected = wilcoxon(diffs, alternative=alternative)
        assert out["n"] == 6 and out["subjects"] == [1, 2, 3, 4, 5, 6]
        assert out["p_value"] == pytest.approx(expected.pvalue)
        assert out["wilcoxon_statistic"] == pytest.approx(expected.statistic)
    # ranks of |d|: 0.03 -> 1, the two 0.09 -> 2 and 3, 0.23 -> 4, 0.28 -> 5, 0.41 -> 6; only -0.03 is negative
    assert paired_comparison(a, b)["effect_size"] == pytest.approx((20 - 1) / 21)
    with pytest.raises(ValueError, match="at least 2 common subjects"):
        paired_comparison({1: 0.5}, {1: 0.4, 2: 0.3})


def test_model_beats_majority_with_p_below_005_and_says_so(evaluations):
    _, docs = evaluations
    doc = docs["valence"]
    assert [row["subject"] for row in doc["per_subject"]] == list(range(1, SUBJECTS + 1))
    majority = doc["baselines"]["majority"]
    assert majority["folds"][0]["fold"] == doc["folds"][0]["fold"]  # same folds as the model
    cmp = doc["comparisons"]["majority"]
    assert cmp["alternative"] == "greater" and cmp["p_value"] < 0.05, cmp
    table = aggregate.format_table(doc)
    assert "model vs majority" in table and "-> better at p<0.05" in table


def test_baselines_in_every_output(evaluations):
    uri, docs = evaluations
    doc = docs["valence"]
    for name in ("majority", "stratified", "bandpower_logreg"):  # --output JSON
        assert doc["baselines"][name]["aggregate"]["n_folds"] == SUBJECTS
        assert name in aggregate.format_table(doc)  # the final table
    # majority of the training folds predicts one class: its accuracy is the test share of that class
    for fold, row in zip(doc["folds"], doc["baselines"]["majority"]["folds"], strict=True):
        cm = np.array(row["confusion"])
        assert (cm[:, 0].sum() == 0 or cm[:, 1].sum() == 0) and cm.sum() == fold["n_test"]
    client = MlflowClient(uri)  # the MLflow parent run
    parent = client.get_run(doc["mlflow_run_id"])
    assert parent.data.metrics["baseline_majority_test_accuracy_mean"] == pytest.approx(
        doc["baselines"]["majority"]["aggregate"]["test_accuracy_mean"])
    assert "vs_bandpower_logreg_p_value" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(doc["mlflow_run_id"])}
    assert {"baselines.json", "audit.json", "per_subject.json"} <= artifacts
    for fmt in ("md", "html"):  # evaluation.report
        text = report.main(["--experiment", "gbvnet-deap-loso", "--tracking-uri", uri, "--format", fmt])
        assert "majority_accuracy" in text and "bandpower_logreg_accuracy" in text
        assert f"{doc['aggregate']['test_accuracy_mean']:.3f}" in text
        assert text.count("loso") >= 2 and ("yes" in text)


def test_ablation_layout(evaluations):
    uri, docs = evaluations
    text = report.main(["--experiment", "gbvnet-deap-loso", "--tracking-uri", uri, "--ablation"])
    bio_row = next(line for line in text.splitlines() if line.startswith("| bio |"))
    cells = [c.strip() for c in bio_row.strip("|").split("|")]
    agg = {t: docs[t]["aggregate"] for t in ("valence", "arousal")}
    assert cells[1].startswith(f"{agg['valence']['test_accuracy_mean']:.3f}")
    assert cells[2].startswith(f"{agg['valence']['test_f1_mean']:.3f}")
    assert cells[3].startswith(f"{agg['arousal']['test_accuracy_mean']:.3f}")
    assert "### loso" in text and "face+bio" not in text  # only rows that were run


def test_compare_two_runs(evaluations):
    uri, docs = evaluations
    a, b = docs["valence"]["mlflow_run_id"], docs["arousal"]["mlflow_run_id"]
    text = report.main(["--compare", a[:8], b[:8], "--tracking-uri", uri])  # the ids as the tables show them
    scores = [{r["subject"]: r["accuracy"] for r in docs[t]["per_subject"]} for t in ("valence", "arousal")]
    expected = paired_comparison(*scores)
    assert f"{expected['p_value']:.3g}" in text and "two-sided Wilcoxon" in text
    logged = MlflowClient(uri).download_artifacts(a, f"comparisons/vs_{b}.json")
    assert json.loads(open(logged).read())["p_value"] == pytest.approx(expected["p_value"])
    with pytest.raises(SystemExit, match="no evaluation run whose id starts with 'zzz'"):
        report.main(["--compare", a, "zzz", "--tracking-uri", uri])


def test_report_refuses_unknown_experiment(evaluations):
    uri, _ = evaluations
    with pytest.raises(SystemExit, match="no MLflow experiment named 'nope'"):
        report.main(["--experiment", "nope", "--tracking-uri", uri])
