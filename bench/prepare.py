"""Preparation and cache-read throughput on a synthetic DEAP corpus (bio only), against baselines in the same run;
with ``--faces``, face preparation at the real cameras' size against grabbing the same videos once.

* prepare: ``prepare_dataset`` into a fresh cache with 1 and 2 worker processes; MB of raw ``.dat`` input per
  second (target >= 200 MB/s per process) and windows per second. Process start-up is included.
* baseline: re-reading the ``.dat`` files and cutting the windows (the reader + ``cut``, what a loader without a
  cache would do per epoch), in windows per second.
* cache read: ``WindowDataset.batch`` over every row in batches of 256, bio modality, standardised by a
  :class:`~gbvnet.data.transform.BatchTransform` on the CPU with the train-fitted normaliser, rows in order (evaluation) and shuffled (training); timed over 10 passes after a first one, so
  the memory-mapped pages are resident as in every epoch after the first (target >= 50,000 windows/s).
  Ratio: windows/s against the baseline.

Faces (``--faces``): synthetic corpora at camera size, DEAP 720x576 at 50 fps (63 s per trial) and MAHNOB
780x580 at 60 fps (stimulus + 5 s), 8 frames per 3 s window cropped to 112 px (the issue's setting).

* grab-only: ``VideoCapture.grab()`` over every frame of every video once (demux + decode, no image made): the
  floor of any per-frame reader;
* face path: :func:`gbvnet.data.video.face_crops` at every sampled time of every window (what ``prepare`` runs per
  trial video: one decoding thread, one OpenCV thread), one process; ratio = grab-only time / face time (target
  >= 0.8);
* per-frame detector (``--reference``): the path before tracking, the full-size frame searched at every sampled
  time (read_frames + Haar cascade), for comparison;
* prepare, end to end: the ``python -m gbvnet.prepare`` command into a fresh cache, one process, as a user runs
  it (process start, imports, signals, faces, the cache written); ratio = grab-only time / its time (target
  >= 0.8).

Best of ``repeats``; grab-only, face path and the prepare command timed in turn, repeat after repeat, so all see
the same machine load.

    python -m bench.prepare [--subjects 4] [--quick] [--profile] [--write]
    python -m bench.prepare --faces [--trials 6] [--repeats 3] [--reference] [--quick] [--write]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import machine, publish
from gbvnet.data import deap
from gbvnet.data.cache import open_cache
from gbvnet.data.registry import DATASETS
from gbvnet.data.transform import BatchTransform
from gbvnet.data.video import CASCADE, face_crops, opencv_threads, read_frames
from gbvnet.data.window_dataset import WindowDataset, fit_normalizer
from gbvnet.data.windows import cut, windows
from gbvnet.prepare import prepare_dataset, prepare_subject


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


def read_all(ds: WindowDataset, transform: BatchTransform, rows: np.ndarray, batch: int) -> int:
    """Model inputs of ``rows`` in batches (read, then normalised by ``transform``); returns the windows read."""
    n = 0
    for start in range(0, len(rows), batch):
        n += len(transform(ds.batch(rows[start:start + batch]))["bio"])
    return n


PASSES = 10  # cache reads are timed over this many passes over all rows
DEAP_FACE_VIDEO_S = 22 * 40 * 63  # the full DEAP face data: subjects 1-22, 40 trials of 63 s


def grab_all(videos: list[Path]) -> int:
    """Grab every frame of every video once (the grab-only baseline); returns the frame count."""
    frames = 0
    for video in videos:
        cap = cv2.VideoCapture(str(video))
        while cap.grab():
            frames += 1
        cap.release()
    return frames


def per_frame_detector(jobs: list[tuple], size: int) -> int:
    """The path before tracking: every sampled full-size frame searched by the cascade; returns crops made."""
    cascade, count = cv2.CascadeClassifier(str(CASCADE)), 0
    for video, times, span in jobs:
        for frame in read_frames(video, times, span):
            h, w = frame.shape[:2]
            cascade.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 1.1, 3, minSize=(min(h, w) // 8,) * 2)
            count += 1
    return count


def face_rows(dataset: str, root: Path, repeats: int, reference: bool, tmp: Path) -> tuple[list[str], float]:
    """The face-bench rows of one corpus, and the face path's seconds per second of video."""
    cfg = DATASETS[dataset].prepare_config(frames=8, face_size=112)
    jobs = []
    for rec in DATASETS[dataset].reader.read_subject(root, 1):
        w = windows(rec, cfg)
        jobs.append((rec.video, (w.frame_times - rec.video_start).ravel(),
                     (rec.stim_end - rec.video_start, rec.duration - rec.video_start)))
    videos = [video for video, _, _ in jobs]
    caps = [cv2.VideoCapture(str(v)) for v in videos]
    (width, height), fps = DATASETS[dataset].camera_size, DATASETS[dataset].camera_fps
    seconds = sum(c.get(cv2.CAP_PROP_FRAME_COUNT) / c.get(cv2.CAP_PROP_FPS) for c in caps)
    grabs, faces, commands, found = [], [], [], []
    for k in range(repeats):  # in turn, so all see the same load
        start = time.perf_counter()
        frames = grab_all(videos)
        grabs.append(time.perf_counter() - start)
        start = time.perf_counter()
        with opencv_threads(1):  # as prepare runs it
            found = [face_crops(video, times, cfg.face_size, span) for video, times, span in jobs]
        faces.append(time.perf_counter() - start)
        commands.append(prepare_command(dataset, root, tmp / f"cache-{dataset}-{k}", cfg))
    grab_s, face_s, command_s = min(grabs), min(faces), min(commands)
    sampled, fallbacks = sum(f.frames for f in found), sum(f.fallbacks for f in found)
    name = f"{dataset.upper()} {width}x{height} @ {fps:g} fps, {len(videos)} video(s), {seconds:.0f} s"
    rows = [f"| {name} | grab-only: every frame once | {grab_s:.2f} | {frames:,} grabbed | 1.00 |",
            f"| {name} | face path (tracked, downscaled detection) | {face_s:.2f} | {sampled:,} cropped, "
            f"{fallbacks} without a face | {grab_s / face_s:.2f} |"]
    if reference:
        start = time.perf_counter()
        per_frame_detector(jobs, cfg.face_size)
        ref_s = time.perf_counter() - start
        rows.append(f"| {name} | per-frame detector on full-size frames (before) | {ref_s:.2f} | {sampled:,} "
                    f"cropped | {grab_s / ref_s:.2f} |")
    rows.append(f"| {name} | prepare, end to end: the `python -m gbvnet.prepare` command (1 process) | "
                f"{command_s:.2f} | {sampled:,} cropped | {grab_s / command_s:.2f} |")
    for row in rows:
        print(row, flush=True)
    return rows, face_s / seconds


