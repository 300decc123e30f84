"""``gbvnet.predict`` against the model alone, and a registered model's cold start.

A synthetic DEAP-layout corpus is written and prepared, a network of ``--preset`` / ``--modality`` (untrained:
speed does not depend on the weights) is logged and registered in a temporary MLflow store
(:func:`gbvnet.predict.export.log_trained`), then:

* throughput on the prepared cache, same batch size and device: the model alone (the registered model's
  :meth:`~gbvnet.predict.export.GBVNetModel.probabilities` on batches already on the device) against ``gbvnet.predict``'s
  pass (:func:`gbvnet.predict.cli.probabilities`: reading the cache, batches to the device, the same model, results
  back in row order), median of ``--repeats`` after a warm-up, in windows/s, and their ratio (target >= 0.8);
* end to end on the raw recording (``python -m gbvnet.predict --dataset deap --root ...`` in this process): the
  model's load, the recording's reading and preparation, and the prediction, each in seconds;
* a cold process to its first prediction: ``python -c`` importing ``mlflow.pyfunc``, ``load_model("models:/...
  @champion")`` (MLflow's defaults, its dependency check included) and ``predict`` on the input example, with
  the time of each part.

    python -m bench.predict [--subjects 4] [--trials 8] [--preset smoke|paper] [--modality bio|facebio]
        [--batch-size 256] [--device cpu|cuda] [--repeats 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import machine, publish
from gbvnet.config import TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.data.registry import get_dataset
from gbvnet.data.window_dataset import WindowDataset
from gbvnet.folds.protocols import search_fold, subjects_with_rows, usable_rows
from gbvnet.models import build_model
from gbvnet.predict import cli as predict
from gbvnet.predict.export import log_trained
from gbvnet.prepare import prepare_dataset
from gbvnet.tracking import Tracker
from gbvnet.train.loop import make_job

NAME = "bench-predict"
COLD = """
import json, sys, time
started = time.perf_counter()
import numpy as np
import mlflow.pyfunc
imported = time.perf_counter()
model = mlflow.pyfunc.load_model(sys.argv[1])
loaded = time.perf_counter()
model.predict({k: np.load(f"{sys.argv[2]}/{k}.npy") for k in sys.argv[3:]})
print(json.dumps({"imports": imported - started, "load": loaded - imported,
                  "first_predict": time.perf_counter() - loaded}))
