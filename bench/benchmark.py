"""The benchmark command's wall time against the training it does, and against a per-model sequential loop.

``python -m evaluation.benchmark`` (in this process, on one Ray instance started first: Ray's start is not counted)
on a synthetic DEAP corpus (bio), every model's LOSO folds in one pool, vs the summed epoch time of all its folds
(every epoch's ``epoch_time_s``: training, validation and metrics, as the folds report them) divided by the
parallel slots; target <= 1.25 at a size where an epoch takes >= 5 s per fold. Then the same models one after
another, each as its own evaluation (``gbvnet.evaluation.engine.evaluate``: its own Tune run, MLflow runs and baselines, the
way a per-model loop of evaluations runs them), and the ratio of the two walls.

    python -m bench.benchmark [--subjects 4] [--trials 20] [--models gbvnet:bio eegnet shallow] [--epochs 3]
                              [--concurrent 2] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import machine, publish
from gbvnet.data.cache import open_cache
from gbvnet.data.deap import write_deap
from gbvnet.data.registry import get_dataset
from gbvnet.evaluation import benchmark
from gbvnet.evaluation.engine import evaluate
from gbvnet.evaluation.run import protocol_arguments, spec_from_args
from gbvnet.prepare import prepare_dataset
from gbvnet.train.launch import init_ray


def epoch_times(pool: Path) -> list[float]:
    """Every epoch's ``epoch_time_s`` of the Tune experiment folder ``pool``."""
    return [json.loads(line)["epoch_time_s"] for f in pool.glob("*/result.json")
            for line in f.read_text().splitlines() if line]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--trials", type=int, default=20, help="60 s DEAP trials per subject (20 windows each)")
    p.add_argument("--models", nargs="+", default=["gbvnet:bio", "eegnet", "shallow"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--write", action="store_true", help="make this bench/RESULTS.md's section")
    p.add_argument("--note", default="", help="a line added to the published figure (e.g. the machine's load)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-benchmark-"))
    write_deap(tmp / "corpus", subjects=args.subjects, trials=args.trials, seed=0, video=False)
    prepare_dataset("deap", tmp / "corpus", str(tmp / "cache"), get_dataset("deap").prepare_config(baseline_norm=True),
                    face=False, progress=False)
    init_ray(num_cpus=args.concurrent, log_to_driver=False)
    common = ["--dataset", "deap", "--cache", str(tmp / "cache"), "--preset", "smoke", "--epochs", str(args.epochs),
              "--patience", str(args.epochs), "--batch-size", "32", "--lr", "3e-3", "--concurrent",
              str(args.concurrent), "--quiet", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        doc = benchmark.main([*common, "--models", *args.models, "--storage", str(tmp / "pooled")])
    pooled = time.perf_counter() - started
    [pool] = list((tmp / "pooled").glob("eval-benchmark-deap-*"))
    times = epoch_times(pool)
    folds = sum(len(d["folds"]) for d in doc["models"].values())
    slots = min(args.concurrent, folds)
    ideal = sum(times) / slots

    parsed = benchmark.build_parser().parse_args([*common, "--models", *args.models])
    parsed.modality = "bio"  # the base model of the entries, as the command sets it for bio-only models
    base = spec_from_args(parsed, "benchmark", {})
    arms = benchmark.plan(base, "loso", protocol_arguments(parsed, "loso"), parsed.models,
                          open_cache(base.cache).index())
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        for arm in arms.values():  # the loop a user would write: one evaluation per model
            evaluate(replace(arm.spec, storage=str(tmp / "sequential"), experiment="bench-sequential"))
    sequential = time.perf_counter() - started
    sequential_times = [t for pool in (tmp / "sequential").glob("eval-loso-deap-*") for t in epoch_times(pool)]

    body = "\n".join([
        f"machine: {machine()}" + (f"; {args.note}" if args.note else ""),
        f"command: python -m bench.benchmark --subjects {args.subjects} --trials {args.trials} --models "
        f"{' '.join(args.models)} --epochs {args.epochs} --concurrent {args.concurrent}",
        f"corpus: DEAP layout, {args.subjects} subjects x {args.trials} trials, bio, smoke GBV-Net; LOSO",
        f"folds: {folds} ({len(doc['models'])} models x {folds // len(doc['models'])}), {len(times)} epochs, median "
        f"epoch {sorted(times)[len(times) // 2]:.1f} s",
        f"summed epoch time {sum(times):.1f} s / {slots} slots = ideal {ideal:.1f} s",
        f"benchmark (one pool) wall {pooled:.1f} s: ratio wall / ideal {pooled / ideal:.2f} (target <= 1.25; Ray "
        "started before, not counted)",
        f"per-model loop of evaluations wall {sequential:.1f} s (its summed epoch time {sum(sequential_times):.1f} s): "
        f"{sequential / ideal:.2f} x ideal, {sequential / pooled:.2f} x the pooled benchmark",
    ])
    publish("Benchmark: one pool of every model's folds vs a per-model loop (bench/benchmark.py)", body, args.write)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
