"""What the MLflow UI shows of a run (read back through ``MlflowClient``, SQLite store, no Ray) and the plots."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from evaluation import plots
from evaluation.run import EvalSpec
from gbvnet.config import TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.tracking import KIND, KIND_TAG, PROJECT, Tracker, source_tags


@pytest.fixture
def uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # artifacts of a SQLite store go to ./runs/mlartifacts
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_experiments_open_on_their_runs(uri):
    client = MlflowClient(uri)
    Tracker(uri, "gbvnet-deap-loso", "k1", run_name="a", resume=False)
    assert client.get_experiment_by_name("gbvnet-deap-loso").tags[KIND_TAG] == KIND == "custom_model_development"
    old = client.create_experiment("made-by-an-older-version")  # no kind: tagged when used again
    mine = client.create_experiment("kept", tags={KIND_TAG: "finetuning"})  # a kind someone chose stays
    Tracker(uri, "made-by-an-older-version", "k2", run_name="b", resume=False)
    Tracker(uri, "kept", "k3", run_name="c", resume=False)
    assert client.get_experiment(old).tags[KIND_TAG] == KIND
    assert client.get_experiment(mine).tags[KIND_TAG] == "finetuning"


def test_parent_run_records_the_window_cache_as_its_dataset(uri, small_mahnob_cache):
    index = open_cache(str(small_mahnob_cache)).index()
    tracker = Tracker(uri, "gbvnet-mahnob-loso", "k", run_name="r", resume=False)
    tracker.log_cache(str(small_mahnob_cache), index, context="evaluation")
    tracker.log_cache(str(small_mahnob_cache), index, context="evaluation")  # again, as --resume does
    inputs = MlflowClient(uri).get_run(tracker.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.digest == index.manifest_hash
    assert dataset.name == small_mahnob_cache.name and dataset.source_type == "local"
    assert json.loads(dataset.source) == {"uri": str(small_mahnob_cache)}
    assert json.loads(dataset.profile) == {"num_rows": len(index.subject), "subjects": 2}
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "evaluation"}


def test_parent_run_carries_source_and_git_commit(uri, tmp_path):
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=PROJECT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the project is not a git checkout here")
    tracker = Tracker(uri, "gbvnet-mahnob-loso", "k", run_name="r", resume=False)
    tags = MlflowClient(uri).get_run(tracker.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert source_tags(str(PROJECT / "evaluation" / "loso.py"))["mlflow.source.name"] == "evaluation/loso.py"
    outside = source_tags("x.py", code=tmp_path)  # not a git checkout: no commit tag rather than a wrong one
    assert "mlflow.source.git.commit" not in outside and outside["mlflow.source.name"] == "x.py"


def test_different_configurations_get_different_run_names(uri, small_mahnob_cache):
    index = open_cache(str(small_mahnob_cache)).index()

    def spec(**train):
        return EvalSpec(protocol="loso", dataset="mahnob", cache=str(small_mahnob_cache), preset="smoke",
                        model=model_preset("smoke", modality="bio"), train=TrainConfig(**train))

    names = []
    for s in (spec(lr=1e-3), spec(lr=3e-4), spec(lr=1e-3, seed=1)):
        key = s.invocation_key(index.manifest_hash)
        names.append(MlflowClient(uri).get_run(Tracker(uri, "e", key, s.run_name(key), resume=False).run_id)
                     .info.run_name)
    assert len(set(names)) == 3
    assert all(name.startswith("loso-bio-gated-valence-smoke-") for name in names)


def test_plots_show_every_baseline_and_the_selection_metric():
    def summary(accuracies):
        return {"per_subject": [{"subject": s, "accuracy": a} for s, a in accuracies.items()]}

    fig = plots.per_subject_figure(summary({1: 0.8, 2: 0.6}), {"majority": summary({1: 0.5, 2: 0.5}),
                                                               "bandpower_logreg": summary({1: 0.7})})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model", "majority", "bandpower_logreg"]
    heights = [[bar.get_height() for bar in bars] for bars in ax.containers]
    assert heights[:2] == [[0.8, 0.6], [0.5, 0.5]]
    assert heights[2][0] == 0.7 and np.isnan(heights[2][1])  # a subject a baseline did not score: no bar

    history = [{"epoch": e, "train_loss": 1 / e, "val_f1": 0.9, "val_macro_f1": f} for e, f in ((1, .4), (2, .7))]
    curves = plots.learning_curves({"subject-1": history}).axes[1]
    assert curves.get_ylabel() == "validation macro-F1"
    assert list(curves.lines[0].get_ydata()) == [0.4, 0.7]  # macro-F1, not F1 of the high class
    assert list(curves.lines[1].get_xdata()) == [2]  # the selected epoch is marked


def test_commands_started_together_share_a_new_store(tmp_path):
    """Two processes opening the same new SQLite store at the same moment (as two evaluations started together
    do): both create their parent run in the one experiment; none fails in MLflow's schema migration."""
    import os
    import sys
    import time

    uri = f"sqlite:///{tmp_path}/runs/mlflow.db"
    go = tmp_path / "go"
    code = ("import sys, time, pathlib\nfrom gbvnet.tracking import Tracker\n"
            "pathlib.Path(sys.argv[2] + sys.argv[3]).touch()\n"
            "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.005)\n"
            "print(Tracker(sys.argv[1], 'gbvnet-deap-loso', sys.argv[3], run_name=sys.argv[3], resume=False).run_id)")
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(go), f"k{i}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 60
    while not all((tmp_path / f"gok{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.05)  # both have imported MLflow
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "gbvnet-deap-loso"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(out.strip() for out, _ in outputs)