def prepare_command(dataset: str, root: Path, cache: Path, cfg) -> float:
    """Wall seconds of ``python -m gbvnet.prepare`` preparing ``root`` with faces into the new folder ``cache``
    (the frame count and crop size of ``cfg``, one process)."""
    command = [sys.executable, "-m", "gbvnet.prepare", "--dataset", dataset, "--root", str(root), "--cache",
               str(cache), "--frames", str(cfg.frames), "--face-size", str(cfg.face_size)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def faces_main(args) -> str:
    trials = 1 if args.quick else args.trials
    repeats = 1 if args.quick else args.repeats
    tmp = Path(tempfile.mkdtemp(prefix="bench-faces-"))
    try:
        corpora = {}
        for dataset in ("deap", "mahnob"):
            size, fps = DATASETS[dataset].camera_size, DATASETS[dataset].camera_fps
            root = corpora[dataset] = tmp / dataset
            print(f"writing {trials} camera-size {dataset} video(s) ...", flush=True)
            stimulus = {"duration": 20.0 if args.quick else 60.0} if dataset == "mahnob" else {}  # DEAP's: 60 s
            DATASETS[dataset].write_synthetic(root, subjects=1, trials=trials, video_size=size, video_fps=fps,
                                              **stimulus)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        lines = [f"Machine: {machine()}; 1-minute load average at the start: {load:.1f} (other jobs share the "
                 "cores, so timings vary between runs)", "",
                 f"Corpora: synthetic, one subject of {trials} trial(s) per dataset at the cameras' size (MJPG); 8 "
                 f"frames per 3 s window, 112 px crops; best of {repeats}, grab-only, face path and prepare "
                 "command timed in turn. Ratio: grab-only time / this time (target for the face path and the "
                 "prepare command: >= 0.8).", "",
                 "| corpus | measurement | wall s | frames | ratio |", "| --- | --- | --- | --- | --- |"]
        per_video_s = {}
        for dataset, root in corpora.items():
            rows, per_video_s[dataset] = face_rows(dataset, root, repeats, args.reference, tmp)
            lines += rows
        lines += ["", f"Face path per hour of video, one process: DEAP {per_video_s['deap'] * 3600 / 60:.1f} min, "
                      f"MAHNOB {per_video_s['mahnob'] * 3600 / 60:.1f} min; the full DEAP face data (22 subjects x "
                      f"40 trials x 63 s = {DEAP_FACE_VIDEO_S / 3600:.1f} h) then takes "
                      f"~{per_video_s['deap'] * DEAP_FACE_VIDEO_S / 3600:.1f} h per process.",
                  f"1-minute load average at the end: {os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0:.1f}."]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=4, help="synthetic DEAP subjects of 40 full trials")
    parser.add_argument("--quick", action="store_true", help="2 subjects, one repetition (--faces: 1 trial)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one subject's preparation")
    parser.add_argument("--faces", action="store_true", help="face preparation at camera size vs grab-only")
    parser.add_argument("--trials", type=int, default=6,
                        help="--faces: trials (videos) per dataset (a real subject has 20-40; at 2 the start-up dominates)")
    parser.add_argument("--reference", action="store_true", help="--faces: also time the per-frame detector")
    parser.add_argument("--repeats", type=int, default=3, help="--faces: timed repeats (the best is reported)")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    if args.faces:
        text = faces_main(args)
        publish("prepare: faces at camera size (bench/prepare.py --faces)", text, args.write)
        return
    subjects = 2 if args.quick else args.subjects
    repeats = 1 if args.quick else 5
    cfg = DATASETS["deap"].prepare_config()
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        root = tmp / "deap"
        deap.write_deap(root, subjects=subjects, trials=40, seed=0, video=False)
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
        ds = WindowDataset(c, modality="bio")
        transform = BatchTransform("bio", torch.device("cpu"), fit_normalizer(c, np.arange(n)))
        for name, rows in (("in order", np.arange(n)), ("shuffled", np.random.default_rng(0).permutation(n))):
            read_all(ds, transform, rows, 256)  # first pass: page faults of the memory map
            wall, count = best_of(repeats, lambda rows=rows: sum(read_all(ds, transform, rows, 256)
                                                                 for _ in range(PASSES)))
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
    publish("prepare", text, args.write)


if __name__ == "__main__":
    main()
