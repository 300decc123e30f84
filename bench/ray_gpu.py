"""GBV-Net on one GPU under Ray, observed: packed folds and trials, compile time per fold, and the bio step.

One command, meant to finish in under 8 minutes on one H100/H200 (``bash bench/gpu_run.sh`` installs Ray, Optuna
and the MLflow client from carried wheels first). On random caches in the project's format (throughput does not
depend on the values) it runs, each part publishing its table as soon as it is done:

a. **Packed folds**: a LOSO evaluation through the CLI's code path (``gbvnet.evaluation.loso.main``: folds as one-worker
   Tune trials, MLflow logging, scoring), bio and then face+bio at the paper preset, once with the folds sharing
   the GPU (``--gpus-per-worker 0.25 --concurrent 4`` for bio, ``0.5`` and ``2`` for face+bio) and once
   one at a time (``--concurrent 1``, same share). Per fold: its start and end (from Tune's results) and
   its training samples/s after the first epoch (which compiles); in total: the sum of those rates and the
   windows trained over the wall time. The processes seen on the GPU (``nvidia-smi``, polled) prove the folds
   shared it; the folds' intervals prove they ran at once.
b. **Search**: ``tune/search.py``'s ``main`` with 4 bio trials at 0.25 GPU, 4 at a time (Optuna + ASHA).
c. **Compile time per fold**: the first training step of a freshly built model, compiled (what a fold pays
   before training), in a new process and again in the same process (a later fold in a reused Tune process),
   with Inductor's on-disk caches empty (a cold machine), warm (a later process on the same machine), and
   disabled (``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``).
d. **Bio step**: the bio model alone against the training path at batch 256, eager and compiled
   (:func:`bench.gpu_train.measure`; target >= 0.9).

Parts run in the order a, d, c, b (``--parts``) while the time budget (``--budget``) lasts; a part that would
start after it is reported as skipped. ``--smoke`` runs every part at a tiny size on the CPU (the smoke preset, folds and
trials sharing the CPUs instead of a GPU): it proves the script works, and on the CPU part c measures the
compile cache too.

    python -m bench.ray_gpu [--write]                # one GPU
    python -m bench.ray_gpu --smoke [--write]        # CPU, tiny
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import machine, publish
from bench.gpu_train import measure, sync, write_random_cache
from gbvnet.config import TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.data.transform import BatchTransform
from gbvnet.models import GBVNet
from gbvnet.train.steps import Forward, make_optimizer

TITLE = "GBV-Net on a GPU under Ray (bench/ray_gpu.py)"
PARTS = ("folds", "bio-step", "compile", "search")  # in the order they run


@dataclass
class Size:
    """How big each part runs."""

    preset: str
    subjects: int  # per cache: each subject one file of ``windows`` windows
    bio_windows: int
    face_windows: int
    frames: int
    face_size: int
    epochs: int
    batch: int
    folds: int  # bio folds evaluated (the first subjects as test subjects)
    face_folds: int  # face+bio folds
    bio_share: float  # GPU share per fold / trial (0 on the CPU)
    face_share: float
    search_epochs: int
    step_windows: int  # part d's cache
    min_seconds: float  # part d's timed seconds per measurement


GPU = Size("paper", 6, 4096, 512, 8, 112, 4, 256, 4, 2, 0.25, 0.5, 3, 8192, 3.0)
SMOKE = Size("smoke", 5, 96, 48, 2, 32, 2, 16, 4, 2, 0.0, 0.0, 2, 64, 0.2)


# --------------------------------------------------------------------------------------------------- helpers
class GpuProcesses:
    """Polls ``nvidia-smi`` for the processes using the GPU; ``most`` is the largest number seen at once."""

    def __init__(self, every: float = 1.0):
        self.most, self.pids, self.every = 0, set(), every
        self.available = torch.cuda.is_available()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                return
            pids = {line.strip() for line in out.splitlines() if line.strip().isdigit()}
            self.pids |= pids
            self.most = max(self.most, len(pids))

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def describe(self) -> str:
        if not self.available:
            return "no GPU"
        return f"{self.most} at once ({len(self.pids)} in all)" if self.pids else "none listed by nvidia-smi"


def trial_histories(experiment_dir: str) -> list[list[dict]]:
    """Every trial's reported rows (one per epoch) of the Tune experiment at ``experiment_dir``."""
    histories = []
    for path in sorted(glob.glob(os.path.join(experiment_dir, "*", "result.json"))):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if rows:
            histories.append(rows)
    return histories


