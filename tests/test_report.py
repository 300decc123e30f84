"""Baselines, paired statistics and ``evaluation.report``: without Ray on hand-made numbers, and on the real LOSO
evaluations that tests/conftest.py computes once per session (``evaluations``: Ray + MLflow on SQLite).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import wilcoxon

from gbvnet.evaluation import aggregate, report
from gbvnet.evaluation.stats import paired_comparison, versus_baselines


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


def test_paired_test_counts_non_zero_pairs_and_warns_when_p_005_is_unreachable():
    a = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: float("nan")}
    b = {1: 0.5, 2: 0.8, 3: 0.5, 4: 0.5, 5: 0.5}  # subject 2: a tie (dropped by the test); 5: undefined
    out = paired_comparison(a, b, alternative="greater")
    assert (out["n"], out["n_subjects"], out["subjects"]) == (3, 4, [1, 2, 3, 4])
    assert out["p_value"] == pytest.approx(wilcoxon([0.4, 0.2, 0.1], alternative="greater").pvalue)
    assert out["min_p"] == 1 / 8 and "only 3 non-zero pair(s)" in out["warning"]
    assert paired_comparison(a, b)["min_p"] == 2 / 8  # two-sided
    six = {s: 0.9 for s in range(1, 7)}
    assert paired_comparison(six, {s: 0.5 + s / 100 for s in six}, alternative="greater")["warning"] is None


def test_holm_correction_against_every_baseline():
    model = {s: 0.8 + s / 100 for s in range(1, 7)}
    baselines = {"majority": {s: 0.5 for s in model}, "stratified": {s: 0.5 + s / 50 for s in model},
                 "bandpower_logreg": {s: 0.9 for s in model}}
    out = versus_baselines(model, baselines)
    raw = {name: paired_comparison(model, scores, alternative="greater")["p_value"]
           for name, scores in baselines.items()}
    ordered = sorted(raw, key=raw.get)  # Holm: k-th smallest p times (m - k), then made monotone
    expected, running = {}, 0.0
    for k, name in enumerate(ordered):
        running = max(running, min(1.0, (3 - k) * raw[name]))
        expected[name] = running
    assert {n: out[n]["p_holm"] for n in out} == pytest.approx(expected)
    assert out["majority"]["p_value"] == pytest.approx(1 / 64) and out["majority"]["p_holm"] == pytest.approx(3 / 64)
    assert out["majority"]["better"] and not out["bandpower_logreg"]["better"]
    document = {"protocol": "loso", "dataset": "deap", "modality": "bio", "fusion": "gated", "target": "valence",
                "per_subject": [], "aggregate": {f"test_{m}_{k}": 0.5 for m in aggregate.SHOWN
                                                 for k in ("mean", "std", "n")} | {"n_folds": 6, "n_one_class_folds": 0},
                "comparisons": versus_baselines({1: 0.9, 2: 0.8, 3: 0.7}, {"majority": {1: 0.5, 2: 0.5, 3: 0.5}}),
                "mlflow_run_id": "x", "mlflow_experiment": "e"}
    table = aggregate.format_table(document)
    assert "(n=3 non-zero pairs of 3 subjects)" in table and "WARNING: only 3 non-zero pair(s)" in table
    assert "(Holm over 1 test: model vs 1 baseline, one-sided, per-subject accuracy; raw p beside)" in table
    assert table.splitlines()[1].split() == ["subject", "n", "acc", "prec_high", "recall_high", "f1_high", "bal_acc"]
    assert out["majority"]["family"] == "Holm over 3 tests: model vs 3 baselines, one-sided, per-subject accuracy"


def test_every_family_of_tests_is_holm_corrected_and_named():
    """The gap's 2 pairs x 3 metrics are one family: raw and corrected p side by side, the family's size in the
    output; a test that could not run is left out of its family."""
    from gbvnet.evaluation import gap
    from gbvnet.evaluation.stats import correct_family, holm

    rng = np.random.default_rng(0)

    def document(shift):
        rows = [{"subject": s, **{m: float(0.5 + shift + rng.normal(0, 0.05)) for m in gap.METRICS}}
                for s in range(1, 7)]
        agg = {f"test_{m}_{k}": 0.5 for m in gap.METRICS for k in ("mean", "std", "n")} | {"n_folds": 6,
                                                                                           "n_one_class_folds": 0}
        training = {name: {"min": 40, "median": 40, "max": 40} for name in report.TRAINING_SIZE}
        return {"per_subject": rows, "aggregate": agg, "baselines": {}, "audit": {"training": training}}

    documents = {"segment-random": document(0.4), "subject-dependent": document(0.05), "loso": document(0.0)}
    gaps = gap.inflation(documents)
    tests = {(pair, m): t for pair, by_metric in gaps.items() for m, t in by_metric.items()}
    assert len(tests) == 6
    assert {t["family"] for t in tests.values()} == {"Holm over 6 tests: 2 pairs x 3 metrics, two-sided"}
    expected = holm({k: t["p_value"] for k, t in tests.items()})
    assert {k: t["p_holm"] for k, t in tests.items()} == pytest.approx(expected)
    text = report.render(report.gap_tables(gap.flat_metrics(documents, gaps), "gap"), "md")
    assert "Holm over 6 tests: 2 pairs x 3 metrics" in text and "| p (raw) | p (Holm) |" in text
    t = gaps["leaky_minus_trial"]["accuracy"]
    assert f"| {t['p_value']:.3g} | {t['p_holm']:.3g} |" in text
    family = {"a": {"p_value": 0.02}, "b": {"error": "fewer than 2 subjects"}}
    assert correct_family(family, "x") == "Holm over 1 test: x" and "p_holm" not in family["b"]


def test_a_model_that_predicts_one_class_is_flagged_everywhere():
    """Folds whose model predicted a single class for every test window: flagged per fold, per subject, counted in
    the aggregate (an MLflow metric), in the report's columns and cells, and named in the first line of every output
    when they are most folds (the gap: per arm)."""
    from types import SimpleNamespace

    from gbvnet.folds.protocols import Fold

    index = SimpleNamespace(subject=np.repeat([1, 2, 3], 4))
    folds = [Fold(f"subject-{s}", "subject", [0], [], list(range(4 * s - 4, 4 * s))) for s in (1, 2, 3)]
    confusions = [[[2, 0], [2, 0]], [[0, 2], [0, 2]], [[2, 0], [1, 1]]]  # low only, high only, both
    summary = aggregate.summarise(folds, confusions, index)
    assert [f["one_class"] for f in summary["folds"]] == [0, 1, None]
    assert [r["one_class_folds"] for r in summary["per_subject"]] == [1, 1, 0]
    assert summary["aggregate"]["n_one_class_folds"] == 2 and summary["folds"][0]["balanced_accuracy"] == 0.5
    document = {"protocol": "loso", "dataset": "deap", "modality": "bio", "fusion": "gated", "target": "valence",
                **summary, "mlflow_run_id": "x", "mlflow_experiment": "e"}
    table = aggregate.format_table(document).splitlines()
    assert table[0].startswith("WARNING: the model predicted a single class for every test window in 2 of 3 folds")
    assert table[3].endswith("[one class predicted in 1 fold(s)]") and "one class" not in table[5]
    assert "one-class folds: 2 of 3 (the model predicted a single class for every test window)" in table
    summary["aggregate"]["n_one_class_folds"] = 1  # a minority: counted, not a first-line warning
    assert aggregate.degenerate_line(summary["aggregate"]) is None
    row = report.describe(fake_run("r1", "bio", "gated", "valence", "1 2 3", "d", 0.5, one_class=2))
    assert row["one_class_folds"] == "2 of 3 (MOST: nothing learnt)"
    assert report.run_warning(row).startswith("run r1: WARNING: the model predicted a single class")
    [(_, _, body)] = report.ablation_tables([row])
    assert body[0][1].endswith("{one class in 2 of 3 folds}")
    metrics = {f"{a}_{k}": v for a in report.GAP_ARMS.values() for k, v in (("n_folds", 6), ("n_one_class_folds", 0))}
    metrics["loso_n_one_class_folds"] = 6
    assert report.gap_warnings(metrics) == [
        "WARNING: the loso arm's model predicted a single class for every test window in 6 of 6 folds: it learnt "
        "nothing these tests can see; read the scores below as chance, not as a model"]
    [(_, header, body), _] = report.gap_tables(metrics, "gap")
    assert header[-1] == "one-class folds" and [r[-1] for r in body] == ["0 of 6", "0 of 6",
                                                                       "6 of 6 (MOST: nothing learnt)"]


def fake_run(run_id, modality, fusion, target, tested, digest, acc, rows="modality", n=None, one_class=0,
             configuration="preset smoke (untuned)"):
    """An MLflow parent run as ``report.describe`` reads it (tags and metrics of ``evaluation.run``)."""
    from types import SimpleNamespace

    n = n if n is not None else len(tested.split())
    metrics = {"n_folds": len(tested.split()), "n_subjects": len(tested.split()), "test_accuracy_mean": acc,
               "test_accuracy_std": 0.1, "test_accuracy_n": n, "test_f1_mean": acc, "test_f1_std": 0.1,
               "test_f1_n": n, "baseline_majority_test_accuracy_mean": 0.5, "baseline_majority_test_accuracy_std": 0,
               "n_one_class_folds": one_class}
    tags = {"dataset": "deap", "protocol": "loso", "leaky": "False", "modality": modality, "fusion": fusion,
            "target": target, "tested_subjects": tested, "folds_digest": digest, "rows": rows,
            "configuration": configuration}
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_name=run_id),
                           data=SimpleNamespace(tags=tags, metrics=metrics))


def test_ablation_blocks_compare_like_with_like():
    face_subjects, all_subjects = "1 2 3", "1 2 3 4 5"
    runs = [fake_run("r1", "facebio", "gated", "valence", face_subjects, "d-face", 0.81),
            fake_run("r2", "facebio", "attn-concat", "valence", face_subjects, "d-face", 0.79, n=2),
            fake_run("r3", "bio", "gated", "valence", face_subjects, "d-face", 0.70, rows="face"),
            fake_run("r4", "bio", "gated", "valence", face_subjects, "d-all", 0.72),  # bio trained on subjects 4, 5
            fake_run("r5", "bio", "gated", "valence", all_subjects, "d-all5", 0.75),
            fake_run("r6", "facebio", "gated", "valence", face_subjects, "d-face", 0.60)]  # older than r1
    tables = report.ablation_tables([report.describe(r) for r in runs])
    assert [t[0].split(" (cells")[0] for t in tables] == [
        "loso on deap: subjects 1 2 3, 3 folds, preset smoke (untuned)",
        "loso on deap: subjects 1 2 3 4 5, 5 folds, preset smoke (untuned)"]
    title, header, body = tables[0]
    assert header[1:5] == ["valence accuracy", "valence F1 (high class)", "arousal accuracy", "arousal F1 (high class)"]
    assert "f1_high" in report.run_columns() and "f1" not in report.run_columns()
    cells = {row[0]: row[1] for row in body}
    assert "different letters" in title
    assert cells == {"face+bio (gated)": "0.810 ± 0.100 (n=3) [a]",  # the newest run of the cell
                     "face+bio (cross-attention + concat)": "0.790 ± 0.100 (n=2) [a]",
                     "bio (face windows only)": "0.700 ± 0.100 (n=3) [a]", "bio": "0.720 ± 0.100 (n=3) [b]"}
    assert tables[1][2] == [["bio", "0.750 ± 0.100 (n=5)", "0.750 ± 0.100 (n=5)", "-", "-", "0.500 ± 0.000 / -"]]
    assert "different letters" not in tables[1][0]


def test_the_report_never_letters_differently_configured_runs_alike():
    """A nested (per-fold tuned) run beside an untuned one on the same windows: different letters, each letter's
    configuration named; the runs table shows each run's configuration."""
    runs = [fake_run("r1", "bio", "gated", "valence", "1 2 3", "d", 0.9,
                     configuration="nested search (4 trials per fold, space smoke, random search (4 trials))"),
            fake_run("r2", "bio", "gated", "valence", "1 2 3", "d", 0.7, rows="face"),
            fake_run("r3", "bio", "gated", "arousal", "1 2 3", "d", 0.6)]
    rows = [report.describe(r) for r in runs]
    [(title, _, body)] = report.ablation_tables(rows)
    cells = {row[0]: (row[1], row[3]) for row in body}
    assert cells["bio"] == ("0.900 ± 0.100 (n=3) [a]", "0.600 ± 0.100 (n=3) [b]")  # same windows, not alike
    assert cells["bio (face windows only)"][0].endswith("[b]")
    assert "[a] nested search (4 trials per fold" in title and "[b] preset smoke (untuned)" in title
    columns, table = report.runs_table(rows)
    assert [r[columns.index("configuration")] for r in table][1] == "preset smoke (untuned)"
    assert report.configured({"nested": "true"}) == "nested search"  # runs logged before the tag
    assert report.configured({"configuration": "preset paper (untuned)", "budget": "equal", "seeds": "0 1 2"}) == \
        "preset paper (untuned), budget equal, seeds 0 1 2"