"""


def setup(tmp: Path, args: argparse.Namespace) -> tuple[Path, str, str]:
    """The corpus, its cache (the model's preparation) and a registered model of it: ``(root, cache, store)``."""
    face = args.modality != "bio"
    root, cache, store = tmp / "deap", str(tmp / "cache"), f"sqlite:///{tmp / 'mlflow.db'}"
    get_dataset("deap").write_synthetic(root, subjects=args.subjects, trials=args.trials, seed=0, video=face)
    cfg = get_dataset("deap").prepare_config(baseline_norm=True, frames=2 if args.preset == "smoke" else 8,
                                             face_size=32 if args.preset == "smoke" else 112)
    prepare_dataset("deap", root, cache, cfg, face=face, progress=False)
    index = open_cache(cache).index()
    fold = search_fold(index, subjects_with_rows(index, usable_rows(index, args.modality)), 0, args.modality)
    job = make_job(cache, model_preset(args.preset, modality=args.modality), TrainConfig(), fold)
    torch.manual_seed(0)
    tracker = Tracker(store, "bench-predict", f"bench-{time.time_ns()}", "bench-predict", resume=False)
    log_trained(store, tracker.run_id, job, build_model(job.model).state_dict(), register=NAME,
                aliases=("champion",))
    tracker.finish()
    return root, cache, store


def throughput(store: str, cache_uri: str, args: argparse.Namespace) -> dict:
    """Windows/s of the model alone and of gbvnet.predict's pass (median of ``args.repeats``, after a warm-up)."""
    model = predict.load_model(f"models:/{NAME}@champion", store, args.device)
    cache = open_cache(cache_uri)
    rows = usable_rows(cache.index(), args.modality)
    ds = WindowDataset(cache, modality=args.modality)
    batches = [{k: v.to(model.device) for k, v in ds.batch(rows[i:i + args.batch_size]).items()
                if k in model.spec.inputs} for i in range(0, len(rows), args.batch_size)]

    def alone() -> None:
        for batch in batches:
            model.probabilities(batch).cpu()

    def full() -> None:
        predict.probabilities(model, cache, rows, args.batch_size)

    seconds = {}
    for name, run in (("alone", alone), ("predict", full)):
        run()  # warm-up
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        seconds[name] = statistics.median(times)
    return {"windows": len(rows), "device": str(model.device), **{k: len(rows) / v for k, v in seconds.items()}}


def cold_start(tmp: Path, store: str, cache_uri: str, args: argparse.Namespace) -> dict:
    """A new Python process: imports, ``load_model`` and the first prediction (two windows), and its wall time."""
    batch = WindowDataset(open_cache(cache_uri), modality=args.modality).batch(np.arange(2))
    inputs = [k for k in ("bio", "face") if k in batch and (args.modality == "facebio" or k == args.modality)]
    for k in inputs:
        np.save(tmp / f"{k}.npy", batch[k].numpy())
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD, f"models:/{NAME}@champion", str(tmp), *inputs],
                         env={**os.environ, "MLFLOW_TRACKING_URI": store}, capture_output=True, text=True, check=True)
    return {"wall": time.perf_counter() - started, **json.loads(out.stdout.strip().splitlines()[-1])}


def end_to_end(tmp: Path, root: Path, store: str, args: argparse.Namespace) -> dict:
    """``gbvnet.predict`` on the raw recording: seconds of the model's load, the preparation and the prediction."""
    flags = ["--model-uri", f"models:/{NAME}@champion", "--tracking-uri", store, "--dataset", "deap", "--root",
             str(root), "--output", str(tmp / "out"), "--batch-size", str(args.batch_size)]
    if args.device:
        flags += ["--device", args.device]
    return predict.predict(predict.parse_args(flags))["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--preset", choices=("smoke", "paper"), default="smoke")
    parser.add_argument("--modality", choices=("bio", "facebio"), default="bio")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=None, help="default: cuda where available")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gbvnet-bench-predict-") as folder:
        tmp = Path(folder)
        root, cache, store = setup(tmp, args)
        speed = throughput(store, cache, args)
        raw = end_to_end(tmp, root, store, args)
        cold = cold_start(tmp, store, cache, args)
    ratio = speed["predict"] / speed["alone"]
    lines = [
        f"Machine: {machine()}", "",
        f"{args.preset} {args.modality} model, {speed['windows']} windows of {args.subjects} DEAP-layout subjects x "
        f"{args.trials} trials, batch {args.batch_size}, on {speed['device']}:", "",
        "| | windows/s |", "| --- | --- |",
        f"| model alone (batches on the device) | {speed['alone']:.0f} |",
        f"| gbvnet.predict on the prepared cache | {speed['predict']:.0f} |",
        f"| ratio (target >= 0.8) | {ratio:.2f} |", "",
        f"gbvnet.predict on the raw recording: model loaded in {raw['load']:.1f} s, recording read and prepared in "
        f"{raw['prepare']:.1f} s, predicted in {raw['predict']:.2f} s "
        f"({raw['prepare'] / (raw['prepare'] + raw['predict']):.0%} of preparation + prediction is preparation).",
        f"Cold process to first prediction (python -c: import mlflow.pyfunc, load_model('models:/{NAME}@champion'), "
        f"predict on 2 windows): {cold['wall']:.1f} s wall; imports {cold['imports']:.1f} s, load_model "
        f"{cold['load']:.1f} s, first predict {cold['first_predict']:.2f} s.",
    ]
    publish("predict", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
