"""The model that leaves: final training on every subject of a cache, logged and registered in MLflow
(gbvnet.train --all-subjects --register), loaded with mlflow.pyfunc, and gbvnet.predict on a recording written
after training, with its refusals of data the model was not trained for; a comparison network reading some of the
cache's channels (EEGNet: the 32 EEG electrodes of 40); each fold's model of an evaluation (--log-models).

One model (bio, smoke size, a DEAP-layout corpus with a clean signal) is trained once for the module and shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch
from mlflow import MlflowClient
from mlflow.models import Model

from gbvnet.config import TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.data.registry import get_dataset
from gbvnet.data.transform import BatchTransform
from gbvnet.data.window_dataset import WindowDataset, fit_normalizer
from gbvnet.folds.protocols import usable_rows
from gbvnet.models import build_model
from gbvnet.predict import cli as predict
from gbvnet.predict.export import SPEC_FILE, ModelMismatch, mlflow_store
from gbvnet.tracking import TRIAL_TAG
from gbvnet.train import cli as train
from gbvnet.train.loop import channel_index, fit_model_to_cache, load_state, make_job
from gbvnet.train.metrics import confusion
from tests.conftest import store_uri

# the LOSO evaluations' corpus (tests/conftest.py): a clean signal that per-trial baseline normalisation makes
# learnable across subjects; the model trains on its subjects 1-4
CORPUS = {"subjects": 6, "trials": 8, "seed": 3, "label_noise": 0, "video": False}
NAME = "gbvnet-deap-valence"
EPOCHS = 6


@dataclass
class Final:
    cache: Path
    uri: str
    out: Path
    result: dict  # what train.main returned
    printed: str

    @property
    def model(self) -> str:
        return f"models:/{NAME}@champion"


@pytest.fixture(scope="module", autouse=True)
def fresh_ray_after(ray_session):
    """The Ray Train runs of this module (gbvnet.train in this process) leave Ray Train's own actors in the
    session's Ray (its autoscaling coordinator); in full test sessions the next Tune run in the same instance then
    waited forever. The tests after this module get a fresh local instance."""
    from gbvnet.train.launch import init_ray

    yield
    ray_session.shutdown()
    init_ray(num_cpus=2, log_to_driver=False, configure_logging=False)


@pytest.fixture(scope="module")
def final(ray_session, prepared_cache, tmp_path_factory) -> Final:
    cache = prepared_cache("deap", CORPUS, face=False, subjects=[1, 2, 3, 4], baseline_norm=True)
    out = tmp_path_factory.mktemp("final")
    uri = store_uri(out)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = train.main(["--cache", str(cache), "--preset", "smoke", "--modality", "bio", "--all-subjects",
                             "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--lr", "2e-3", "--tracking-uri", uri, "--storage",
                             str(out / "ray"), "--name", "final", "--register", NAME, "--alias", "champion"])
    return Final(cache, uri, out, result, printed.getvalue())


def run_predict(final: Final, *args: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        predict.main(["--model-uri", final.model, "--tracking-uri", final.uri, *args])
    return printed.getvalue()


def refusal(final: Final, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        run_predict(final, *args)
    assert isinstance(exc.value.code, str) and "\n" not in exc.value.code, exc.value.code
    return exc.value.code


@pytest.mark.slow
def test_final_training_logs_a_registered_model(final):
    client = MlflowClient(final.uri)
    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == "1" and version.run_id == final.result["mlflow_run_id"]
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["fold"] == "all-subjects"
    trained = sorted(json.loads(run.data.params["train_subjects"]) + json.loads(run.data.params["val_subjects"]))
    assert trained == [1, 2, 3, 4] and json.loads(run.data.params["val_subjects"])  # early stopping held some out
    manifest_hash = open_cache(str(final.cache)).index().manifest_hash
    assert run.inputs.dataset_inputs[0].dataset.digest == manifest_hash
    curve = client.get_metric_history(run.info.run_id, "val_macro_f1")
    assert [m.step for m in curve] == list(range(1, final.result["epoch"] + 1))  # one point per epoch
    with mlflow_store(final.uri):
        folder = Path(mlflow.artifacts.download_artifacts(final.model))
    spec = json.loads((folder / "artifacts" / SPEC_FILE).read_text())
    assert spec["subjects"] == [1, 2, 3, 4] and spec["cache_manifest_hash"] == manifest_hash
    assert spec["prepare"]["baseline_norm"] and spec["channels"][:2] == ["Fp1", "AF3"] and spec["target"] == "valence"
    signature = Model.load(folder).signature
    assert [s.name for s in signature.inputs.inputs] == ["bio"] and signature.inputs.inputs[0].shape == (-1, 40, 384)
    assert (folder / "serving_input_example.json").is_file()  # what `mlflow models serve` documents as input
    assert f"registered {NAME} version 1" in final.printed


@pytest.mark.slow
def test_loaded_model_gives_the_trained_networks_probabilities(final):
    """mlflow.pyfunc.load_model's probabilities are those of the network trained in the Ray run (its best epoch's
    weights from the run's checkpoint, the training rows' normaliser) on the same windows."""
    cache = open_cache(str(final.cache))
    run = MlflowClient(final.uri).get_run(final.result["mlflow_run_id"])
    rows = np.flatnonzero(np.isin(cache.index().subject, json.loads(run.data.params["train_subjects"])))
    checkpoint = max(p for p in (final.out / "ray" / "final").glob("checkpoint_*") if p.is_dir())
    import ray.train

    cfg = fit_model_to_cache(model_preset("smoke", modality="bio"), cache.manifest)
    network = build_model(cfg)
    network.load_state_dict(load_state(ray.train.Checkpoint.from_directory(str(checkpoint)))["best_model"])
    network.eval()
    transform = BatchTransform("bio", torch.device("cpu"), fit_normalizer(cache, rows), channel_index(cfg, cache.manifest))
    windows = WindowDataset(cache, modality="bio").batch(np.arange(0, len(cache.index().subject), 7))["bio"]
    with torch.no_grad():
        expected = torch.softmax(network(**transform({"bio": windows}))["logits"], dim=1).numpy()
    with mlflow_store(final.uri):
        loaded = mlflow.pyfunc.load_model(final.model)
    got = loaded.predict({"bio": windows.numpy()})
    assert got.shape == expected.shape == (len(windows), 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_predict_on_a_subject_written_after_training(final, tmp_path):
    """A new person (another seed of the writer), in the official DEAP layout, read and prepared as the training data
    was: predictions for each window and trial, and with the recording's ratings an accuracy far above chance."""
    root = tmp_path / "new"
    get_dataset("deap").write_synthetic(root, subjects=1, trials=8, seed=101, label_noise=0, video=False)
    printed = run_predict(final, "--dataset", "deap", "--root", str(root), "--output", str(tmp_path / "out"))
    windows = pacsv.read_csv(tmp_path / "out" / "windows.csv")
    trials = pacsv.read_csv(tmp_path / "out" / "trials.csv")
    assert windows.num_rows == 8 * 20 and trials.num_rows == 8  # 60 s stimuli in 3 s windows
    p = windows.column("p_high").to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert np.mean(windows.column("correct").to_numpy()) >= 0.7, printed  # chance: 0.5
    assert "predicted 160 windows of 8 trials (subject 1)" in printed and "accuracy" in printed


