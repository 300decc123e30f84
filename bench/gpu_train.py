"""Training throughput on whatever device is present: the training path against the model alone, in one run.

For each modality and batch size (default: face, bio, facebio at 64 and 256, paper preset: convnextv2_nano,
8 frames x 112 px, bio 40 x 384):

* **model alone**: training steps (forward, backward, AdamW) on float inputs already on the device (several
  batches in turn, more than the L2 cache holds), the same :class:`gbvnet.train.steps.Forward`, optimiser and bf16
  autocast (CUDA) as training;
* **training path**: :func:`gbvnet.train.steps.train_epoch` over a window cache on disk, with the
  :class:`~gbvnet.data.loader.BatchLoader` and the augmenting :class:`~gbvnet.data.transform.BatchTransform`:
  exactly what a Ray Train worker runs per epoch;

each eager and, with ``--compile`` (default on CUDA), through ``torch.compile``. Printed per row: samples/s of
both, their ratio (target >= 0.9), MFU (3 x forward FLOPs x samples/s over the bf16 matmul peak measured in the
same run) and peak device memory. The cache holds random windows (throughput does not depend on the values),
written in the project's cache format.

Only torch, timm, numpy, pyarrow and the project's config/model/data/steps modules are imported (no Ray, MLflow,
mne or Optuna), so it runs on a bare GPU machine with a stock PyTorch. Rows are printed as they finish and, with
``--json FILE``, saved after each row.

    python -m bench.gpu_train [--write] [--json out.json]
    python -m bench.gpu_train --preset smoke --batches 4 --windows 16 --modalities bio   # tiny CPU run (tests)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from bench.common import machine, write_section
from gbvnet.config import PRESETS, PrepareConfig, TrainConfig, model_preset
from gbvnet.data import cache as cache_mod
from gbvnet.data import storage
from gbvnet.data.cache import Manifest, SubjectEntry, open_cache
from gbvnet.data.loader import BatchLoader
from gbvnet.data.transform import BatchTransform
from gbvnet.data.window_dataset import WindowDataset, fit_normalizer
from gbvnet.models import GBVNet
from gbvnet.models.summary import count_flops
from gbvnet.train.steps import Forward, make_optimizer, train_epoch


def write_random_cache(path: Path, windows: int, channels: int, samples: int, frames: int, size: int,
                       face: bool = True, per_file: int = 512) -> str:
    """A cache of ``windows`` random windows (bio, and faces if ``face``) in the project's format, one file per
    512 windows."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_bio, n_face = channels * samples, frames * size * size * 3 if face else 0
    names = [f"ch{i}" for i in range(channels)]
    subjects = {}
    for s, start in enumerate(range(0, windows, per_file), start=1):
        n = min(per_file, windows - start)
        columns = {"subject": np.full(n, s), "trial": np.arange(n) // 20, "window": np.arange(n) % 20,
                   "t_start": np.zeros(n), "stim_start": np.zeros(n), "stim_end": np.full(n, 60.0),
                   "valence": rng.uniform(1, 9, n), "arousal": rng.uniform(1, 9, n)}
        columns["label_valence"], columns["label_arousal"] = columns["valence"] > 5, columns["arousal"] > 5
        types = cache_mod.schema(n_bio, n_face)
        arrays = [pa.array(np.asarray(columns[f.name]).astype(f.type.to_pandas_dtype()))
                  for f in types if f.name in columns]
        bio = rng.standard_normal((n, n_bio), dtype=np.float32)
        faces = rng.integers(0, 256, (n, n_face), dtype=np.uint8)
        arrays += [pa.FixedSizeListArray.from_arrays(pa.array(bio.ravel()), n_bio),
                   pa.FixedSizeListArray.from_arrays(pa.array(faces.ravel()), n_face) if face else pa.nulls(n)]
        name = f"subject_{s:02d}.arrow"
        written = cache_mod.write_table(*storage.filesystem(str(path / name)), pa.table(arrays, schema=types))
        subjects[s] = SubjectEntry(file=name, rows=n, trials=(n + 19) // 20, bytes=written, raw_bytes=bio.nbytes,
                                   channels=names, face_rows=n if face else 0, face_frames=0, face_fallbacks=0,
                                   face_fallback_videos=[], skipped=[], warnings=[], seconds=0.0, sources=[])
    cfg = PrepareConfig(window=samples / 128.0, frames=frames, face_size=size)
    manifest = Manifest(dataset="random", root="", config=cfg, config_hash="", face=face, channels=names,
                        rate=cfg.rate, window_samples=samples, frames=frames, face_size=size, subjects=subjects,
                        skipped=[])
    cache_mod.write_manifest(*storage.filesystem(str(path)), manifest)
    return str(path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float | None:
    """bf16 matrix product rate on random data (the MFU denominator), or None off CUDA."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - start) / 1e12


def build(cache, modality: str, preset: str, tc: TrainConfig, device: torch.device, compile: bool, steps: int):
    m = cache.manifest
    mc = model_preset(preset, modality=modality, bio_channels=len(m.channels), bio_samples=m.window_samples,
                      frames=m.frames, image_size=m.face_size)
    torch.manual_seed(0)
    model = GBVNet(mc).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = make_optimizer(model, tc, device, steps)
    return Forward(model, compile=compile), optimizer, scheduler


def model_alone(forward: Forward, optimizer, sets: list[tuple[dict, torch.Tensor]], device: torch.device,
                min_seconds: float) -> float:
    """Samples/s of training steps on input sets already on the device (no data path at all), taken in turn:
    together they exceed the GPU's L2 cache, so the model reads its inputs from memory as in training."""
    def step(model, inputs, y):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(**inputs)["logits"].float(), y)
        loss.backward()
        return loss

    done = 0

    def steps(k: int) -> None:
        nonlocal done
        for _ in range(k):
            inputs, y = sets[done % len(sets)]
            forward.run(lambda model, inputs=inputs, y=y: step(model, inputs, y))
            optimizer.step()
            done += 1

    steps(3)  # warm-up (and compilation)
    sync(device)
    k, elapsed = 0, 0.0
    while elapsed < min_seconds or k < 5:
        start = time.perf_counter()
        steps(5)
        sync(device)
        elapsed, k = elapsed + time.perf_counter() - start, k + 5
    return len(sets[0][1]) * k / elapsed