def test_model_beats_majority_with_p_below_005_and_says_so(evaluations):
    docs = evaluations.docs
    doc = docs["valence"]
    assert [row["subject"] for row in doc["per_subject"]] == list(range(1, evaluations.subjects + 1))
    majority = doc["baselines"]["majority"]
    assert majority["folds"][0]["fold"] == doc["folds"][0]["fold"]  # same folds as the model
    cmp = doc["comparisons"]["majority"]
    assert cmp["alternative"] == "greater" and cmp["p_holm"] < 0.05 and cmp["better"], cmp
    assert cmp["n"] == evaluations.subjects and cmp["warning"] is None
    table = aggregate.format_table(doc)
    assert "model vs majority" in table and "-> better at p<0.05" in table


def test_baselines_in_every_output(evaluations):
    uri, docs = evaluations.uri, evaluations.docs
    doc = docs["valence"]
    for name in ("majority", "stratified", "bandpower_logreg"):  # --output JSON
        assert doc["baselines"][name]["aggregate"]["n_folds"] == evaluations.subjects
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
        assert "majority_accuracy" in text and "bandpower_logreg_accuracy" in text and "p_holm_majority" in text
        assert f"{doc['aggregate']['test_accuracy_mean']:.3f}" in text
        assert text.count("loso") >= 2
    assert "majority" in report.describe(parent)["beats"]