def test_predict_refuses_a_model_that_does_not_exist(tmp_path):
    with pytest.raises(SystemExit) as exc:
        predict.main(["--model-uri", "models:/no-such-model@champion", "--tracking-uri", store_uri(tmp_path),
                      "--cache", str(tmp_path / "cache")])
    assert exc.value.code.startswith("error: --model-uri models:/no-such-model@champion: no such model in MLflow at ")


@pytest.mark.slow
def test_predict_refuses_a_recording_with_other_channels(final, small_mahnob_corpus, tmp_path):
    line = refusal(final, "--dataset", "mahnob", "--root", str(small_mahnob_corpus), "--output", str(tmp_path))
    assert "its channels are not the model's: it lacks" in line and "hEOG" in line and "EXG1" in line


@pytest.mark.slow
def test_predict_refuses_a_recording_below_the_models_rate(final, small_deap_corpus):
    """A model trained at 256 Hz (its spec says so) refuses DEAP's 128 Hz signals: they would be upsampled."""
    model = predict.load_model(final.model, final.uri)
    spec = dataclasses.replace(model.spec, prepare={**model.spec.prepare, "rate": 256.0})
    with pytest.raises(ModelMismatch, match=r"sampled at 128 Hz, below the 256 Hz the model was trained at"):
        predict.check_recording(spec, "deap", str(small_deap_corpus), 1, spec.prepare_config())


