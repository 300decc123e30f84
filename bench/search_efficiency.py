"""Optuna TPE + ASHA vs random search with the same trial budget, on a synthetic corpus, over several seeds.

Both run ``tune/search.py`` (same space, samples and max epochs); random search trains every trial to the end,
ASHA stops poor ones early. Printed per seed: best validation macro-F1 reached, trial-epochs spent, and the
efficiency (best score per 100 trial-epochs); then the mean ratio Optuna+ASHA / random.

    python -m bench.search_efficiency [--seeds 3] [--num-samples 6] [--max-epochs 4] [--write]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import ray

from bench.common import machine, write_section
from gbvnet.train import init_ray
from tune import search


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=6)
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    lines = [f"Machine: {machine()}", f"Budget: {args.num_samples} trials x up to {args.max_epochs} epochs, bio "
             "modality, smoke space, synthetic MAHNOB corpus (6 subjects; search on 4)", "",
             "| seed | algo | best val macro-F1 | trial-epochs | score per 100 trial-epochs |",
             "| --- | --- | --- | --- | --- |"]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "mahnob", Path(tmp) / "cache"
        subprocess.run([sys.executable, "-m", "gbvnet.data.synthetic", "--format", "mahnob", "--out", str(root),
                        "--subjects", "6", "--trials", "8", "--no-video"], check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "gbvnet.prepare", "--dataset", "mahnob", "--root", str(root),
                        "--cache", str(cache), "--no-face"], check=True, capture_output=True)
        init_ray(num_cpus=2, log_to_driver=False)
        for seed in range(args.seeds):
            efficiency = {}
            for algo in ("optuna", "random"):
                doc = search.main(["--dataset", "mahnob", "--cache", str(cache), "--modality", "bio", "--space",
                                   "smoke", "--num-samples", str(args.num_samples), "--max-epochs",
                                   str(args.max_epochs), "--search-subjects", "1", "2", "3", "4", "--algo", algo,
                                   "--seed", str(seed), "--storage", f"{tmp}/ray", "--output", f"{tmp}/best.yaml",
                                   "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"])["search"]
                efficiency[algo] = 100 * doc["best_val_macro_f1"] / doc["trial_epochs"]
                lines.append(f"| {seed} | {algo} | {doc['best_val_macro_f1']:.3f} | {doc['trial_epochs']} | "
                             f"{efficiency[algo]:.2f} |")
                print(lines[-1], flush=True)
            ratios.append(efficiency["optuna"] / efficiency["random"])
        ray.shutdown()
    lines += ["", f"Efficiency ratio Optuna+ASHA / random: {np.mean(ratios):.2f} (mean over {args.seeds} seeds; "
              f"per seed {', '.join(f'{r:.2f}' for r in ratios)})"]
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_section("Search efficiency: Optuna+ASHA vs random (bench/search_efficiency.py)", report)


if __name__ == "__main__":
    main()
