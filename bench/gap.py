"""The protocol-gap command's wall time against the training it does: ``python -m evaluation.gap`` on a small
synthetic DEAP corpus (bio, with a trial signature) vs the summed epoch time of all its folds (every epoch's
``epoch_time_s``: training, validation and metrics, as the folds report them) divided by the parallel slots.

Printed: the folds, the summed epoch time, the slots, the ideal time (sum / slots), the phases of the command
(Ray start, MLflow runs started, the pooled Tune run, scoring, the final MLflow logging) and the ratio wall / ideal
(target <= 1.3 on 2 cores). Then, on the same Ray instance, the floor of Ray Tune alone at this granularity
(:func:`bench.tune_floor.tune_floor`: one trial per fold that only spins for that fold's epoch times, reporting
each, in the same slots): what any Tune pool of these folds costs before model, data or MLflow. The command runs
in this process (Python's imports not counted; Ray's start is).

    python -m bench.gap [--subjects 4] [--trials 6] [--k 2] [--epochs 3] [--concurrent 2] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, publish
from bench.tune_floor import tune_floor
from gbvnet.data.deap import write_deap
from gbvnet.data.registry import get_dataset
from gbvnet.evaluation import gap
from gbvnet.prepare import prepare_dataset


def timed(phases: dict[str, float], name: str, function):
    """``function`` with its wall time added to ``phases[name]``."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - started
    return wrapper


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gap", description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--write", action="store_true", help="make this bench/RESULTS.md's section")
    p.add_argument("--note", default="", help="a line added to the published figure (e.g. the machine's load)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gap-"))
    write_deap(tmp / "corpus", subjects=args.subjects, trials=args.trials, seed=0, video=False, label_noise=0.5,
               trial_signature=2.0)
    prepare_dataset("deap", tmp / "corpus", str(tmp / "cache"), get_dataset("deap").prepare_config(baseline_norm=True),
                    face=False, progress=False)
    phases: dict[str, float] = {}
    for name in ("init_ray", "start_gap_run", "run_pooled", "log_gap"):
        setattr(gap, name, timed(phases, name, getattr(gap, name)))
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        doc = gap.main(["--dataset", "deap", "--cache", str(tmp / "cache"), "--preset", "smoke", "--modality", "bio",
                        "--k", str(args.k), "--epochs", str(args.epochs), "--patience", str(args.epochs),
                        "--batch-size", "8", "--lr", "3e-3", "--concurrent", str(args.concurrent),
                        "--quiet", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--storage", str(tmp / "ray")])
    wall = time.perf_counter() - started
    [pool] = list((tmp / "ray").glob("eval-gap-deap-*"))
    trials = [[json.loads(line) for line in f.read_text().splitlines() if line] for f in pool.glob("*/result.json")]
    rows = [r for trial in trials for r in trial]
    folds = sum(len(d["folds"]) for d in doc["protocols"].values())
    per_protocol = ", ".join(f"{p} {len(d['folds'])}" for p, d in doc["protocols"].items())
    epoch_sum = sum(r["epoch_time_s"] for r in rows)
    slots = min(args.concurrent, folds)
    ideal = epoch_sum / slots
    scoring = wall - sum(phases.values())
    floor = tune_floor([[r["epoch_time_s"] for r in trial] for trial in trials], slots, str(tmp / "ray"))
    body = "\n".join([
        f"machine: {machine()}" + (f"; {args.note}" if args.note else ""),
        f"command: python -m bench.gap --subjects {args.subjects} --trials {args.trials} --k {args.k} "
        f"--epochs {args.epochs} --concurrent {args.concurrent}",
        f"corpus: DEAP layout, {args.subjects} subjects x {args.trials} trials, bio, trial signature 2, smoke model",
        f"folds: {folds} ({per_protocol}), "
        f"{len(rows)} epochs in all",
        f"summed epoch time {epoch_sum:.1f} s / {slots} slots = ideal {ideal:.1f} s",
        f"gap command wall {wall:.1f} s: Ray start {phases.get('init_ray', 0):.1f} s, MLflow runs started "
        f"{phases.get('start_gap_run', 0):.1f} s, pooled folds {phases.get('run_pooled', 0):.1f} s (each fold "
        f"logged as it finishes), scoring (baselines) {scoring:.1f} s, final MLflow logging "
        f"{phases.get('log_gap', 0):.1f} s",
        f"ratio wall / ideal: {wall / ideal:.2f} (target <= 1.3 on 2 cores); pooled folds alone / ideal: "
        f"{phases.get('run_pooled', 0) / ideal:.2f}",
        f"Ray Tune alone (a trial per fold spinning its epoch times, reporting each, same slots): {floor:.1f} s = "
        f"{floor / ideal:.2f} x ideal; the gap's pooled folds take {phases.get('run_pooled', 0) / floor:.2f} x that",
    ])
    publish("Protocol gap: wall vs summed fold epochs / slots (bench/gap.py)", body, args.write)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