@pytest.mark.slow
def test_predict_refuses_a_cache_without_faces_for_a_face_model(final):
    model = predict.load_model(final.model, final.uri)
    spec = dataclasses.replace(model.spec, model={**model.spec.model, "modality": "facebio"})
    with pytest.raises(ModelMismatch, match=r"no face video .* the model \(facebio\) needs faces"):
        predict.check_cache(spec, open_cache(str(final.cache)))


@pytest.mark.slow
def test_predict_refuses_a_cache_prepared_with_other_options(final, prepared_cache):
    other = prepared_cache("deap", CORPUS, face=False, subjects=[5], baseline_norm=True, window=2.0, stride=2.0)
    line = refusal(final, "--cache", str(other))
    assert "prepared with window=2.0, stride=2.0; the model was trained on window=3.0, stride=3.0" in line


@pytest.mark.slow
def test_predict_refuses_a_model_of_an_older_format(final, tmp_path):
    with mlflow_store(final.uri):
        folder = Path(mlflow.artifacts.download_artifacts(final.model, dst_path=str(tmp_path / "old")))
    spec = folder / "artifacts" / SPEC_FILE
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "format_version": 0}))
    line = refusal(final, "--model-uri", str(folder), "--cache", str(final.cache))
    assert "logged by gbvnet model format 0" in line and "train and log it again with this gbvnet" in line


def test_epochs_from_an_evaluation_trains_every_subject_without_validation(evaluations):
    """--epochs-from: the median best epoch of the evaluation's folds, every subject trained, nothing held out."""
    doc = evaluations.docs["valence"]
    epochs = train.epochs_from(evaluations.uri, doc["mlflow_run_id"])
    assert epochs == int(np.ceil(np.median([f["best_epoch"] for f in doc["folds"]])))
    args = train.parse_args(["--cache", str(evaluations.cache), "--modality", "bio", "--all-subjects",
                             "--epochs-from", doc["mlflow_run_id"]])
    index = open_cache(str(evaluations.cache)).index()
    cfg = TrainConfig(epochs=epochs, patience=epochs)
    fold = train.plan_fold(args, index, model_preset("smoke", modality="bio"), cfg)
    assert fold.val.size == 0 and np.array_equal(fold.train, usable_rows(index, "bio"))
    make_job(str(evaluations.cache), model_preset("smoke", modality="bio"), cfg, fold)  # a fixed number of epochs
    with pytest.raises(ValueError, match="empty validation set"):
        make_job(str(evaluations.cache), model_preset("smoke", modality="bio"), TrainConfig(epochs=5, patience=2),
                 fold)


