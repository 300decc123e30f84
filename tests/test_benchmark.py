"""The benchmark (``evaluation.benchmark``): several models on one protocol's folds, in one pool of Ray Tune trials,
scored and tested against the reference model; its MLflow runs, resume, and ``evaluation.report --benchmark``."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from gbvnet.evaluation import benchmark, report
from tests.conftest import store_uri

# 4 subjects x 4 trials, a clean signal (GBV-Net and EEGNet learn it; the band-power baseline scores it too)
pytestmark = pytest.mark.slow

CORPUS = {"subjects": 4, "trials": 4, "seed": 11, "video": False, "label_noise": 0}
MODELS = ["gbvnet:bio", "eegnet", "shallow"]
SEARCHED = ["1", "2"]  # the outer folds the nested benchmark tests (2 x 3 Tune trials per model instead of 4 x 3)


@pytest.fixture(scope="module")
def bench_cache(prepared_cache):
    return prepared_cache("deap", CORPUS, face=False, baseline_norm=True)


@pytest.fixture(scope="module")
def benchmark_run(ray_session, bench_cache, tmp_path_factory):
    """The benchmark of three models, whose final MLflow logging fails once (as with the tracking server down at
    the end), then the same command with --resume; what the first attempt left: its --output and trained folds."""
    out = tmp_path_factory.mktemp("benchmark")
    uri = store_uri(out)
    args = ["--dataset", "deap", "--cache", str(bench_cache), "--preset", "smoke", "--models", *MODELS, "--epochs",
            "2", "--batch-size", "8", "--lr", "3e-3", "--quiet", "--tracking-uri", uri, "--storage",
            str(out / "ray"), "--output", str(out / "benchmark.json")]

    def down(*args, **kwargs):
        raise ConnectionError("tracking server down")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(benchmark, "log_benchmark", down)
        with pytest.raises((ConnectionError, SystemExit), match="tracking server down"):
            benchmark.main(args)
    first = json.loads((out / "benchmark.json").read_text())
    trained = {str(p): p.read_text() for p in (out / "ray").glob("eval-benchmark-deap-*/*/result.json")}
    return benchmark.main([*args, "--resume"]), first, trained, uri, out


def test_every_model_is_trained_and_tested_on_the_same_folds_and_windows(benchmark_run):
    document = benchmark_run[0]
    assert list(document["models"]) == MODELS
    folds = {label: [(f["fold"], f["test_subjects"], f["n_test"]) for f in doc["folds"]]
             for label, doc in document["models"].items()}
    assert len({json.dumps(v) for v in folds.values()}) == 1 and len(folds["eegnet"]) == CORPUS["subjects"]
    digests = {doc["audit"]["folds_digest"] for doc in document["models"].values()}
    assert len(digests) == 1
    assert document["subjects"] == [1, 2, 3, 4] and document["rows"] == "every window"
    channels = {label: len(doc["channels"]) for label, doc in document["models"].items()}
    assert channels == {"gbvnet:bio": 40, "eegnet": 32, "shallow": 32}  # EEG networks read the 32 EEG electrodes


def test_the_reference_is_tested_against_each_model_with_holm_over_the_models(benchmark_run):
    document = benchmark_run[0]
    comparisons = document["comparisons"]
    assert document["reference"] == "gbvnet:bio" and set(comparisons) == {"eegnet", "shallow"}
    raw = sorted((t["p_value"], label) for label, t in comparisons.items())
    assert comparisons[raw[0][1]]["p_holm"] == pytest.approx(min(1.0, 2 * raw[0][0]))
    for test in comparisons.values():
        assert test["alternative"] == "greater" and test["n_subjects"] == 4
        assert test["family"] == ("Holm over 2 tests: gbvnet:bio vs 2 models, one-sided, per-subject balanced "
                                  "accuracy")


def test_the_printed_table_has_one_row_per_model_and_the_baselines(benchmark_run, capsys):
    text = report.format_benchmark(benchmark_run[0])
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    # the means table has every model and baseline; the tests table every model but the reference
    times = {"GBV-Net (bio, 40 channels)": 1, "EEGNet (bio, 32 channels)": 2, "ShallowFBCSPNet (bio, 32 channels)": 2,
             "majority baseline": 1, "band-power + logistic regression": 1}
    assert {title: sum(row.startswith(f"| {title} |") for row in rows) for title in times} == times
    assert "Holm over 2 tests" in text and "per-subject balanced accuracy" in text


def test_mlflow_has_the_benchmark_run_with_one_finished_evaluation_per_model(benchmark_run):
    document, _, _, uri, _ = benchmark_run
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("gbvnet-deap-benchmark").experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    parent = [r for r in runs if r.data.tags.get("kind") == "benchmark"]
    assert [r.info.run_id for r in parent] == [document["mlflow_run_id"]] and parent[0].info.status == "FINISHED"
    children = {r.data.tags["model"] + ":" + r.data.tags["modality"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == document["mlflow_run_id"]}
    assert sorted(children) == ["eegnet:bio", "gbvnet:bio", "shallow:bio"]
    for child in children.values():
        assert child.info.status == "FINISHED" and child.data.metrics["n_folds"] == 4
        folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == child.info.run_id]
        assert sorted(r.info.run_name for r in folds) == [f"subject-{s}" for s in range(1, 5)]  # no duplicates
    assert children["eegnet:bio"].info.run_name.startswith("loso-eegnet-bio-")


def test_resume_finishes_the_logging_without_training_again(benchmark_run):
    document, first, trained, _, out = benchmark_run
    assert len(trained) == 3 * CORPUS["subjects"]
    again = {str(p): p.read_text() for p in (out / "ray").glob("eval-benchmark-deap-*/*/result.json")}
    assert again == trained  # no fold trained again
    assert document["models"]["eegnet"]["per_subject"] == first["models"]["eegnet"]["per_subject"]
    assert document["mlflow_run_id"] == first["mlflow_run_id"]


def test_report_lays_out_finished_benchmarks_as_the_command_prints_them(benchmark_run):
    document, _, _, uri, _ = benchmark_run
    text = report.main(["--benchmark", "--experiment", "gbvnet-deap-benchmark", "--tracking-uri", uri])
    assert report.format_benchmark(document).split("\n\nMLflow run")[0] in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--models", "eegnet:face"], "model 'eegnet' takes modality bio, not 'face'"),
    (["--models", "gbvnet:bio", "eegnet", "--reference", "shallow"], "--reference 'shallow' is not among --models"),
    (["--models", "eegnet", "eegnet"], "--models names a model twice"),
])
def test_a_benchmark_it_cannot_run_is_refused_before_ray_starts(argv, message, bench_cache, tmp_path, capsys):
    with pytest.raises((SystemExit, ValueError), match=message):
        benchmark.main(["--dataset", "deap", "--cache", str(bench_cache), "--tracking-uri", store_uri(tmp_path),
                        *argv])


@pytest.fixture(scope="module")
def searched_run(ray_session, bench_cache, tmp_path_factory):
    """Two models tuned per outer fold by the same nested search budget, on the outer folds testing subjects 1 and
    2 (each searched on the other three subjects)."""
    out = tmp_path_factory.mktemp("benchmark-searched")
    uri = store_uri(out)
    return benchmark.main(["--dataset", "deap", "--cache", str(bench_cache), "--preset", "smoke", "--models",
                           "gbvnet:bio", "eegnet", "--search", "2", "--search-epochs", "1", "--epochs", "1",
                           "--test-subjects", *SEARCHED, "--batch-size", "8", "--quiet", "--tracking-uri", uri,
                           "--storage", str(out / "ray")]), uri


def test_search_gives_every_model_the_same_nested_budget_in_its_own_space(searched_run):
    document, uri = searched_run
    assert document["search"]["trials"] == 2 and "nested search of 2 trials" in report.benchmark_tables(document)[0][0]
    for label, doc in document["models"].items():
        nested = doc["nested"]
        assert [row["trials"] for row in nested["folds"]] == [2] * len(SEARCHED)
        searched = set(nested["searched"])
        if label == "eegnet":  # its own arguments, none of GBV-Net's sections
            assert {"model.net.F1", "model.net.drop_prob"} <= searched and "model.fusion.dropout" not in searched
        else:
            assert "model.bio.tcn_kernel" in searched and not any(k.startswith("model.net.") for k in searched)
    client = MlflowClient(uri)
    children = client.search_runs([client.get_experiment_by_name("gbvnet-deap-benchmark").experiment_id],
                                  f"tags.benchmark_run = '{document['mlflow_run_id']}'")
    assert sorted((r.data.tags["model"], r.data.tags["nested"], r.info.status) for r in children) == [
        ("eegnet", "true", "FINISHED"), ("gbvnet", "true", "FINISHED")]
    assert set(document["comparisons"]) == {"eegnet"}
