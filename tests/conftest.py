"""Shared fixtures: one local Ray instance per test session, synthetic corpora and prepared caches.

Tests take their corpora from :func:`corpus` and their prepared caches from :func:`prepared_cache` (the registry's
synthetic writers, the real readers and preparation); both write once per session and set of arguments.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gbvnet.data.registry import get_dataset

os.environ.setdefault("RAY_AUTH_MODE", "token")  # as on a real head node
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _session_ray_token() -> None:
    """Give the test session its own Ray auth token, so it never reads or writes the user's ``~/.ray``.

    ``ray start --head`` under token auth refuses to start without a token (only ``ray.init()`` makes one, in
    ``~/.ray``), so on a fresh machine the suite must bring its own. Every Ray process the tests start (local
    instances, ``ray start`` nodes, ``ray job submit`` clients) inherits ``RAY_AUTH_TOKEN_PATH``. A token the
    caller set explicitly is kept.
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    folder = tempfile.mkdtemp(prefix="gbvnet-test-ray-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "auth_token"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes: 256 random bits, hex
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


_session_ray_token()


def _session_home() -> None:
    """Nothing the tests run writes under the real HOME or reports usage: the local copies of remote caches
    (``GBVNET_LOCAL_CACHE``) and matplotlib's cache go to a temporary folder removed at exit; MLflow's telemetry
    and Ray's usage stats are off."""
    folder = tempfile.mkdtemp(prefix="gbvnet-test-home-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["GBVNET_LOCAL_CACHE"] = str(Path(folder) / "gbvnet")
    os.environ["MPLCONFIGDIR"] = str(Path(folder) / "matplotlib")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


_session_home()


def _session_train_polling() -> None:
    """Ray Train's controller polls its workers every 2 s and starts a preemption watcher actor (a process) per
    run: seconds of fixed cost per run, which a suite of many short runs pays many times over. The tests poll
    every 0.25 s and watch no preemption (a local instance is never preempted). Values set by the caller stay."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


_session_train_polling()


_STORE_TEMPLATE: list[Path] = []


def store_uri(folder: Path | str) -> str:
    """The URI of an empty MLflow tracking store at ``folder/mlflow.db``: a copy of one store created once per test
    session (MLflow's schema migration of a new SQLite file costs seconds; the tests of store creation itself,
    tests/test_tracking.py, use a new file)."""
    if not _STORE_TEMPLATE:
        from mlflow.tracking import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="gbvnet-test-store-")) / "mlflow.db"
        atexit.register(shutil.rmtree, template.parent, ignore_errors=True)
        MlflowClient(f"sqlite:///{template}").search_experiments()  # creates the tables
        _STORE_TEMPLATE.append(template)
    target = Path(folder) / "mlflow.db"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_STORE_TEMPLATE[0], target)
    return f"sqlite:///{target}"


def pytest_collection_modifyitems(items) -> None:
    """The markers of pyproject.toml that follow from fixtures: ``ray`` on every test using the session's Ray
    instance, ``slow`` on those reading the session's LOSO evaluations (the first one runs them)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "ray_session" in fixtures:
            item.add_marker(pytest.mark.ray)
        if "evaluations" in fixtures:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    from gbvnet.train.launch import init_ray

    init_ray(num_cpus=2, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


# Corpora and caches: written and prepared once per session and set of arguments, shared read-only (a test that
# damages a corpus works on a copy of it).
MAHNOB = {"subjects": 4, "trials": 6, "seed": 0, "duration": 12}  # 12 s stimuli, face videos
SMALL_DEAP = {"subjects": 3, "trials": 3, "seed": 3, "video": False}  # no face videos
SMALL_MAHNOB = {"subjects": 2, "trials": 2, "seed": 5, "duration": 6.0}  # 6 s stimuli, face videos


def _key(*args) -> str:
    return json.dumps(args, sort_keys=True, default=repr)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Callable[..., tuple[Path, dict]]:
    """``corpus(dataset, **size) -> (root, truth)``: a synthetic corpus in the dataset's official layout, written
    by the registry's writer (:meth:`gbvnet.data.registry.Dataset.write_synthetic`) with ``size``."""
    written: dict[str, tuple[Path, dict]] = {}

    def write(dataset: str, **size) -> tuple[Path, dict]:
        key = _key(dataset, size)
        if key not in written:
            root = tmp_path_factory.mktemp(dataset)
            written[key] = root, get_dataset(dataset).write_synthetic(root, **size)
        return written[key]

    return write


@pytest.fixture(scope="session")
def prepared_cache(corpus, tmp_path_factory) -> Callable[..., Path]:
    """``prepared_cache(dataset, size, edit=None, face=True, subjects=None, **config) -> cache``: the corpus
    ``corpus(dataset, **size)`` prepared with the dataset's defaults and the ``config`` overrides (``face`` and
    ``subjects`` as :func:`gbvnet.prepare.prepare_dataset` takes them); ``edit(root)`` first changes a copy of the
    corpus (a partial download, a damaged file)."""
    from gbvnet.prepare import prepare_dataset

    prepared: dict[str, Path] = {}

    def prepare(dataset: str, size: dict, edit: Callable[[Path], None] | None = None, face: bool = True,
                subjects: list[int] | None = None, **config) -> Path:
        key = _key(dataset, size, edit, face, subjects, config)
        if key not in prepared:
            root = corpus(dataset, **size)[0]
            if edit is not None:
                root = shutil.copytree(root, tmp_path_factory.mktemp(f"{dataset}_edited") / dataset)
                edit(root)
            cache = tmp_path_factory.mktemp(f"{dataset}_cache")
            prepare_dataset(dataset, root, str(cache), get_dataset(dataset).prepare_config(**config), face=face,
                            subjects=subjects, progress=False)
            prepared[key] = cache
        return prepared[key]

    return prepare


@pytest.fixture(scope="session")
def mahnob_cache(prepared_cache) -> Path:
    """:data:`MAHNOB` prepared with faces: 3 s windows, 4 frames of 64 x 64."""
    return prepared_cache("mahnob", MAHNOB, frames=4, face_size=64)


@pytest.fixture(scope="session")
def small_deap_corpus(corpus) -> Path:
    """:data:`SMALL_DEAP`: 3 subjects x 3 trials in the official DEAP layout, without face videos."""
    return corpus("deap", **SMALL_DEAP)[0]


@pytest.fixture(scope="session")
def small_mahnob_corpus(corpus) -> Path:
    """:data:`SMALL_MAHNOB`: 2 subjects x 2 sessions in the official MAHNOB-HCI layout: 6 s stimuli, face videos."""
    return corpus("mahnob", **SMALL_MAHNOB)[0]


@pytest.fixture(scope="session")
def small_mahnob_cache(prepared_cache) -> Path:
    """``small_mahnob_corpus`` prepared with faces: 3 s windows, 2 frames of 32 x 32."""
    return prepared_cache("mahnob", SMALL_MAHNOB, frames=2, face_size=32)


@dataclass
class Evaluations:
    uri: str  # the MLflow tracking URI
    docs: dict[str, dict]  # target -> the evaluation's --output document
    printed: dict[str, str]  # target -> what it printed
    cache: Path
    out: Path  # --output files and Ray storage (out / "ray")
    subjects: int = 6  # the fewest for which a one-sided Wilcoxon test, Holm-corrected for 3 baselines, reaches p<0.05


@pytest.fixture(scope="session")
def evaluations(ray_session, prepared_cache, tmp_path_factory) -> Evaluations:
    """LOSO bio runs, computed once and shared by the evaluation and report tests: valence on every subject and
    arousal on subjects 1 and 2 (for 2 epochs: it feeds tests of how numbers are shown, not of their size; with
    --log-models, each fold's model logged), in one MLflow database.

    The corpus is DEAP-format, bio only, with a clean signal and per-subject offsets that the pre-stimulus
    baseline normalisation removes, so the model should beat the majority baseline on every subject.
    """
    from gbvnet.evaluation import loso

    cache = prepared_cache("deap", {"subjects": Evaluations.subjects, "trials": 8, "seed": 3, "label_noise": 0,
                                    "video": False}, face=False, baseline_norm=True)
    out = tmp_path_factory.mktemp("evaluations")
    uri = store_uri(out)
    docs, printed = {}, {}
    for target, extra in (("valence", ["--epochs", "5"]), ("arousal", ["--epochs", "2", "--test-subjects", "1", "2",
                                                                        "--log-models"])):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            docs[target] = loso.main(["--dataset", "deap", "--cache", str(cache), "--preset", "smoke", "--modality",
                                      "bio", "--target", target, "--lr", "2e-3", "--tracking-uri", uri,
                                      "--storage", str(out / "ray"), "--output", str(out / f"{target}.json"), *extra])
        printed[target] = stdout.getvalue()
    return Evaluations(uri, docs, printed, cache, out)
