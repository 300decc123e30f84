"""Ctrl-C and SIGTERM: a Tune run stops with its state saved and says so in one line naming the signal (Tune's own
lines left out); the signal handlers in place before it are restored, and an evaluation run in a test session's
process stops the session (not just its test) on Ctrl-C; no Ray process is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from ray import tune

from gbvnet.tracking import PROJECT
from gbvnet.train.launch import Interrupted, run_tuner


def descendants(pid: int) -> list[psutil.Process]:
    """The processes ``pid`` has started (recursively): what must be gone after it stops."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def assert_gone(processes: list[psutil.Process], timeout: float = 15) -> None:
    """Every one of ``processes`` (started by a command under test, never others) has ended."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    assert not alive, [(p.pid, p.name()) for p in alive]


def test_sigterm_stops_a_tune_run_and_restores_the_handlers(ray_session, tmp_path):
    """SIGTERM during a Tune run (what a scheduler sends at its time limit): the run stops with its state saved,
    :class:`Interrupted` says how many trials finished and carries exit code 143; the handlers of SIGINT, SIGTERM and
    SIGUSR1 are the ones in place before (Tune's own would otherwise outlive the run)."""
    driver = os.getpid()

    def trainable(config):
        if config["i"] == 1:
            os.kill(driver, signal.SIGTERM)
        for step in range(600):
            tune.report({"step": step, "done": False})
            time.sleep(0.1)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    started = time.monotonic()
    with pytest.raises(Interrupted) as stopped:
        run_tuner(tune.with_resources(trainable, {"cpu": 0.5}), "sigterm", str(tmp_path), resume=False,
                  param_space={"i": tune.grid_search([0, 1, 2])},
                  tune_config=tune.TuneConfig(max_concurrent_trials=2), callbacks=[], max_failures=0, total=3)
    assert time.monotonic() - started < 60
    assert stopped.value.exit_code == 143
    assert str(stopped.value) == "interrupted by SIGTERM: 0 of 3 trials finished; --resume continues"
    assert {s: signal.getsignal(s) for s in before} == before
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    assert tune.Tuner.can_restore(str(tmp_path / "sigterm"))  # the state Tune saved: --resume continues


SESSION = '''
import json, os, pathlib

import ray
from ray import tune

from gbvnet.evaluation import loso
from gbvnet.train.launch import run_tuner


def test_a_tune_run(tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    grid = run_tuner(tune.with_resources(lambda config: tune.report({"x": 1}), {"cpu": 1}), "one", str(tmp_path),
                     resume=False, param_space={}, tune_config=tune.TuneConfig(), callbacks=[], max_failures=0)
    assert grid.num_terminated == 1


def test_an_evaluation_in_this_process():
    loso.main(json.loads(os.environ["EVALUATION"]))


def test_never_reached():
    pathlib.Path(os.environ["REACHED"]).touch()
'''


@pytest.mark.slow
def test_ctrl_c_stops_a_test_session_during_an_in_process_evaluation(mahnob_cache, tmp_path):
    """A pytest sub-run whose first test ran a Tune run and whose second runs an evaluation in its own process
    (``loso.main``) stops within 60 s of one Ctrl-C (SIGINT) while that evaluation trains: one line naming the
    signal, the third test never runs (a ``SystemExit`` would fail one test and go on), no process it started
    is left."""
    from tests.conftest import store_uri

    (tmp_path / "test_session.py").write_text(textwrap.dedent(SESSION))
    ready, reached = tmp_path / "ray", tmp_path / "reached"
    evaluation = ["--dataset", "mahnob", "--cache", str(mahnob_cache), "--preset", "smoke", "--modality", "bio",
                  "--epochs", "500", "--patience", "500", "--test-subjects", "1", "--concurrent", "1", "--quiet",
                  "--tracking-uri", store_uri(tmp_path), "--storage", str(ready)]
    env = {**os.environ, "EVALUATION": json.dumps(evaluation), "REACHED": str(reached), "PYTHONPATH": str(PROJECT)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:timeout",
                             str(tmp_path / "test_session.py")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not ignored, as in a terminal
    try:
        deadline = time.monotonic() + 300
        while not list(ready.glob("eval-loso-*/*/result.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until the fold has trained an epoch
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)[0][-3000:]
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
    assert "InterruptExit: 130" in out and proc.returncode == 2, out[-3000:]  # pytest: interrupted
    assert "1 passed" in out and "1 failed" not in out and not reached.exists(), out[-3000:]
    assert "interrupted by SIGINT: 0 of 1 folds finished; --resume continues" in out, out[-3000:]
    assert "Tuner.restore" not in out and "Stop signal" not in out
    assert_gone(started)
