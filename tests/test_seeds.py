"""``--seeds``: an evaluation repeated per seed in one pool of folds, each subject's scores averaged over the seeds
before the statistics, one MLflow child evaluation per seed (real Ray Tune + Ray Train + MLflow on a tiny cache)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gbvnet.data.cache import open_cache
from gbvnet.evaluation import engine, gap, loso, report, run, seeds
from tests.conftest import SMALL_DEAP, store_uri
from tests.test_gap import SIGNATURE

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def tiny_cache(prepared_cache):
    """:data:`SMALL_DEAP` (3 subjects x 3 trials, bio only) prepared."""
    return prepared_cache("deap", SMALL_DEAP, face=False, baseline_norm=True)


@dataclass
class Seeded:
    document: dict  # --output of the resumed run
    printed: str  # what the resumed run printed
    first: dict  # --output of the first attempt, whose final MLflow logging failed
    statuses: list[tuple[str, str]]  # (run name, status) after the first attempt
    trained: dict[str, str]  # result.json path -> text after the first attempt
    uri: str
    out: object  # the module's folder (Ray storage under out / "ray")


@pytest.fixture(scope="module")  # its tests are slow: 9 folds, trained once for the module
def seeded(ray_session, tiny_cache, tmp_path_factory):
    """``evaluation.loso --seeds 0 1 2`` (1 epoch), whose final MLflow logging fails once, then ``--resume``."""
    out = tmp_path_factory.mktemp("seeds")
    uri = store_uri(out)
    args = ["--dataset", "deap", "--cache", str(tiny_cache), "--preset", "smoke", "--modality", "bio", "--epochs",
            "1", "--batch-size", "16", "--quiet", "--seeds", *map(str, SEEDS), "--tracking-uri", uri,
            "--storage", str(out / "ray"), "--output", str(out / "seeds.json")]

    def down(*args, **kwargs):
        raise ConnectionError("tracking server down")

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()):
        mp.setattr(engine, "log_results", down)
        with pytest.raises(SystemExit, match="tracking server down.*--resume"):  # one line
            loso.main(args)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gbvnet-deap-loso").experiment_id], max_results=1000)
    first = json.loads((out / "seeds.json").read_text())
    trained = {str(p): p.read_text() for p in (out / "ray").glob("eval-loso-deap-*/*/result.json")}
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        document = loso.main([*args, "--resume"])
    return Seeded(document, stdout.getvalue(), first, sorted((r.info.run_name, r.info.status) for r in runs),
                  trained, uri, out)


@pytest.mark.slow
def test_every_seed_is_the_whole_protocol_in_one_pool(seeded):
    doc = seeded.document
    assert doc["seeds"] == list(SEEDS) and sorted(doc["per_seed"]) == ["0", "1", "2"]
    for d in doc["per_seed"].values():
        assert [f["fold"] for f in d["folds"]] == ["subject-1", "subject-2", "subject-3"]
    # LOSO's validation subjects are drawn per seed: the seeds' folds differ (the rows each verdict was given on)
    rows = [[c["rows"] for c in d["audit"]["fold_checks"].values()] for d in doc["per_seed"].values()]
    assert len({tuple(r) for r in rows}) > 1
    [pool] = list((seeded.out / "ray").glob("eval-loso-deap-*"))  # one Tune experiment for the 9 folds
    assert len(list(pool.glob("*/result.json"))) == 9 and len(seeded.trained) == 9
    assert doc["aggregate"]["n_folds"] == 9 and doc["aggregate"]["n_subjects"] == 3


@pytest.mark.slow
def test_per_subject_scores_are_averaged_over_seeds_before_the_statistics(seeded):
    """One score per subject (the mean of its seeds' scores): the mean ± sd and the tests are over 3 subjects,
    not 9 subject x seed values; the spread over seeds is reported beside."""
    doc = seeded.document
    by_seed = {s: {r["subject"]: r for r in d["per_subject"]} for s, d in doc["per_seed"].items()}
    assert [r["subject"] for r in doc["per_subject"]] == [1, 2, 3]
    for row in doc["per_subject"]:
        for m in ("accuracy", "balanced_accuracy", "macro_f1"):
            values = [by_seed[s][row["subject"]][m] for s in ("0", "1", "2")]
            assert row[m] == pytest.approx(np.nanmean(values))
            assert row["seed_scores"][m] == values
            assert row[f"{m}_seed_sd"] == pytest.approx(np.std(values, ddof=1))
    agg = doc["aggregate"]
    averaged = [r["accuracy"] for r in doc["per_subject"]]
    assert agg["test_accuracy_mean"] == pytest.approx(np.mean(averaged))
    assert agg["test_accuracy_std"] == pytest.approx(np.std(averaged, ddof=1))
    assert agg["test_accuracy_n"] == 3
    means = [d["aggregate"]["test_accuracy_mean"] for d in doc["per_seed"].values()]
    assert doc["seed_means"]["accuracy"] == means
    assert agg["test_accuracy_seed_sd"] == pytest.approx(np.std(means, ddof=1))
    stratified = {s: [r["accuracy"] for r in d["baselines"]["stratified"]["per_subject"]]
                  for s, d in doc["per_seed"].items()}  # the baselines are averaged over seeds the same way
    assert [r["accuracy"] for r in doc["baselines"]["stratified"]["per_subject"]] == pytest.approx(
        np.mean(list(stratified.values()), axis=0))
    assert doc["comparisons"]["majority"]["n_subjects"] == 3
    printed = seeded.printed
    assert "seeds 0 1 2: each subject's scores were averaged over the 3 seeds" in printed
    assert re.search(r"^\s+1(\s+\d\.\d{3}){5}\s*$", printed, re.M)  # subject 1: 3 seeds, mean, sd
    assert "(one child evaluation per seed: seed 0 " in printed


@pytest.mark.slow
def test_mlflow_parent_with_one_child_evaluation_per_seed(seeded):
    doc, client = seeded.document, MlflowClient(seeded.uri)
    parent = client.get_run(doc["mlflow_run_id"])
    assert parent.data.tags["seeds"] == "0 1 2" and parent.data.params["seed"] == "0 1 2"
    assert parent.data.metrics["test_accuracy_mean"] == pytest.approx(doc["aggregate"]["test_accuracy_mean"])
    assert parent.data.metrics["test_accuracy_seed_sd"] == pytest.approx(doc["aggregate"]["test_accuracy_seed_sd"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    children = {r.data.params["seed"]: r for r in children}
    assert sorted(children) == ["0", "1", "2"]
    for seed, child in children.items():
        assert child.info.run_id == doc["per_seed"][seed]["mlflow_run_id"]
        assert child.data.tags["seeds"] == f"{seed} (one of 0 1 2)" and child.info.status == "FINISHED"
        assert child.data.metrics["test_accuracy_mean"] == pytest.approx(
            doc["per_seed"][seed]["aggregate"]["test_accuracy_mean"])
        folds = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{child.info.run_id}'")
        assert sorted(r.info.run_name for r in folds) == ["subject-1", "subject-2", "subject-3"]
    text = report.main(["--experiment", "gbvnet-deap-loso", "--tracking-uri", seeded.uri])
    assert "preset smoke (untuned), seeds 0 1 2 |" in text  # the parent
    assert "preset smoke (untuned), seeds 1 (one of 0 1 2) |" in text  # a child


@pytest.mark.slow
def test_a_failed_final_logging_loses_nothing_and_resume_trains_nothing_again(seeded):
    assert json.dumps(seeded.first["per_subject"]) == json.dumps(seeded.document["per_subject"])  # NaN alike
    assert seeded.first["mlflow_run_id"] == seeded.document["mlflow_run_id"]
    folds = [status for name, status in seeded.statuses if name.startswith("subject-")]
    assert folds == ["FINISHED"] * 9  # each logged under its seed's evaluation as it finished
    assert [s for n, s in seeded.statuses if not n.startswith("subject-")] == ["FAILED"] * 4  # parent, 3 seeds
    assert {str(p): p.read_text() for p in (seeded.out / "ray").glob("eval-loso-deap-*/*/result.json")} == \
        seeded.trained
    assert (seeded.out / "seeds.json").read_text() == json.dumps(seeded.document, indent=2)
    assert not list((seeded.out / "ray").glob("**/checkpoint_*"))


def test_one_seed_is_seed_and_seeds_are_refused_where_they_do_not_apply(tiny_cache, capsys):
    """``--seeds 5`` is ``--seed 5``; a seed named twice, ``--seed`` beside ``--seeds`` and ``--seeds`` on a nested
    evaluation are one line each, before Ray starts."""
    parser = run.build_parser()
    base = ["--protocol", "loso", "--dataset", "deap", "--cache", str(tiny_cache), "--preset", "smoke",
            "--modality", "bio"]
    one, seed = (parser.parse_args([*base, *extra]) for extra in (["--seeds", "5"], ["--seed", "5"]))
    specs = [run.spec_from_args(a, "loso", run.protocol_arguments(a, "loso")) for a in (one, seed)]
    assert specs[0] == specs[1] and specs[0].seeds == () and specs[0].train.seed == 5
    assert specs[0].protocol_args["seed"] == 5
    for extra, message in ((["--seeds", "1", "1"], "--seeds 1 1 names a seed twice"),
                           (["--seed", "3", "--seeds", "1", "2"], "--seed 3 and --seeds 1 2: give one of them")):
        with pytest.raises(SystemExit):
            run.main([*base, *extra])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit,
                       match=r"^error: --seeds repeats a plain evaluation; a nested one \(--search-trials 4\)"):
        loso.main([*base[2:], "--seeds", "0", "1", "--search-trials", "4"])


def test_a_seeded_gap_plans_each_seed_as_its_own_arms(prepared_cache):
    """``evaluation.gap --seeds``: three arms per seed, fold names and run keys carrying the seed, so a seeded gap's
    evaluations are never taken for a one-seed gap's with --resume."""
    cache = prepared_cache("deap", SIGNATURE, face=False, baseline_norm=True)  # test_gap's: 4 trials, k=2
    parser = run.build_parser()
    args = parser.parse_args(["--protocol", "loso", "--dataset", "deap", "--cache", str(cache), "--preset",
                              "smoke", "--modality", "bio", "--seeds", "0", "1"])
    spec = run.spec_from_args(args, "gap", {})
    index = open_cache(str(cache)).index()
    one = gap.plan(gap.arm_specs(seeds.seed_spec(spec, 0), 2, "subjects"), index)
    seeded = {s: gap.plan(gap.arm_specs(seeds.seed_spec(spec, s), 2, "subjects"), index, seeds=spec.seeds)
              for s in spec.seeds}
    assert [a.label for a in seeded[1].values()] == [f"seed1-{p}" for p in gap.ARMS]
    assert seeded[1]["loso"].names[0] == "seed1-loso-subject-1" and one["loso"].names[0] == "loso-subject-1"
    keys = {a.key(index.manifest_hash) for arms in seeded.values() for a in arms.values()}
    assert len(keys) == 6 and not keys & {a.key(index.manifest_hash) for a in one.values()}
    assert {a.spec.train.seed for a in seeded[1].values()} == {1}
