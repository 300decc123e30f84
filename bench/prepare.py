"""Preparation and cache-read throughput on a synthetic DEAP corpus (bio only), against baselines in the same run.

* prepare: ``prepare_dataset`` into a fresh cache with 1 and 2 worker processes; MB of raw ``.dat`` input per
  second (target >= 200 MB/s per process) and windows per second. Process start-up is included.
* baseline: re-reading the ``.dat`` files and cutting the windows (the reader + ``cut``, what a loader without a
  cache would do per epoch), in windows per second.
* cache read: ``WindowDataset.batch`` over every row in batches of 256, bio modality with the train-fitted
  normaliser, rows in order (evaluation) and shuffled (training); timed over 10 passes after a first one, so
  the memory-mapped pages are resident as in every epoch after the first (target >= 50,000 windows/s).
  Ratio: windows/s against the baseline.

    python -m bench.prepare [--subjects 4] [--quick] [--profile] [--write]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.common import machine, write_section
from gbvnet.data import deap, synthetic
from gbvnet.data.cache import open_cache
from gbvnet.data.dataset import WindowDataset, fit_normalizer
from gbvnet.data.windows import cut
from gbvnet.prepare import dataset_config, prepare_dataset, prepare_subject


def best_of(repeats: int, fn, cleanup=None) -> tuple[float, object]:
    """The shortest wall time of ``repeats`` calls of ``fn()``, and the last result (``cleanup(result)`` runs
    after each call, untimed)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if cleanup is not None:
            cleanup(result)
    return min(times), result


def reread(root: Path, subjects: list[int], cfg) -> int:
    """The no-cache baseline: read every subject's ``.dat`` and cut its windows; returns the window count."""
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no face videos in this corpus
        for s in subjects:
            for rec in deap.read_deap_subject(root, s):
                count += len(cut(rec, cfg).t_start)
    return count


def read_all(ds: WindowDataset, rows: np.ndarray, batch: int) -> int:
    n = 0
    for start in range(0, len(rows), batch):
        n += len(ds.batch(rows[start:start + batch])["bio"])
    return n


PASSES = 10  # cache reads are timed over this many passes over all rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=4, help="synthetic DEAP subjects of 40 full trials")
    parser.add_argument("--quick", action="store_true", help="2 subjects, one repetition")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one subject's preparation")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    subjects = 2 if args.quick else args.subjects
    repeats = 1 if args.quick else 5
    cfg = dataset_config("deap")
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        root = tmp / "deap"
        synthetic.write_deap(root, subjects=subjects, trials=40, seed=0, video=False)
        ids = list(range(1, subjects + 1))
        raw_mb = sum(deap.dat_path(root, s).stat().st_size for s in ids) / 1e6
        reread(root, ids, cfg)  # warm the page cache: every measurement reads from memory
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        lines = [f"Machine: {machine()}; 1-minute load average at the start: {load:.1f} (other jobs share the "
                 "cores, so timings vary between runs)", "",
                 f"Corpus: synthetic DEAP, {subjects} subjects x 40 trials x 40 channels x 8064 samples "
                 f"({raw_mb:.0f} MB of .dat); 3 s windows, stride 3 s, bio only (`--no-face`); best of {repeats}.",
                 "", "| measurement | wall s | MB/s (raw input) | windows/s | ratio |", "| --- | --- | --- | --- | --- |"]

        base_s, windows = best_of(repeats, lambda: reread(root, ids, cfg))
        base_rate = windows / base_s
        lines.append(f"| baseline: re-read .dat + cut windows | {base_s:.2f} | {raw_mb / base_s:,.0f} | "
                     f"{base_rate:,.0f} | 1.00 |")
        print(lines[-1], flush=True)

        for workers in (1, 2):
            def run(workers=workers):
                cache = Path(tempfile.mkdtemp(dir=tmp))
                return cache, prepare_dataset("deap", root, str(cache), cfg, face=False, workers=workers,
                                              progress=False)

            wall, (_, report) = best_of(repeats, run, cleanup=lambda result: shutil.rmtree(result[0]))
            assert report["windows"] == windows, report
            per_process = f" ({raw_mb / wall / workers:,.0f} per process)" if workers > 1 else ""
            lines.append(f"| prepare, {workers} worker process{'es' if workers > 1 else ''} | {wall:.2f} | "
                         f"{raw_mb / wall:,.0f}{per_process} | {windows / wall:,.0f} | "
                         f"{windows / wall / base_rate:.2f} |")
            print(lines[-1], flush=True)

        cache = tmp / "cache"
        prepare_dataset("deap", root, str(cache), cfg, face=False, progress=False)
        c = open_cache(str(cache))
        n = len(c.index().subject)
        ds = WindowDataset(c, modality="bio", normalizer=fit_normalizer(c, np.arange(n)))
        for name, rows in (("in order", np.arange(n)), ("shuffled", np.random.default_rng(0).permutation(n))):
            read_all(ds, rows, 256)  # first pass: page faults of the memory map
            wall, count = best_of(repeats, lambda rows=rows: sum(read_all(ds, rows, 256) for _ in range(PASSES)))
            mb = count * ds.channels * ds.samples * 4 / 1e6
            lines.append(f"| cache read, batch 256, normalised bio, {name} ({PASSES} passes) | {wall:.2f} | {mb / wall:,.0f} "
                         f"(float32 out) | {count / wall:,.0f} | {count / wall / base_rate:.2f} |")
            print(lines[-1], flush=True)
        cache_mb = sum(p.stat().st_size for p in cache.iterdir()) / 1e6
        lines += ["", f"Cache size: {cache_mb:.0f} MB for {n:,} windows (float32, uncompressed Arrow IPC, "
                      "memory-mapped). Ratio: windows/s against the baseline."]

        if args.profile:
            (tmp / "profiled").mkdir()
            profile = cProfile.Profile()
            profile.enable()
            prepare_subject("deap", str(root), 1, cfg, False, str(tmp / "profiled"), "fail")
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("prepare", text)


if __name__ == "__main__":
    main()