def trial_summary(rows: list[dict]) -> dict:
    """One trial: start/end (wall clock), its training samples/s after the first epoch, the first epoch's extra
    seconds (compilation, mostly), windows trained, whether it ran compiled on CUDA."""
    start = rows[0]["timestamp"] - rows[0]["time_total_s"]
    end = rows[-1]["timestamp"]
    later = rows[1:] or rows
    rate = sum(r["train_windows"] for r in later) / max(sum(r["train_time_s"] for r in later), 1e-9)
    first_extra = rows[0]["train_time_s"] - rows[0]["train_windows"] / rate
    return {"start": start, "end": end, "rate": rate, "first_extra_s": first_extra, "pid": rows[0].get("pid"),
            "windows": sum(r["train_windows"] for r in rows), "epochs": len(rows),
            "cuda": bool(rows[0].get("cuda")), "compiled": bool(rows[0].get("compiled"))}


def overlap(trials: list[dict]) -> int:
    """The most trials running at one instant, counting only overlaps longer than 1 s (Tune's timestamps are whole
    seconds)."""
    events = sorted([(t["start"], 1) for t in trials] + [(t["end"] - 1.0, -1) for t in trials])
    most = running = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


# --------------------------------------------------------------------------------------------------- part a
def evaluate_folds(cache: str, modality: str, size: Size, folds: int, share: float, parallel: int,
                   workdir: Path, cpus_per_worker: float) -> dict:
    """One LOSO evaluation through ``gbvnet.evaluation.loso.main``; its folds' summaries and wall time."""
    from gbvnet.evaluation import loso

    name = f"{modality}-{share}-x{parallel}"
    storage = workdir / f"ray-{name}"
    argv = ["--dataset", "deap", "--cache", cache, "--modality", modality, "--preset", size.preset,
            "--epochs", str(size.epochs), "--patience", str(size.epochs), "--batch-size", str(size.batch),
            "--only-test-subjects", *map(str, range(1, folds + 1)), "--concurrent", str(parallel),
            "--gpus-per-worker", str(share), "--cpus-per-worker", str(cpus_per_worker),
            "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--experiment", f"ray-gpu-{name}",
            "--storage", str(storage), "--output", str(workdir / f"{name}.json"), "--quiet"]
    started = time.time()
    with GpuProcesses() as gpu:
        document = loso.main(argv)
    wall = time.time() - started
    (experiment,) = glob.glob(str(storage / "eval-loso-*"))
    trials = sorted((trial_summary(rows) for rows in trial_histories(experiment)), key=lambda t: t["start"])
    if len(trials) != folds:
        raise RuntimeError(f"{name}: {len(trials)} fold histories, expected {folds}")
    return {"name": name, "modality": modality, "share": share, "parallel": parallel, "wall": wall,
            "trials": trials, "gpu": gpu.describe(), "f1": document["aggregate"].get("macro_f1_mean")}


def fold_row(run: dict) -> str:
    trials, t0 = run["trials"], min(t["start"] for t in run["trials"])
    span = max(t["end"] for t in trials) - t0
    return (f"| {run['modality']} | {run['share']:g} | {run['parallel']} | {overlap(trials)} | {run['gpu']} | "
            + " / ".join(f"{t['start'] - t0:.0f}-{t['end'] - t0:.0f}" for t in trials) + " | "
            + " / ".join(f"{t['rate']:,.0f}" for t in trials) + f" | {sum(t['rate'] for t in trials):,.0f} | "
            + f"{sum(t['windows'] for t in trials) / span:,.0f} | {span:.0f} / {run['wall']:.0f} | "
            + " / ".join(f"{t['first_extra_s']:.0f}" for t in trials) + " | "
            + ("cuda" if all(t["cuda"] for t in trials) else "cpu")
            + (", compiled" if all(t["compiled"] for t in trials) else "") + " |")


def packing_summary(runs: list[dict]) -> list[str]:
    """Per modality: the packed folds' summed rate against one fold alone (the mean rate of the one-at-a-time
    run), the ratio the targets name (bio 4 x 0.25 >= 3x, face+bio 2 x 0.5 >= 1.3x)."""
    lines = []
    for alone, packed in zip(runs[::2], runs[1::2], strict=False):  # a budget may cut the last packed run
        single = sum(t["rate"] for t in alone["trials"]) / len(alone["trials"])
        together = sum(t["rate"] for t in packed["trials"])
        lines.append(f"- {packed['modality']}: {packed['parallel']} folds at {packed['share']:g} GPU train at "
                     f"{together:,.0f} samples/s together, {together / single:.2f}x one fold alone "
                     f"({single:,.0f}); most folds running at once: {overlap(packed['trials'])}")
    return lines


FOLD_HEADER = ["| modality | GPU share | folds in parallel | most at once (intervals) | processes on the GPU | "
               "fold intervals s (from the first start) | per-fold samples/s after epoch 1 | sum of per-fold "
               "samples/s | windows trained / s (first start to last end) | folds s / evaluation s | "
               "first epoch's extra s (compile) | device |",
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]


