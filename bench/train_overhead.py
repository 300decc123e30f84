"""Ray Train (1 worker) vs a bare PyTorch loop: same model, data, batch size and epoch code, measured in one run.

Both sides call :func:`gbvnet.train.train_epoch` on the same cache rows; the Ray side runs it inside
``train_loop_per_worker`` (validation, metrics and a checkpoint per epoch included), the bare side alone.
Printed: median training-pass time per epoch of each (first epoch dropped as warm-up) and their ratio
(target <= 1.10 on CPU); the Ray epoch including its validation pass, metrics and checkpoint; and the Ray run's
wall time including start-up.

    python -m bench.train_overhead [--epochs 5] [--write]
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

from bench.common import machine, write_section
from gbvnet.config import TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.data.dataset import WindowDataset, fit_normalizer
from gbvnet.models import GBVNet
from gbvnet.train import (
    fit_model_to_cache,
    init_ray,
    lr_lambda,
    make_job,
    make_trainer,
    subject_fold,
    train_epoch,
)


def make_cache(tmp: Path, subjects: int) -> str:
    root, cache = tmp / "mahnob", tmp / "cache"
    py = sys.executable
    subprocess.run([py, "-m", "gbvnet.data.synthetic", "--format", "mahnob", "--out", str(root), "--subjects",
                    str(subjects), "--trials", "8", "--duration", "30"], check=True, capture_output=True)
    subprocess.run([py, "-m", "gbvnet.prepare", "--dataset", "mahnob", "--root", str(root), "--cache", str(cache),
                    "--frames", "4", "--face-size", "64"], check=True, capture_output=True)
    return str(cache)


def bare_epochs(cache: str, modality: str, train_rows: np.ndarray, tc: TrainConfig) -> list[float]:
    c = open_cache(cache)
    mc = fit_model_to_cache(model_preset("smoke", modality=modality), c.manifest)
    normalizer = fit_normalizer(c, train_rows) if modality != "face" else None
    ds = WindowDataset(c, target=tc.target, modality=modality, normalizer=normalizer)
    torch.manual_seed(tc.seed)
    model = GBVNet(mc)
    steps = int(np.ceil(len(train_rows) / tc.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.epochs, tc.warmup_epochs, steps))
    times = []
    for epoch in range(tc.epochs):
        rows = train_rows[np.random.default_rng([tc.seed, epoch]).permutation(len(train_rows))]
        start = time.perf_counter()
        train_epoch(model, ds, rows, tc, optimizer, scheduler, torch.device("cpu"), torch.Generator().manual_seed(epoch))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a 1-CPU Ray Train worker runs torch with one thread
    lines = [f"Machine: {machine()}", "", "| modality | windows/epoch | bare train s | Ray train s | ratio | "
             "Ray full epoch s (+val, ckpt) | Ray wall s (incl. start) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = make_cache(Path(tmp), args.subjects)
        index = open_cache(cache).index()
        subjects = sorted(set(index.subject.tolist()))
        fold = subject_fold(index, subjects[:-2], [subjects[-2]], [subjects[-1]])
        init_ray(num_cpus=2, log_to_driver=False)
        for modality in ("bio", "facebio"):
            tc = TrainConfig(epochs=args.epochs, batch_size=32, patience=args.epochs, augment=True)
            bare = bare_epochs(cache, modality, fold.train, tc)
            job = make_job(cache, model_preset("smoke", modality=modality), tc, fold)
            start = time.perf_counter()
            result = make_trainer(job, f"overhead-{modality}", storage=str(Path(tmp) / "ray")).fit()
            wall = time.perf_counter() - start
            history = result.metrics_dataframe
            b, r = np.median(bare[1:]), np.median(history["train_time_s"].tolist()[1:])
            full = np.median(history["epoch_time_s"].tolist()[1:])
            lines.append(f"| {modality} | {len(fold.train)} | {b:.3f} | {r:.3f} | {r / b:.2f} | {full:.3f} | "
                         f"{wall:.1f} |")
            print(lines[-1], flush=True)
        ray.shutdown()
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section("Training overhead: Ray Train vs bare PyTorch (bench/train_overhead.py)", report)


if __name__ == "__main__":
    main()