def test_ablation_layout(evaluations):
    uri, docs = evaluations.uri, evaluations.docs
    """Valence tested 6 subjects, arousal 2: different subjects, so different blocks (never side by side)."""
    text = report.main(["--experiment", "gbvnet-deap-loso", "--tracking-uri", uri, "--ablation"])
    blocks = text.split("### ")[1:]
    everyone = " ".join(str(s) for s in range(1, evaluations.subjects + 1))
    assert [b.splitlines()[0] for b in blocks] == [
        "loso on deap: subjects 1 2, 2 folds, preset smoke (untuned)",
        f"loso on deap: subjects {everyone}, {evaluations.subjects} folds, preset smoke (untuned)"]
    agg = {t: docs[t]["aggregate"] for t in ("valence", "arousal")}
    for block, target, cols in ((blocks[0], "arousal", (3, 4)), (blocks[1], "valence", (1, 2))):
        bio_row = next(line for line in block.splitlines() if line.startswith("| bio |"))
        cells = [c.strip() for c in bio_row.strip("|").split("|")]
        assert cells[cols[0]] == (f"{agg[target]['test_accuracy_mean']:.3f} ± {agg[target]['test_accuracy_std']:.3f}"
                                  f" (n={agg[target]['test_accuracy_n']})")
        assert cells[cols[1]].startswith(f"{agg[target]['test_f1_mean']:.3f}")
        assert cells[3 if target == "valence" else 1] == "-"
    assert "face+bio" not in text  # only rows that were run


def test_compare_two_runs(evaluations):
    uri, docs = evaluations.uri, evaluations.docs
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
    uri = evaluations.uri
    with pytest.raises(SystemExit, match="no MLflow experiment named 'nope'"):
        report.main(["--experiment", "nope", "--tracking-uri", uri])
