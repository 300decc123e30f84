"""Ray Train (1 worker) vs a bare PyTorch loop: same model, data, batch size, epoch code and torch threads; one row
per model of the registry asked for (``--models NAME[:MODALITY]``: GBV-Net and the comparison networks).

Both sides call :func:`gbvnet.train.steps.train_epoch` on the same cache rows; the Ray side runs it inside
``train_loop_per_worker`` (validation, metrics and a checkpoint per epoch included), the bare side alone, with as
many torch threads as the Ray worker has CPUs (``cpus_per_worker``, which the worker applies). Printed: median
training-pass time per epoch of each (first epoch dropped as warm-up) and their ratio (target <= 1.10 on CPU: the
training path at >= 0.9x the speed of the model alone);
the Ray epoch including its validation pass, metrics and checkpoint; the threads the worker reported; and the
Ray run's wall time including start-up.

    python -m bench.train_overhead [--epochs 5] [--threads 1 2] [--models gbvnet:bio eegnet ...] [--write]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from bench.common import machine, publish
from gbvnet.config import ModelConfig, TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.data.loader import BatchLoader
from gbvnet.data.transform import BatchTransform
from gbvnet.data.window_dataset import WindowDataset, fit_normalizer
from gbvnet.evaluation.benchmark import model_choice
from gbvnet.folds.protocols import subject_fold
from gbvnet.models import build_model
from gbvnet.train.launch import init_ray, make_trainer
from gbvnet.train.loop import channel_index, fit_model_to_cache, make_job
from gbvnet.train.steps import Forward, make_optimizer, train_epoch

CPU = torch.device("cpu")


def make_cache(tmp: Path, subjects: int) -> str:
    root, cache = tmp / "mahnob", tmp / "cache"
    py = sys.executable
    subprocess.run([py, "-m", "gbvnet.data.synthetic", "--dataset", "mahnob", "--out", str(root), "--n-subjects",
                    str(subjects), "--trials", "8", "--duration", "30"], check=True, capture_output=True)
    subprocess.run([py, "-m", "gbvnet.prepare", "--dataset", "mahnob", "--root", str(root), "--cache", str(cache),
                    "--frames", "4", "--face-size", "64"], check=True, capture_output=True)
    return str(cache)


def bare_epochs(cache: str, model: ModelConfig, train_rows: np.ndarray, tc: TrainConfig) -> list[float]:
    torch.set_num_threads(max(1, int(tc.cpus_per_worker)))  # what the Ray worker does with its CPUs
    c = open_cache(cache)
    mc = fit_model_to_cache(model, c.manifest)
    normalizer = fit_normalizer(c, train_rows) if mc.modality != "face" else None
    ds = WindowDataset(c, target=tc.target, modality=mc.modality)
    transform = BatchTransform(mc.modality, CPU, normalizer, channel_index(mc, c.manifest))
    torch.manual_seed(tc.seed)
    forward = Forward(build_model(mc))
    optimizer, scheduler = make_optimizer(forward.model, tc, CPU, int(np.ceil(len(train_rows) / tc.batch_size)))
    times = []
    for epoch in range(tc.epochs):
        rows = train_rows[np.random.default_rng([tc.seed, epoch]).permutation(len(train_rows))]
        start = time.perf_counter()
        train_epoch(forward, BatchLoader(ds, rows, tc.batch_size, CPU), transform, tc, optimizer, scheduler,
                    torch.Generator().manual_seed(epoch))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPUs per Ray worker (= threads)")
    parser.add_argument("--models", type=model_choice, nargs="+", metavar="NAME[:MODALITY]",
                        default=[model_choice(m) for m in ("gbvnet:bio", "gbvnet:facebio", "eegnet", "shallow",
                                                           "eegconformer", "dgcnn", "facecnn")],
                        help="the models (default: GBV-Net bio and face+bio, and the comparison networks)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    lines = [f"Machine: {machine()}", "", "| model | modality | threads | windows/epoch | bare train s | Ray train s | ratio | "
             "Ray full epoch s (+val, ckpt) | Ray wall s (incl. start) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = make_cache(Path(tmp), args.subjects)
        index = open_cache(cache).index()
        subjects = sorted(set(index.subject.tolist()))
        fold = subject_fold(index, subjects[:-2], [subjects[-2]], [subjects[-1]])
        init_ray(num_cpus=max(args.threads), log_to_driver=False)
        for name, modality in args.models:
            model = model_preset("smoke", model=name, modality=modality)
            if name == "facecnn":
                model.net = {"backbone": "resnet10t"}  # a CPU-sized timm CNN
            for threads in args.threads:
                tc = TrainConfig(epochs=args.epochs, batch_size=32, patience=args.epochs, augment=True,
                                 cpus_per_worker=threads)
                bare = bare_epochs(cache, model, fold.train, tc)
                job = make_job(cache, model, tc, fold)
                start = time.perf_counter()
                result = make_trainer(job, f"overhead-{name}-{model.modality}-{threads}",
                                      storage=str(Path(tmp) / "ray")).fit()
                wall = time.perf_counter() - start
                history = result.metrics_dataframe
                assert set(history["threads"]) == {threads}, history["threads"]
                b, r = np.median(bare[1:]), np.median(history["train_time_s"].tolist()[1:])
                full = np.median(history["epoch_time_s"].tolist()[1:])
                lines.append(f"| {name} | {model.modality} | {threads} | {len(fold.train)} | {b:.3f} | {r:.3f} | {r / b:.2f} | "
                             f"{full:.3f} | {wall:.1f} |")
                print(lines[-1], flush=True)
        ray.shutdown()
    report = "\n".join(lines)
    publish("Training overhead: Ray Train vs bare PyTorch (bench/train_overhead.py)", report, args.write)


if __name__ == "__main__":
    main()