# --------------------------------------------------------------------------------------------------- part b
def search_trials(cache: str, size: Size, share: float, workdir: Path, cpus_per_worker: float) -> dict:
    """4 bio trials through ``tune/search.py``'s ``main``, 4 at a time at ``share`` GPU."""
    from gbvnet.search import cli as search

    storage = workdir / "ray-search"
    argv = ["--dataset", "deap", "--cache", cache, "--modality", "bio", "--space", size.preset,
            "--search-trials", "4", "--concurrent", "4", "--search-epochs", str(size.search_epochs),
            "--search-subjects", *map(str, range(1, size.subjects + 1)),
            "--gpus-per-worker", str(share), "--cpus-per-worker", str(cpus_per_worker),
            "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--storage", str(storage), "--name", "search",
            "--output", str(workdir / "best.yaml"), "--quiet"]
    started = time.time()
    with GpuProcesses() as gpu:
        document = search.main(argv)
    wall = time.time() - started
    trials = sorted((trial_summary(rows) for rows in trial_histories(str(storage / "search"))),
                    key=lambda t: t["start"])
    return {"trials": trials, "wall": wall, "gpu": gpu.describe(), "share": share,
            "best": document["search"]["best_val_macro_f1"]}


# --------------------------------------------------------------------------------------------------- part c
def first_steps(modality: str, preset: str, batch: int, frames: int, size: int) -> dict:
    """Seconds of one eager training step, then of the first compiled step of a new model, twice (the second
    as a later fold in the same process: :class:`~gbvnet.train.steps.Forward` resets dynamo and compiles again)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mc = model_preset(preset, modality=modality, bio_channels=40, bio_samples=384, frames=frames, image_size=size)
    generator = torch.Generator(device).manual_seed(0)
    raw = {"bio": torch.randn(batch, 40, 384, device=device),
           "face": torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, device=device)}
    inputs = BatchTransform(modality, device)(raw, generator)
    y = torch.randint(0, 2, (batch,), device=device)

    def seconds(compile: bool) -> float:
        torch.manual_seed(0)
        model = GBVNet(mc).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        forward = Forward(model, compile=compile)
        optimizer, _ = make_optimizer(model, TrainConfig(), device, 1)

        def step(m):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(m(**inputs)["logits"].float(), y)
            loss.backward()
            return loss

        sync(device)
        start = time.perf_counter()
        forward.run(step)
        optimizer.step()
        sync(device)
        if compile and forward.compiled is None:
            raise RuntimeError("compilation failed (see the warning)")
        return time.perf_counter() - start

    seconds(False)  # CUDA context, cuDNN and allocator warm-up
    eager = seconds(False)
    return {"eager_s": eager, "first_s": seconds(True), "second_s": seconds(True)}


def probe(modality: str, size: Size, env: dict) -> dict:
    """:func:`first_steps` in a new Python process with ``env`` (the compile cache settings)."""
    args = json.dumps([modality, size.preset, size.batch, size.frames, size.face_size])
    done = subprocess.run([sys.executable, "-m", "bench.ray_gpu", "--probe", args], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[1])
    if done.returncode:
        raise RuntimeError(f"compile probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_rows(modality: str, size: Size, budget: Budget) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as off:
        cases = [("empty (cold machine)", {"TORCHINDUCTOR_CACHE_DIR": cache}),
                 ("warm (a later process)", {"TORCHINDUCTOR_CACHE_DIR": cache}),
                 ("disabled", {"TORCHINDUCTOR_CACHE_DIR": off, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"})]
        for label, env in cases:
            if budget.left() < 0:
                rows.append(f"| {modality} | {label} | skipped: time budget spent | | |")
                continue
            r = probe(modality, size, env)
            rows.append(f"| {modality} | {label} | {r['first_s']:.1f} | {r['second_s']:.1f} | {r['eager_s']:.2f} |")
            print(rows[-1], flush=True)
    return rows


COMPILE_HEADER = ["| modality | Inductor cache | first compiled step, new process s | first compiled step of a "
                  "new model, same process s (a later fold) | eager step s |", "| --- | --- | --- | --- | --- |"]


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.ray_gpu", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (proves the script works)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--budget", type=float, default=450.0, help="seconds; later parts are skipped past it")
    p.add_argument("--compile-modality", default=None, help="part c's model (default facebio; bio with --smoke)")
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md (after each part)")
    p.add_argument("--probe", help=argparse.SUPPRESS)  # part c's child process: JSON [modality, preset, ...]
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(first_steps(*json.loads(args.probe))))
        return {}
    import ray

    size = SMOKE if args.smoke else GPU
    gpus = torch.cuda.device_count()
    if not gpus and not args.smoke:
        raise SystemExit("no GPU: run with --smoke for the CPU check")
    budget = Budget(args.budget)
    bio_share, face_share = (size.bio_share, size.face_share) if gpus else (0.0, 0.0)
    cpus = os.cpu_count() or 2
    # four folds or trials at once: each worker's CPU share (CPU-side reads, the transform's host work)
    cpus_per_worker = max(1.0, (cpus - 2) // 4) if gpus else 1.0
    lines = [f"Machine: {machine()}" + ("" if gpus else " (smoke run: tiny sizes on the CPU, no GPU shares)"),
             f"Preset {size.preset}; batch {size.batch}; {size.epochs} epochs per fold; {size.folds} bio and "
             f"{size.face_folds} face+bio LOSO folds of {size.subjects} random subjects ({size.bio_windows} bio / {size.face_windows} face+bio windows each, "
             f"{size.frames} frames x {size.face_size} px); {cpus_per_worker:g} CPUs per fold"]
    sections: list[str] = []

    def emit(text: str) -> None:
        sections.append(text)
        publish(TITLE, "\n".join(lines + [""] + sections), args.write)

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bio = write_random_cache(work / "bio", size.subjects * size.bio_windows, 40, 384, size.frames,
                                 size.face_size, face=False, per_file=size.bio_windows)
        # Ray's workers run torch with the CPUs their trial reserves; the GPUs are declared as found
        ray.init(num_cpus=max(cpus, 4), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
        try:
            if "folds" in args.parts:
                face = write_random_cache(work / "face", size.subjects * size.face_windows, 40, 384, size.frames,
                                          size.face_size, face=True, per_file=size.face_windows)
                runs = []
                for cache, modality, folds, share, packed in ((bio, "bio", size.folds, bio_share, 4),
                                                              (face, "facebio", size.face_folds, face_share, 2)):
                    for parallel in (1, packed):
                        if budget.left() > 0:
                            runs.append(evaluate_folds(cache, modality, size, folds, share, parallel, work,
                                                       cpus_per_worker))
                            print(fold_row(runs[-1]), flush=True)
                results["folds"] = runs
                emit("\n".join(["a. LOSO folds through `evaluation.loso` (one-worker Tune trials), one at a time "
                                "and packed:", "", *FOLD_HEADER, *map(fold_row, runs), "",
                                *packing_summary(runs)]))
            if "bio-step" in args.parts and budget.left() > 0:
                device = torch.device("cuda" if gpus else "cpu")
                step_cache = open_cache(write_random_cache(work / "step", size.step_windows, 40, 384, size.frames,
                                                           size.face_size, face=False))
                rows = [measure(step_cache, "bio", size.batch, size.preset, device, compiled, size.min_seconds,
                                None) for compiled in ([False, True] if gpus else [False])]
                results["bio-step"] = rows
                emit("\n".join([f"d. Bio step at batch {size.batch} ({size.step_windows}-window cache; target: "
                                "training path >= 0.9x the model alone):", "",
                                "| mode | model alone samples/s | training path samples/s | ratio |",
                                "| --- | --- | --- | --- |",
                                *[f"| {'compiled' if r['compiled'] else 'eager'} | {r['model_alone']:,.0f} | "
                                  f"{r['training_path']:,.0f} | {r['ratio']:.2f} |" for r in rows]]))
            if "compile" in args.parts and budget.left() > 0:
                modality = args.compile_modality or ("bio" if args.smoke else "facebio")
                rows = compile_rows(modality, size, budget)
                results["compile"] = rows
                emit("\n".join([f"c. Compile time per fold (Inductor on the {'GPU' if gpus else 'CPU'}, batch "
                                f"{size.batch}; the eager step is the same step uncompiled):", "",
                                *COMPILE_HEADER, *rows]))
            if "search" in args.parts and budget.left() > 0:
                s = search_trials(bio, size, bio_share, work, cpus_per_worker)
                results["search"] = s
                emit("\n".join([
                    f"b. Search through `tune/search.py` (4 bio trials at {s['share']:g} GPU, 4 at a time, Optuna + "
                    "ASHA):", "",
                    f"- most trials running at once: {overlap(s['trials'])} of {len(s['trials'])}; processes on "
                    f"the GPU: {s['gpu']}; wall {s['wall']:.0f} s; best val macro-F1 {s['best']:.3f}",
                    "- per-trial samples/s after epoch 1: " + " / ".join(f"{t['rate']:,.0f}" for t in s["trials"])
                    + f" (sum {sum(t['rate'] for t in s['trials']):,.0f})"]))
        finally:
            ray.shutdown()
    skipped = [part for part in args.parts if part not in results]
    if skipped:
        emit(f"Skipped (time budget of {args.budget:.0f} s spent): {', '.join(skipped)}")
    return results


if __name__ == "__main__":
    main()
