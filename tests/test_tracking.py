"""What the MLflow UI shows of a run (read back through ``MlflowClient``, SQLite store, no Ray) and the plots; where
artifacts go; trials stopped or failed are not FINISHED; a tracking server that stops answering costs seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gbvnet.config import TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.evaluation import plots
from gbvnet.evaluation.engine import EvalSpec
from gbvnet.tracking import (
    KIND,
    KIND_TAG,
    PROJECT,
    GuardedClient,
    Tracker,
    TrackingUnavailable,
    TrialLogger,
    source_tags,
)
from tests.conftest import store_uri


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def free_port() -> int:
    """A port nobody listens on (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    assert all(name.startswith("loso-gbvnet-bio-gated-valence-smoke-") for name in names)


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


def test_artifacts_live_beside_a_sqlite_store_wherever_the_command_runs(tmp_path, monkeypatch):
    """A new experiment of a SQLite store keeps its artifacts in ``mlartifacts`` beside the database, not in the
    folder the command runs from; an existing experiment keeps its own location."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = store_uri(tmp_path / "store")
    Tracker(uri, "new", "k", run_name="r", resume=False).log_json({"a": 1}, "audit.json")
    assert len(list((tmp_path / "store" / "mlartifacts").rglob("audit.json"))) == 1
    kept = tmp_path / "kept"
    MlflowClient(uri).create_experiment("old", artifact_location=kept.as_uri())
    Tracker(uri, "old", "k", run_name="r", resume=False).log_json({"a": 1}, "audit.json")
    assert len(list(kept.rglob("audit.json"))) == 1
    assert not any(elsewhere.iterdir())


def test_trials_stopped_or_failed_are_not_logged_finished(tmp_path):
    """A fold that ends without its test metrics (a cache prepared again stopped it) is KILLED, one that failed
    is FAILED; only a finished one is FINISHED, and only its checkpoints are removed."""
    tracker = Tracker(store_uri(tmp_path), "e", "k", run_name="r", resume=False)
    removed = []
    logger = TrialLogger(lambda trial: tracker, name=lambda trial: trial.config["name"], params=lambda trial: {},
                         then=lambda trial: removed.append(trial.config["name"]),
                         finished=lambda trial: "test_confusion" in trial.last_result)

    def trial(name: str, results: list[dict]) -> SimpleNamespace:
        folder = tmp_path / name
        if results:
            folder.mkdir()
            (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
        return SimpleNamespace(config={"name": name}, local_path=str(folder), last_result=(results or [{}])[-1])

    epoch = {"epoch": 1, "timestamp": 1000, "val_macro_f1": 0.5}
    logger.on_trial_complete(0, [], trial("tested", [{**epoch, "test_confusion": [[1, 0], [0, 1]]}]))
    logger.on_trial_complete(0, [], trial("stopped", [epoch]))
    logger.on_trial_error(0, [], trial("failed", []))
    assert {name: run.info.status for name, run in tracker.children().items()} == {
        "tested": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
    assert removed == ["tested"]


def test_a_lost_store_is_not_called_again_and_its_run_marked_once_it_answers(tmp_path, capsys):
    """The server stops answering (a port nobody listens on): the first call waits its few seconds, the
    following ones not at all; at the end the parent run is marked FAILED because the store answers again, and
    one line says what was not logged and the --resume that logs it."""
    uri = store_uri(tmp_path)
    tracker = Tracker(uri, "e", "k", run_name="r", resume=False)
    back, tracker.client = tracker.client, GuardedClient(uri, MlflowClient(f"http://127.0.0.1:{free_port()}"))
    history = [{"epoch": 1, "timestamp": 1000, "val_macro_f1": 0.5}]
    started = time.monotonic()
    assert tracker.log_child("subject-1", history) is None
    first = time.monotonic() - started
    assert tracker.log_child("subject-2", history) is None and tracker.log_metrics({"a": 1.0}) is None
    assert tracker.children() == {}
    assert first < 10 and time.monotonic() - started - first < 0.5, first  # one wait, then none
    tracker.client = back  # the server answers again
    with pytest.raises(TrackingUnavailable) as lost:
        tracker.finish()
    assert re.fullmatch(rf"MLflow at {re.escape(uri)} stopped answering at [0-9:]+ \(\[Errno 111\] Connection refused\): "
                        r"not logged: subject-1, subject-2 and the results of the run; the parent run is marked "
                        r"FAILED; once the server answers, run the same command with --resume to log the rest "
                        r"\(nothing is trained again\)", str(lost.value)), str(lost.value)
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FAILED"
    assert capsys.readouterr().err.count("stopped answering") == 1


@pytest.fixture
def tracking_server(tmp_path):
    """A real ``mlflow server`` on a free port, in its own process group (its store a copy of the session's empty
    one, its artifacts under ``tmp_path``): yields the process and its URI once it answers; the group is killed
    at the end."""
    import requests

    port, folder = free_port(), tmp_path / "server"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", store_uri(folder), "--artifacts-destination",
                             str(folder / "artifacts"), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        yield proc, uri
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers, the group this fixture started
        proc.wait()
        log.close()


@pytest.mark.slow
def test_a_tracking_server_killed_mid_run_costs_seconds(ray_session, mahnob_cache, tracking_server, tmp_path,
                                                        monkeypatch, capsys):
    """The tracking server dies once the first fold is logged: the folds go on, the table and --output (in a new
    folder, which it says it created) come as the folds end, and the command ends with one line naming what was
    not logged and the --resume that logs it, within a minute of training time after the kill (MLflow's default
    retries made it minutes per call). A full disk writing --output is one line naming it."""
    from gbvnet.evaluation import loso, run
    from gbvnet.tracking import trial_history, trial_times

    server, uri = tracking_server
    output = tmp_path / "new" / "out.json"
    args = ["--dataset", "mahnob", "--cache", str(mahnob_cache), "--preset", "smoke", "--modality", "bio",
            "--epochs", "3", "--test-subjects", "1", "2", "3", "--concurrent", "1", "--quiet", "--tracking-uri", uri,
            "--storage", str(tmp_path / "ray"), "--output", str(output)]
    killed: list[float] = []

    def kill_once_a_fold_is_logged():
        client = MlflowClient(uri)
        while not killed:
            try:
                ids = [e.experiment_id for e in client.search_experiments()]
                if ids and client.search_runs(ids, "attributes.status = 'FINISHED' and tags.`gbvnet.trial` != ''"):
                    os.killpg(server.pid, signal.SIGKILL)
                    killed.append(time.time())
            except Exception:  # noqa: BLE001 - the store not created yet
                pass
            time.sleep(0.2)

    threading.Thread(target=kill_once_a_fold_is_logged, daemon=True).start()
    with pytest.raises(SystemExit) as ended:
        loso.main(args)
    finished = time.time()
    assert killed, "no fold was logged"
    message = ended.value.code
    assert "\n" not in message and re.fullmatch(
        rf"error: MLflow at {re.escape(uri)} stopped answering at [0-9:]+ \(\[Errno 111\] Connection refused\): not logged: "
        r"(subject-2, )?subject-3 and the results of the run; the parent run is left RUNNING \(.*\); once the server "
        r"answers, run the same command with --resume to log the rest \(nothing is trained again\)", message), message
    printed = capsys.readouterr()
    assert f"wrote {output} (created the folder {output.parent})" in printed.out  # the table, then --output
    assert len(json.loads(output.read_text())["folds"]) == 3
    assert printed.err.count("stopped answering") == 1
    # what the dead server cost: the time from the kill to the end, less the training that went on after it
    spans = [trial_times(trial_history(str(p.parent))) for p in (tmp_path / "ray").glob("eval-loso-*/*/result.json")]
    training = sum(max(0.0, end / 1000 - max(start / 1000, killed[0])) for start, end in spans)
    print(f"after the kill: {finished - killed[0]:.1f} s, of which training {training:.1f} s")
    assert finished - killed[0] - training < 60

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "write_text", full_disk)
    document = json.loads(output.read_text())
    with pytest.raises(SystemExit) as ended:
        run.cli(loso.build_parser(), args, run=lambda args, spec, publish: publish(document))
    assert ended.value.code == f"error: --output {output}: [Errno 28] No space left on device"
