"""Screenshots of the MLflow UI for the README: an experiment as it opens (its runs table) and a parent run's plots.

    python docs/screenshots.py [--tracking-uri sqlite:///runs/mlflow.db] [--experiment gbvnet-mahnob-loso]
        [--out docs/images]

Starts ``mlflow server`` on a free local port against the tracking store, loads each page in headless Chromium
(``chromium --headless=new --screenshot``; Debian/Ubuntu: ``apt-get install chromium``), stops the server and writes
palette-quantised PNGs (tens of KB): ``mlflow-runs.png`` (the experiment's own URL, no tab chosen: what the UI
opens on), ``mlflow-per-subject.png`` and ``mlflow-learning-curves.png`` (artifacts of the newest finished parent
run). A helper for the documentation, not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient
from PIL import Image

from gbvnet.tracking import PARENT_TAG, tracking_uri

# MLflow 3.17's UI picks an experiment's view from its global "GenAI / Model training" switch (this URL parameter,
# else the browser's last choice, else GenAI), not from the experiment's mlflow.experimentKind tag.
WORKFLOW = "?workflowType=machine_learning"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the MLflow server did not answer at {url} within {timeout:.0f} s")


def screenshot(browser: str, url: str, out: Path, size: tuple[int, int]) -> None:
    """Load ``url`` headless (20 s of virtual time for the page's requests) and save a small PNG."""
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "raw.png"
        subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        "--virtual-time-budget=20000", f"--screenshot={raw}", url],
                       check=True, capture_output=True, timeout=180)
        Image.open(raw).convert("RGB").quantize(colors=64).save(out, optimize=True)
    print(f"{out} ({out.stat().st_size // 1024} KB) <- {url}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python docs/screenshots.py", description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=None, help="default: as the evaluations (sqlite runs/mlflow.db)")
    p.add_argument("--experiment", default="gbvnet-mahnob-loso")
    p.add_argument("--out", default=str(Path(__file__).with_name("images")))
    p.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = p.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment named {args.experiment!r} at {uri}")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` != '' and attributes.status = "
                              "'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"experiment {args.experiment!r} has no finished evaluation run")
    run_id = runs[0].info.run_id
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"{base}/health")
        page = f"{base}/#/experiments/{experiment.experiment_id}"
        screenshot(args.browser, f"{page}{WORKFLOW}", out / "mlflow-runs.png", (2000, 520))
        for artifact, name in (("per_subject_accuracy.png", "mlflow-per-subject.png"),
                               ("learning_curves.png", "mlflow-learning-curves.png")):
            screenshot(args.browser, f"{page}/runs/{run_id}/artifacts/{artifact}{WORKFLOW}", out / name, (1400, 700))
    finally:  # the server and its workers: one process group
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


if __name__ == "__main__":
    main()
