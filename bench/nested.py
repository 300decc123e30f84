"""Nested LOSO on the cluster: utilisation of the parallel slots and the driver's memory, per folds x trials.

For each size ``FxT`` (F outer folds = F synthetic subjects, T search trials per fold) one nested run
(``evaluation.loso --search T --compare-untuned``, bio modality, smoke preset and space) runs in a child process
on a local Ray of ``--cpus`` CPUs (one CPU per trial, so ``--cpus`` parallel slots, ``--concurrent`` = slots).
Printed per size:

- utilisation: the Tune run's wall time divided by (the summed trial-epoch time / slots), where trial-epoch time
  is every epoch's ``epoch_time_s`` over every trial (search trials and outer trainings). 1.0 would be every slot
  busy with epochs all the time; the per-trial start (model, data, normaliser) and the scheduling gaps make up
  the rest. Also the same ratio on the trials' whole time (``time_total_s``), which includes the per-trial start;
- the driver's memory: its resident set size before the run (after imports and the cache index) and its peak
  (``ru_maxrss``), so the growth with folds x trials shows (it should stay flat: the driver keeps per trial
  only its scores and config).

    python -m bench.nested [--sizes 6x8 12x16] [--max-epochs 2] [--epochs 2] [--cpus 2] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, publish


def child(folds: int, trials: int, max_epochs: int, epochs: int, cpus: int, work: Path) -> dict:
    """One nested run of ``folds`` x ``trials`` in this process; its measurements."""
    import psutil

    from gbvnet.data.sources import synthetic_cache
    from gbvnet.evaluation import loso, nested
    from gbvnet.train.launch import init_ray

    cache = synthetic_cache("deap", work / "corpus", str(work / "cache"), face=False, progress=False,
                            size={"subjects": folds, "trials": 8, "seed": 0, "video": False},
                            prepare={"baseline_norm": True})
    init_ray(num_cpus=cpus, log_to_driver=False)
    timed = {}
    run_trials = nested.run_trials

    def timed_run_trials(*args, **kwargs):
        start = time.perf_counter()
        grid = run_trials(*args, **kwargs)
        timed["tune_wall_s"] = time.perf_counter() - start
        return grid

    nested.run_trials = timed_run_trials
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        loso.main(["--dataset", "deap", "--cache", cache, "--preset", "smoke", "--modality", "bio",
                   "--search-trials", str(trials), "--search-epochs", str(max_epochs), "--epochs", str(epochs),
                   "--patience", str(epochs), "--concurrent", str(cpus), "--compare-untuned", "--quiet",
                   "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--storage", str(work / "ray")])
    wall = time.perf_counter() - start
    epoch_s = total_s = 0.0
    n_trials = n_epochs = 0
    for path in (work / "ray").glob("nested-*/*/result.json"):
        results = [json.loads(line) for line in path.read_text().splitlines()]
        epoch_s += sum(r["epoch_time_s"] for r in results)
        total_s += results[-1]["time_total_s"]
        n_trials, n_epochs = n_trials + 1, n_epochs + len(results)
    return {"folds": folds, "trials": trials, "n_trials": n_trials, "n_epochs": n_epochs,
            "tune_wall_s": timed["tune_wall_s"], "wall_s": wall, "epoch_s": epoch_s, "trial_s": total_s,
            "rss_before_mib": rss_before / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["6x8", "12x16"], help="folds x search trials per fold")
    parser.add_argument("--max-epochs", type=int, default=2, help="epochs per search trial")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each outer fold's training")
    parser.add_argument("--cpus", type=int, default=2, help="the local Ray's CPUs = parallel slots")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folds, trials = map(int, args.child.split("x"))
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(child(folds, trials, args.max_epochs, args.epochs, args.cpus, Path(work))))
        return
    rows = []
    for size in args.sizes:
        child_run = subprocess.run([sys.executable, "-m", "bench.nested", "--child", size, "--max-epochs",
                                    str(args.max_epochs), "--epochs", str(args.epochs), "--cpus", str(args.cpus)],
                                   capture_output=True, text=True)
        if child_run.returncode:
            sys.exit(f"the {size} run failed:\n{child_run.stderr[-3000:]}")
        rows.append(json.loads(child_run.stdout.strip().splitlines()[-1]))
    lines = [f"machine: {machine()}; local Ray of {args.cpus} CPUs = {args.cpus} slots; search trials of "
             f"{args.max_epochs} epoch(s), outer trainings of {args.epochs} (tuned and untuned)",
             f"{'folds x trials':>14} {'trials run':>10} {'epochs':>6} {'Tune wall':>9} {'sum epochs/slots':>16} "
             f"{'ratio':>5} {'ratio (whole trials)':>20} {'driver RSS before':>17} {'peak':>6}"]
    for r in rows:
        per_slot, whole = r["epoch_s"] / args.cpus, r["trial_s"] / args.cpus
        lines.append(f"{r['folds']:>8} x {r['trials']:<3} {r['n_trials']:>10} {r['n_epochs']:>6} "
                     f"{r['tune_wall_s']:>8.0f}s {per_slot:>15.0f}s {r['tune_wall_s'] / per_slot:>5.2f} "
                     f"{r['tune_wall_s'] / whole:>20.2f} {r['rss_before_mib']:>13.0f} MiB {r['peak_rss_mib']:>6.0f}")
    publish("Nested LOSO: slot utilisation and driver memory (bench/nested.py)", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
