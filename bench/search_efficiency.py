"""Optuna TPE + ASHA vs random search with the same trial budget, on a learnable synthetic corpus, over seeds.

Both run ``tune/search.py`` with the same space, number of trials and maximum epochs on the bio modality; random
search trains every trial to the end, ASHA stops poor trials at its rungs (``--grace-epochs`` x
``--reduction-factor`` powers). The corpus: synthetic MAHNOB, 8 subjects x 10 trials of 24 s, prepared bio-only
with the pre-stimulus baseline normalisation (as the demo); the search sees all 8 subjects and validates on 2 of
them. Printed per seed and searcher: best validation macro-F1, trial-epochs spent, trials stopped before the last
epoch, wall time; then best validation macro-F1 reached within a budget of trial-epochs (epochs counted in the
order they finished, so this is the anytime curve of each searcher), and the efficiency ratio Optuna+ASHA /
random (best score per 100 trial-epochs, mean over seeds).

    python -m bench.search_efficiency [--seeds 3] [--num-samples 12] [--max-epochs 8] [--grace-epochs 1]
        [--reduction-factor 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from bench.common import machine, publish
from gbvnet.search import cli as search
from gbvnet.train.launch import init_ray

ALGOS = ("optuna", "random")


def epoch_results(trials_dir: Path) -> tuple[list[tuple[float, float, float]], list[int]]:
    """Every epoch result of a finished search as ``(timestamp, seconds into its trial, val macro-F1)``, in the
    order they were reported, and the last epoch of each trial."""
    rows, last = [], []
    for path in trials_dir.glob("*/result.json"):
        results = [r for r in map(json.loads, path.read_text().splitlines()) if search.METRIC in r]
        rows += [(r["timestamp"], r["time_total_s"], r[search.METRIC]) for r in results]
        last.append(max((int(r["epoch"]) for r in results), default=0))
    return sorted(rows), last


def best_within(rows: list[tuple[float, float, float]], budget: int) -> float:
    """Best validation macro-F1 among the first ``budget`` trial-epochs (all of them when fewer were run)."""
    return max(score for _, _, score in rows[:budget])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--grace-epochs", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    full = args.num_samples * args.max_epochs
    budgets = sorted({args.max_epochs * k for k in (1, 2, 4, 8) if args.max_epochs * k < full} | {full})
    lines = [f"Machine: {machine()}",
             f"Budget: {args.num_samples} trials x up to {args.max_epochs} epochs, {args.seeds} seeds; bio modality, "
             "smoke space; ASHA grace period "
             f"{args.grace_epochs} epoch(s), reduction factor {args.reduction_factor}. Corpus: synthetic MAHNOB, "
             "8 subjects x 10 trials of 24 s, baseline-normalised; search on all 8 (validation on 2).", "",
             "| seed | algo | best val macro-F1 | trial-epochs | stopped early | wall s | score per 100 trial-epochs |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    ratios, curves = [], {algo: [] for algo in ALGOS}
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "mahnob", Path(tmp) / "cache"
        subprocess.run([sys.executable, "-m", "gbvnet.data.synthetic", "--dataset", "mahnob", "--out", str(root),
                        "--n-subjects", "8", "--trials", "10", "--duration", "24", "--no-video"], check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "gbvnet.prepare", "--dataset", "mahnob", "--root", str(root),
                        "--cache", str(cache), "--no-face", "--baseline-norm"], check=True, capture_output=True)
        init_ray(num_cpus=2, log_to_driver=False)
        for seed in range(args.seeds):
            efficiency = {}
            for algo in ALGOS:
                name = f"bench-{algo}-seed{seed}"
                started = time.perf_counter()
                doc = search.main(["--dataset", "mahnob", "--cache", str(cache), "--modality", "bio", "--space",
                                   "smoke", "--search-trials", str(args.num_samples), "--search-epochs",
                                   str(args.max_epochs), "--grace-epochs", str(args.grace_epochs),
                                   "--reduction-factor", str(args.reduction_factor), "--search-subjects",
                                   *map(str, range(1, 9)), "--algo", algo, "--seed", str(seed), "--name", name,
                                   "--storage", f"{tmp}/ray", "--output", f"{tmp}/best.yaml", "--quiet",
                                   "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"])["search"]
                wall = time.perf_counter() - started
                rows, last_epochs = epoch_results(Path(tmp) / "ray" / name)
                curves[algo].append([best_within(rows, b) for b in budgets])
                efficiency[algo] = 100 * doc[f"best_{search.METRIC}"] / doc["trial_epochs"]
                stopped = sum(epoch < args.max_epochs for epoch in last_epochs)
                lines.append(f"| {seed} | {algo} | {doc[f'best_{search.METRIC}']:.3f} | {doc['trial_epochs']} | "
                             f"{stopped} of {doc['trials']} | {wall:.0f} | {efficiency[algo]:.2f} |")
                print(lines[-1], flush=True)
            ratios.append(efficiency["optuna"] / efficiency["random"])
        ray.shutdown()
    lines += ["", "Best validation macro-F1 within a budget of trial-epochs (mean over seeds; a search that spent "
              "fewer epochs keeps its final best):", "",
              "| trial-epochs | " + " | ".join(str(b) for b in budgets) + " |",
              "| --- |" + " --- |" * len(budgets)]
    for algo in ALGOS:
        means = np.mean(curves[algo], axis=0)
        lines.append(f"| {algo} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines += ["", f"Efficiency ratio Optuna+ASHA / random: {np.mean(ratios):.2f} (mean over {args.seeds} seeds; "
              f"per seed {', '.join(f'{r:.2f}' for r in ratios)})"]
    report = "\n".join(lines)
    publish("Search efficiency: Optuna+ASHA vs random (bench/search_efficiency.py)", report, args.write)


if __name__ == "__main__":
    main()
