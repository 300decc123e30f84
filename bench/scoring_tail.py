"""Driver time after the last fold of a LOSO evaluation (its scoring tail), before and after the baselines moved
beside the folds.

Before: once every fold had finished, the driver computed the band-power features of every window of the cache
and fitted the baselines of each fold, one fold after another (``baseline_confusions`` over ``bio_features`` of
all rows, in the driver). After: :class:`gbvnet.evaluation.baselines.Baselines` starts, with the folds, a Ray actor that
scores each fold's baselines beside the training, reading only the windows the folds need; once the last fold
ends the driver only collects the confusion matrices. Both score the same folds and must give the same matrices.

The folds' training is stood in for by one busy process per CPU of the local Ray instance for ``--folds-seconds``
(what training does to the machine: the actor competes with it for the cores). The corpus is a synthetic
DEAP-layout one (``--subjects`` x ``--trials`` trials of 63 s, bio only), written and prepared once under
``--work``. Reported: the before tail, the after tail (driver time from the end of the folds to the scores) and
their ratio, and the driver's peak memory growth in each.

    python -m bench.scoring_tail --subjects 32 --trials 40 --folds-seconds 600 --write
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import ray

from bench.common import machine, publish
from gbvnet.data.cache import open_cache
from gbvnet.data.registry import get_dataset
from gbvnet.data.window_dataset import WindowDataset
from gbvnet.evaluation.baselines import Baselines, baseline_confusions, bio_features
from gbvnet.folds.protocols import PROTOCOLS, usable_rows
from gbvnet.prepare import prepare_dataset


def prepared(work: Path, subjects: int, trials: int) -> tuple[str, float]:
    """The cache of a ``subjects`` x ``trials`` DEAP-layout bio corpus under ``work`` (written and prepared
    once) and the seconds that took (0 when reused)."""
    cache = work / f"deap-{subjects}x{trials}-cache"
    if (cache / "manifest.json").exists():
        return str(cache), 0.0
    started = time.perf_counter()
    root = work / f"deap-{subjects}x{trials}"
    get_dataset("deap").write_synthetic(root, subjects=subjects, trials=trials, seed=0, video=False)
    prepare_dataset("deap", root, str(cache), get_dataset("deap").prepare_config(), face=False, progress=False)
    return str(cache), time.perf_counter() - started


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@ray.remote(num_cpus=1)
def busy(seconds: float) -> None:
    """A stand-in for a fold's training: one CPU kept busy for ``seconds``."""
    end = time.perf_counter() + seconds
    x = np.random.default_rng(0).random((256, 256))
    while time.perf_counter() < end:
        x = np.tanh(x @ x.T / 256)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scoring_tail", description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=32)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--folds-seconds", type=float, default=600.0,
                   help="how long the stand-in folds keep every CPU busy")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--work", default="runs/bench-scoring-tail", help="corpus and cache folder (kept, reused)")
    p.add_argument("--note", default="", help="a line on the machine's state (e.g. its load)")
    p.add_argument("--write", action="store_true", help="write the result into bench/RESULTS.md")
    args = p.parse_args(argv)

    cache, prepare_s = prepared(Path(args.work).resolve(), args.subjects, args.trials)
    index = open_cache(cache).index()
    folds = PROTOCOLS["loso"](seed=0).cache_folds(index, usable_rows(index, "bio"), "valence")
    y = index.labels("valence")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)

    # after: the scorer starts with the folds; the driver waits for them, then collects
    base_mib = peak_mib()
    baselines = Baselines(cache, folds, y, seed=0)
    ray.get([busy.remote(args.folds_seconds) for _ in range(args.cpus)])
    folds_end = time.perf_counter()
    after = baselines.confusions()
    after_s = time.perf_counter() - folds_end
    after_mib = peak_mib() - base_mib
    ray.shutdown()

    # before: everything in the driver once the folds are done
    base_mib = peak_mib()
    t = time.perf_counter()
    opened = open_cache(cache)
    dataset = WindowDataset(opened, modality="bio")
    features = bio_features(dataset, float(opened.manifest.rate), np.arange(len(dataset)))
    before = baseline_confusions(folds, y, features, seed=0)
    before_s = time.perf_counter() - t
    before_mib = peak_mib() - base_mib

    same = all(np.array_equal(a, b) for name in before for a, b in zip(before[name], after[name], strict=True))
    body = "\n".join([
        f"`python -m bench.scoring_tail --subjects {args.subjects} --trials {args.trials} --folds-seconds "
        f"{args.folds_seconds:g} --cpus {args.cpus}` on {machine()}" + (f"; {args.note}" if args.note else ""),
        "",
        f"LOSO, {len(folds)} folds, {len(y)} windows of {index.manifest.window_samples} samples x "
        f"{len(index.manifest.channels)} channels (synthetic DEAP layout, bio; written and prepared in "
        f"{prepare_s:.0f} s{' (reused)' if not prepare_s else ''}); folds stood in for by {args.cpus} busy CPU(s) "
        f"for {args.folds_seconds:g} s.",
        "",
        "| scoring of the baselines | driver time after the last fold | driver peak memory growth |",
        "|---|---|---|",
        f"| before: in the driver, after the folds | {before_s:.1f} s | {before_mib:.0f} MiB |",
        f"| after: a Ray actor beside the folds | {after_s:.2f} s ({after_s / before_s:.1%} of before) | "
        f"{after_mib:.0f} MiB |",
        "",
        f"Same confusion matrices for every fold and baseline: {'yes' if same else 'NO'}.",
    ])
    publish("Scoring tail: baselines beside the folds (bench/scoring_tail.py)", body, args.write)
    if not same:
        raise SystemExit("the two paths disagree")


if __name__ == "__main__":
    main()