def input_sets(ds: WindowDataset, transform: BatchTransform, batch: int, device: torch.device,
               l2_bytes: int = 240 * 2**20) -> list[tuple[dict, torch.Tensor]]:
    """Distinct device batches as the training path makes them (augmented: the same memory layout, so one
    compiled graph serves both), enough to hold about 4x an H100/H200 L2 cache (60 MB), at most one epoch."""
    generator = torch.Generator(device).manual_seed(0)
    sets = []
    for b in BatchLoader(ds, np.arange(len(ds) // batch * batch), batch, device, prefetch=0):
        inputs = transform(b, generator)
        sets.append((inputs, b["label"]))
        if len(sets) * sum(t.numel() * t.element_size() for t in inputs.values()) >= l2_bytes:
            break
    return sets


def training_path(forward: Forward, optimizer, scheduler, ds: WindowDataset, transform: BatchTransform,
                  tc: TrainConfig, device: torch.device, min_seconds: float) -> float:
    """Samples/s of :func:`gbvnet.train.steps.train_epoch` over the cache (epochs of shuffled rows, augmented)."""
    rows, epoch = np.arange(len(ds)), 0

    def one_epoch() -> int:
        nonlocal epoch
        order = rows[np.random.default_rng(epoch).permutation(len(rows))]
        generator = torch.Generator(device).manual_seed(epoch)
        epoch += 1
        return train_epoch(forward, BatchLoader(ds, order, tc.batch_size, device), transform, tc, optimizer,
                           scheduler, generator)[1]

    one_epoch()  # warm-up (and compilation)
    seen, elapsed = 0, 0.0
    while elapsed < min_seconds or seen < 5 * tc.batch_size:
        start = time.perf_counter()
        seen += one_epoch()
        elapsed += time.perf_counter() - start
    return seen / elapsed


def measure(cache, modality: str, batch: int, preset: str, device: torch.device, compile: bool,
            min_seconds: float, peak: float | None) -> dict:
    tc = TrainConfig(batch_size=batch, epochs=1000, warmup_epochs=0, augment=True)
    ds = WindowDataset(cache, modality=modality)
    norm = fit_normalizer(cache, np.arange(len(ds))) if modality != "face" else None
    transform = BatchTransform(modality, device, norm)
    steps = len(ds) // batch
    forward, optimizer, scheduler = build(cache, modality, preset, tc, device, compile, steps)
    sets = input_sets(ds, transform, batch, device)
    started = time.perf_counter()
    alone = model_alone(forward, optimizer, sets, device, min_seconds)
    del sets
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the peak of the training path alone
    first = time.perf_counter() - started
    path = training_path(forward, optimizer, scheduler, ds, transform, tc, device, min_seconds)
    flops = count_flops(GBVNet(forward.model.cfg)) if peak else None
    return {"modality": modality, "batch": batch, "compiled": forward.compiled is not None,
            "model_alone": alone, "training_path": path, "ratio": path / alone,
            "mfu_path": 3 * flops * path / (peak * 1e12) if flops else None,
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "first_measurement_s": first}


def check_device_path(cache, device: torch.device, modality: str) -> str:
    """The device path computes what the CPU path computes: every batch of an epoch through the prefetching
    loader on ``device`` equals the synchronous CPU batch, and the (unaugmented) transform agrees."""
    ds = WindowDataset(cache, modality=modality)
    rows = np.random.default_rng(1).permutation(len(ds))[:256]
    norm = fit_normalizer(cache, rows)
    on_device = BatchTransform(modality, device, norm)
    on_cpu = BatchTransform(modality, torch.device("cpu"), norm)
    worst = 0.0
    for a, b in zip(BatchLoader(ds, rows, 32, device), BatchLoader(ds, rows, 32, torch.device("cpu"), prefetch=0),
                    strict=True):
        if not all(torch.equal(a[k].cpu(), b[k]) for k in b):
            raise AssertionError(f"batch of rows {b['row'][:4].tolist()}... differs on {device}")
        x, y = on_device(a), on_cpu(b)
        worst = max(worst, *((x[k].cpu() - y[k]).abs().max().item() for k in y))
    if worst > 1e-4:
        raise AssertionError(f"transform on {device} differs from CPU by up to {worst}")
    return f"check: loader batches identical on {device} and CPU; transform max |diff| {worst:.1e}"


def row(r: dict) -> str:
    mfu = f"{r['mfu_path']:.1%}" if r["mfu_path"] is not None else "-"
    mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-"
    mode = "compiled" if r["compiled"] else "eager"
    return (f"| {r['modality']} | {r['batch']} | {mode} | {r['model_alone']:,.0f} | {r['training_path']:,.0f} | "
            f"{r['ratio']:.2f} | {mfu} | {mem} | {r['first_measurement_s']:.0f} |")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_train", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=PRESETS, default="paper")
    p.add_argument("--modalities", nargs="+", default=["face", "bio", "facebio"])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--windows", type=int, default=2048, help="windows in the random cache (a multiple of the "
                                                                 "batch sizes: no shorter last batch)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--face-size", type=int, default=None, help="default: 112 (paper), 64 (smoke)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure torch.compile (default: on CUDA)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per measurement (at least)")
    p.add_argument("--json", default=None, help="save the rows here after each one")
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compiled = [False] + ([True] if (device.type == "cuda" if args.compile is None else args.compile) else [])
    size = args.face_size or (112 if args.preset == "paper" else 64)
    peak = matmul_peak_tflops(device)
    header = [f"Machine: {machine()}",
              f"Measured bf16 matmul peak: {peak:.0f} TFLOP/s" if peak else "No GPU: fp32 on CPU, no MFU",
              f"Preset {args.preset}, {args.frames} frames x {size} px, bio 40 x 384; random cache of "
              f"{args.windows} windows on local disk; bf16 autocast and channels_last on CUDA; augmentation on"]
    table = ["", "| modality | batch | mode | model alone samples/s | training path samples/s | ratio | MFU (path) | "
              "peak GiB | first measurement s (incl. compile) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(header), flush=True)
    rows: list[dict] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        face = args.modalities != ["bio"]
        cache = open_cache(write_random_cache(Path(tmp), args.windows, 40, 384, args.frames, size, face))
        header.append(check_device_path(cache, device, "facebio" if face else "bio"))
        print("\n".join(header[-1:] + table), flush=True)
        for mode in compiled:  # all eager rows first: they are quick, and a time limit then cuts compiled rows
            for batch in args.batches:
                for modality in args.modalities:
                    try:
                        r = measure(cache, modality, batch, args.preset, device, mode, args.min_seconds, peak)
                    except Exception as exc:  # noqa: BLE001 - reported, the other rows still run
                        failed.append(f"{modality} batch {batch} {'compiled' if mode else 'eager'}: "
                                      f"{type(exc).__name__}: {exc}")
                        print(f"FAILED {failed[-1]}", flush=True)
                        continue
                    rows.append({**r, "device": str(device), "peak_tflops": peak})
                    print(row(r), flush=True)
                    if args.json:
                        Path(args.json).write_text(json.dumps(rows, indent=1))
    if failed:
        raise SystemExit("failed rows:\n" + "\n".join(failed))
    if args.write:
        write_section("GPU training path (bench/gpu_train.py)", "\n".join(header + table + [row(r) for r in rows]))
    return rows


if __name__ == "__main__":
    main()