@pytest.mark.slow
def test_final_eegnet_reads_its_channels_through_pyfunc_and_predict(ray_session, prepared_cache, tmp_path):
    """A comparison network trained, logged and registered by gbvnet.train (--model eegnet: the 32 EEG electrodes of
    the cache's 40 channels): mlflow.pyfunc takes the cache's 40-channel windows and gives the probabilities of the
    trained module on its 32 channels; gbvnet.predict on the cache gives the same."""
    cache_path = prepared_cache("deap", CORPUS, face=False, subjects=[1, 2, 3, 4], baseline_norm=True)
    uri = store_uri(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        result = train.main(["--cache", str(cache_path), "--preset", "smoke", "--model", "eegnet", "--all-subjects",
                             "--epochs", "1", "--patience", "1", "--tracking-uri", uri, "--storage", str(tmp_path / "ray"),
                             "--name", "eegnet", "--register", "eegnet-deap", "--alias", "champion"])
    cache = open_cache(str(cache_path))
    cfg = fit_model_to_cache(model_preset("smoke", model="eegnet", modality="bio"), cache.manifest)
    assert len(cfg.channels) == 32 and len(cache.manifest.channels) == 40 and "GSR" not in cfg.channels
    run = MlflowClient(uri).get_run(result["mlflow_run_id"])
    rows = np.flatnonzero(np.isin(cache.index().subject, json.loads(run.data.params["train_subjects"])))
    checkpoint = max(p for p in (tmp_path / "ray" / "eegnet").glob("checkpoint_*") if p.is_dir())
    import ray.train

    network = build_model(cfg)
    network.load_state_dict(load_state(ray.train.Checkpoint.from_directory(str(checkpoint)))["best_model"])
    network.eval()
    transform = BatchTransform("bio", torch.device("cpu"), fit_normalizer(cache, rows), channel_index(cfg, cache.manifest))
    windows = WindowDataset(cache, modality="bio").batch(np.arange(len(cache.index().subject)))["bio"]
    with torch.no_grad():
        expected = torch.softmax(network(**transform({"bio": windows}))["logits"], dim=1).numpy()
    with mlflow_store(uri):
        loaded = mlflow.pyfunc.load_model("models:/eegnet-deap@champion")
        requirements = Path(mlflow.pyfunc.get_model_dependencies("models:/eegnet-deap@champion")).read_text()
    assert "braindecode==" in requirements  # what builds the network where the model is served
    assert loaded.metadata.signature.inputs.inputs[0].shape == (-1, 40, 384)  # the cache's windows go in
    assert loaded.unwrap_python_model().spec.model["channels"] == list(cfg.channels)
    np.testing.assert_allclose(loaded.predict({"bio": windows.numpy()}), expected, atol=1e-5)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        predicted = predict.main(["--model-uri", "models:/eegnet-deap@champion", "--tracking-uri", uri, "--cache",
                                  str(cache_path), "--output", str(tmp_path / "out")])
    np.testing.assert_allclose(predicted["windows"].column("p_high").to_numpy(), expected[:, 1], atol=1e-5)
    assert f"predicted {len(windows)} windows of 32 trials" in printed.getvalue()


def test_loso_log_models_logs_each_folds_model(evaluations):
    """evaluation.loso --log-models (the session's arousal evaluation): each fold's nested run holds a pyfunc model
    (its tag model_uri) whose predictions on the fold's test windows give the fold's test confusion matrix: the
    weights of the fold's best epoch, logged before its checkpoints were removed."""
    doc = evaluations.docs["arousal"]
    client = MlflowClient(evaluations.uri)
    parent = client.get_run(doc["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    runs = {r.data.tags[TRIAL_TAG]: r for r in children}
    cache = open_cache(str(evaluations.cache))
    index, labels = cache.index(), cache.index().labels("arousal")
    assert sorted(runs) == sorted(f["fold"] for f in doc["folds"]) and len(runs) == 2
    for fold in doc["folds"]:
        run = runs[fold["fold"]]
        with mlflow_store(evaluations.uri):
            model = mlflow.pyfunc.load_model(run.data.tags["model_uri"])
        assert model.metadata.run_id == run.info.run_id
        rows = np.flatnonzero(np.isin(index.subject, fold["test_subjects"]))
        p = model.predict({"bio": WindowDataset(cache, modality="bio").batch(rows)["bio"].numpy()})
        assert confusion(labels[rows], p.argmax(1)).tolist() == fold["confusion"], fold["fold"]
    assert not list((evaluations.out / "ray").glob("eval-loso-*/*/checkpoint_*"))  # removed once logged
    assert all("model_uri" not in r.data.tags for r in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{evaluations.docs['valence']['mlflow_run_id']}'"))
