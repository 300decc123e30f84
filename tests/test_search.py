"""Hyper-parameter search: smoke search end to end, resume, seeded proposals (``ray job submit``: test_cluster_jobs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from gbvnet.data.cache import open_cache
from gbvnet.evaluation import loso
from gbvnet.search import cli as search
from gbvnet.search.space import search_space
from tests.conftest import store_uri


def search_args(cache, tmp_path, *extra):
    return ["--dataset", "mahnob", "--cache", str(cache), "--modality", "bio", "--space", "smoke",
            "--num-samples", "4", "--max-epochs", "2", "--search-subjects", "1", "2",
            "--storage", str(tmp_path / "ray"), "--tracking-uri", store_uri(tmp_path),
            "--output", str(tmp_path / "best.yaml"), *extra]


@pytest.mark.slow
def test_smoke_search_writes_a_config_that_loso_accepts(ray_session, mahnob_cache, tmp_path, capsys):
    doc = search.main(search_args(mahnob_cache, tmp_path))
    printed = capsys.readouterr().out
    assert printed.count(" started\n") == 4 and "[search " in printed  # progress of the 4 trials
    parent = MlflowClient(store_uri(tmp_path)).get_run(doc["search"]["mlflow_run_id"])
    assert parent.inputs.dataset_inputs[0].dataset.digest == doc["search"]["cache_manifest_hash"]
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best == json.loads(json.dumps(doc))
    assert best["search"]["subjects"] == [1, 2] and best["search"]["trials"] == 4
    assert best["search"]["sampler"].startswith("random search (4 trials") and "random search" in printed
    assert set(best["search"]["val_subjects"]) < {1, 2}  # validation subjects come from the search subjects
    assert best["model"]["bio"]["channels"] == 38  # fitted to the MAHNOB cache

    # --resume restores the search through the Tuner restore that evaluations use (tests/test_evaluation.py kills
    # one mid-run): no trial is added or trained again, and the MLflow run is the same
    results = {p: p.read_text() for p in (tmp_path / "ray").glob("search-*/*/result.json")}
    again = search.main(search_args(mahnob_cache, tmp_path, "--resume", "--quiet"))
    assert again["search"]["trials"] == 4 and again["search"]["mlflow_run_id"] == doc["search"]["mlflow_run_id"]
    assert {p: p.read_text() for p in (tmp_path / "ray").glob("search-*/*/result.json")} == results
    out = loso.main(["--dataset", "mahnob", "--cache", str(mahnob_cache), "--modality", "bio", "--config",
                     str(tmp_path / "best.yaml"), "--epochs", "1", "--test-subjects", "3", "4",
                     "--storage", str(tmp_path / "ray"), "--tracking-uri", store_uri(tmp_path)])
    assert [f["test_subjects"] for f in out["folds"]] == [[3], [4]]


def test_same_seed_proposes_same_first_configurations():
    def proposals(seed):
        alg = search.make_search_alg(seed, concurrent=3, budget=12)
        alg.set_search_properties(search.METRIC, "max", search_space("smoke"))
        return [alg.suggest(f"t{i}") for i in range(3)]

    assert proposals(5) == proposals(5)
    assert proposals(5) != proposals(6)


def test_the_space_samples_only_dimensions_that_can_change_the_model():
    """A bio-only GBV-Net has no face branch and no fusion module: no face key, no gate width (the head's dropout,
    model.fusion.dropout, stays); the gate's width only with a gated fusion; a comparison network none of GBV-Net's
    sections. What the searcher proposes is that space."""
    from gbvnet.config import model_preset
    from gbvnet.search.fold_search import FoldSearcher
    from gbvnet.search.space import WIDTH, model_space

    full = set(search_space("paper"))
    bio = set(model_space("paper", model_preset("paper", modality="bio")))
    assert not {k for k in bio if k.startswith("model.face.")} and "model.fusion.gate_hidden" not in bio
    assert {"model.fusion.dropout", WIDTH, "model.bio.tcn_kernel", "train.lr"} <= bio
    face = set(model_space("paper", model_preset("paper", modality="face")))
    assert not {k for k in face if k.startswith("model.bio.")} and "model.face.backbone" in face
    assert set(model_space("paper", model_preset("paper", modality="facebio"))) == full  # gated: everything
    concat = set(model_space("paper", model_preset("paper", modality="facebio", fusion="concat")))
    assert concat == full - {"model.fusion.gate_hidden"}
    eegnet = model_space("paper", model_preset("paper", model="eegnet", modality="bio"))
    assert set(eegnet) == {k for k in full if k.startswith("train.")} | {"model.net.F1", "model.net.D",
                                                                        "model.net.drop_prob"}
    searcher = FoldSearcher(model_space("smoke", model_preset("smoke", modality="bio")), folds=1, trials=3, seed=0,
                            compare_untuned=False)
    proposed = searcher.suggest("t0")
    assert not [k for k in proposed if k.startswith("model.face.") or k == "model.fusion.gate_hidden"]
    assert "model.bio.tcn_channels" in proposed


def test_a_search_below_tpes_start_up_is_named_random_search():
    """TPE samples its start-up trials at random: a third of the budget (at least 5). A budget that does not pass
    it is random search, built and named so; a larger one is TPE with that start-up."""
    import optuna

    from gbvnet.search.fold_search import FoldSearcher
    from gbvnet.search.space import MIN_STARTUP, sampler

    small, name = sampler(4, seed=0)
    assert isinstance(small, optuna.samplers.RandomSampler) and name.startswith("random search (4 trials")
    assert "TPE" not in name.split(";")[0]
    assert isinstance(sampler(MIN_STARTUP, seed=0)[0], optuna.samplers.RandomSampler)
    tpe, name = sampler(30, seed=0)
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 10
    assert name == "TPE (the first 10 of 30 trials random)"
    assert sampler(6, seed=0)[0]._n_startup_trials == MIN_STARTUP
    nested = FoldSearcher(search_space("smoke"), folds=2, trials=4, seed=0, compare_untuned=False)
    assert all(isinstance(f.study.sampler, optuna.samplers.RandomSampler) for f in nested.folds)
    spec = search.SearchSpec(dataset="deap", cache="c", model=None, train=search.TrainConfig(), num_samples=4)
    assert search.sampler_name(spec).startswith("random search (4 trials")


def without_videos_of_subject_4(root: Path) -> None:
    shutil.rmtree(root / "face_video" / "s04")


@pytest.fixture(scope="module")
def deap_partly_filmed(prepared_cache):
    """DEAP layout, 4 subjects x 3 trials, face videos for subjects 1-3 only (as the real DEAP: 1-22 of 32)."""
    return prepared_cache("deap", {"subjects": 4, "trials": 3, "seed": 3}, edit=without_videos_of_subject_4, frames=4,
                          face_size=64)


def deap_search_args(cache, tmp_path, *extra):
    return ["--dataset", "deap", "--cache", str(cache), "--space", "smoke", "--num-samples", "1",
            "--max-epochs", "1", "--storage", str(tmp_path / "ray"), "--tracking-uri", store_uri(tmp_path),
            "--output", str(tmp_path / "best.yaml"), *extra]


def test_search_stops_before_ray_when_too_few_search_subjects_have_faces(deap_partly_filmed, tmp_path, monkeypatch):
    monkeypatch.setattr(search, "init_ray", lambda **_: pytest.fail("Ray was started"))
    with pytest.raises(SystemExit, match=r"got \[3\]: search subjects \[4\] have no face frames .* subjects with "
                                         r"faces: \[1, 2, 3\]"):
        search.main(deap_search_args(deap_partly_filmed, tmp_path, "--search-subjects", "3", "4"))  # default facebio
    with pytest.raises(SystemExit, match="--face-checkpoint .*: no such file"):
        search.main(deap_search_args(deap_partly_filmed, tmp_path, "--face-checkpoint", str(tmp_path / "none.pth")))


def test_bio_ablation_on_face_rows_plans_exactly_the_face_runs_folds(deap_partly_filmed, tmp_path, monkeypatch):
    """``--rows face`` gives a bio run the folds of the face+bio run (same windows); plain bio uses subject 4 too.
    Checked on the folds the evaluation plans, stopped where it would start Ray."""
    from gbvnet.evaluation import engine

    class Planned(Exception):
        pass

    def stop(**_):
        raise Planned

    monkeypatch.setattr(engine, "init_ray", stop)
    planned: dict[str, list] = {}
    for name, extra in (("facebio", ["--modality", "facebio"]), ("bio on face rows", ["--modality", "bio", "--rows",
                                                                                      "face"]),
                        ("bio", ["--modality", "bio"])):
        monkeypatch.setattr(engine, "make_job", lambda cache, model, train, fold, name=name, **_:
                            planned.setdefault(name, []).append(fold.to_dict()))
        with pytest.raises(Planned):
            loso.main(["--dataset", "deap", "--cache", str(deap_partly_filmed), "--preset", "smoke", *extra])
    assert planned["bio on face rows"] == planned["facebio"] and len(planned["facebio"]) == 3
    assert len(planned["bio"]) == 4  # subject 4 (no video) is tested and trained on by plain bio


@pytest.mark.slow
def test_search_and_evaluation_on_deap_where_some_subjects_have_no_video(ray_session, deap_partly_filmed, tmp_path):
    """The default face+bio search finishes (it used to die in every trial on subject 4), records its provenance
    and the face weights; the evaluation of its config uses the same rows and logs what it used."""
    import timm
    import torch

    weights = tmp_path / "atto.pth"
    torch.save(timm.create_model("convnextv2_atto", num_classes=0).state_dict(), weights)
    with pytest.warns(UserWarning, match=r"search subjects \[4\] have no face frames"):
        doc = search.main(deap_search_args(deap_partly_filmed, tmp_path, "--search-subjects", "1", "2", "4",
                                           "--face-checkpoint", str(weights), "--log-models"))
    provenance = doc["search"]
    assert provenance["subjects"] == [1, 2] and provenance["excluded_subjects"] == [4]
    assert provenance["modality"] == "facebio" and provenance["label_threshold"] == 5.0
    assert provenance["face_weights"] == f"checkpoint:{weights}" and doc["model"]["face"]["checkpoint"] == str(weights)
    assert "patience" not in doc["train"] and "epochs" not in doc["train"]
    client = MlflowClient(store_uri(tmp_path))
    params = client.get_run(provenance["mlflow_run_id"]).data.params
    assert params["face_weights"] == f"checkpoint:{weights}" and params["label_threshold"] == "5.0"
    assert client.get_run(provenance["mlflow_run_id"]).outputs.model_outputs  # --log-models: the best trial's

    out = loso.main(["--dataset", "deap", "--cache", str(deap_partly_filmed), "--config", str(tmp_path / "best.yaml"),
                     "--epochs", "1", "--test-subjects", "3", "--storage", str(tmp_path / "ray"),
                     "--tracking-uri", store_uri(tmp_path)])
    assert [f["test_subjects"] for f in out["folds"]] == [[3]]
    assert out["audit"]["search"] == "passed; searched on deap (same target and cache)"
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.params["label_threshold"] == "5.0" and run.data.params["rows"] == "modality"
    assert run.data.params["face_weights"] == f"checkpoint:{weights}"
    assert run.data.params["protocol_args.validation"] == "subjects"
    assert run.data.tags["tested_subjects"] == "3" and len(run.data.tags["folds_digest"]) == 16
    folds = json.loads(open(client.download_artifacts(out["mlflow_run_id"], "folds.json")).read())
    index = open_cache(str(deap_partly_filmed)).index()
    used = np.concatenate([folds[0][p] for p in ("train", "val", "test")])
    assert set(index.subject[used]) == {1, 2, 3} and index.has_face_rows[used].all()  # subject 4: no faces
    assert len(set(index.subject[folds[0]["val"]])) == 1  # validation: a held-out training subject
