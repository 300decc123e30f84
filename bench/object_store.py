"""Bytes a search reads from object storage, per process, before and after the cache's remote-read changes.

The store is a local folder seen through fsspec as ``counting:///...`` (:class:`CountingFileSystem`): pyarrow does
not know the protocol, so gbvnet reads it exactly as it reads ``s3://`` or ``gs://`` caches, and every byte a file
returns is counted. The search is replayed in one process with the functions each of its processes calls: the
driver (``open_cache(...).index()`` and ``make_job``), then per trial the trial process (``make_job``) and its Ray
Train workers (``open_cache``, ``fit_normalizer``, ``WindowDataset`` and one pass over their training and
validation rows), each with a fresh :class:`~gbvnet.data.cache.Cache`, as separate processes would have. All
trials share one machine (one ``GBVNET_LOCAL_CACHE`` folder).

"Before" runs the ``gbvnet`` package of a git revision (``--baseline``, exported with ``git archive``), "after"
the working tree's; both in subprocesses, with the same synthetic MAHNOB cache (faces included).

    python -m bench.object_store [--baseline REV] [--trials 4] [--workers 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

REPO = Path(__file__).resolve().parents[1]


class _CountedFile:
    """A file object that adds the bytes it returns to :attr:`CountingFileSystem.bytes_read`."""

    def __init__(self, f):
        self._f = f

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        CountingFileSystem.bytes_read += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        CountingFileSystem.bytes_read += n or 0
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


class CountingFileSystem(LocalFileSystem):
    """Local files under the ``counting://`` protocol, counting the bytes read from them (class-wide)."""

    protocol = "counting"
    bytes_read = 0

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        return super()._strip_protocol(path[len("counting://"):] if path.startswith("counting://") else path)

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        return _CountedFile(f) if "r" in mode else f


fsspec.register_implementation("counting", CountingFileSystem, clobber=True)


def prepared_cache(folder: Path) -> Path:
    """A synthetic MAHNOB cache (4 subjects x 6 sessions, 4 face frames of 64 x 64) under ``folder``."""
    from gbvnet.data.sources import synthetic_cache

    return Path(synthetic_cache("mahnob", folder / "corpus", str(folder / "cache"),
                                size={"subjects": 4, "trials": 6, "seed": 0, "duration": 12},
                                prepare={"frames": 4, "face_size": 64}, progress=False))


def measure(cache: Path, trials: int, workers: int) -> dict:
    """Bytes read from the store by the driver and by each trial (trial process + its workers)."""
    import numpy as np

    from gbvnet.config import TrainConfig, model_preset
    from gbvnet.data.cache import open_cache
    from gbvnet.data.window_dataset import WindowDataset, fit_normalizer

    try:
        from gbvnet.folds.protocols import subject_fold
        from gbvnet.train.loop import make_job
    except ImportError:  # the baseline revision has both in gbvnet.train (a module then)
        from gbvnet.train import make_job, subject_fold

    uri = f"counting://{cache}"
    model, train = model_preset("smoke", modality="facebio"), TrainConfig(batch_size=32)
    CountingFileSystem.bytes_read = 0
    fold = subject_fold(open_cache(uri).index(), [1, 2], [3], [])  # the search driver
    make_job(uri, model, train, fold)
    out = {"driver": CountingFileSystem.bytes_read, "trials": []}
    for _ in range(trials):
        CountingFileSystem.bytes_read = 0
        make_job(uri, model, train, fold)  # the trial's process (gbvnet.train.launch.search_trial)
        for rank in range(workers):  # its Ray Train workers (gbvnet.train.loop.train_loop_per_worker)
            cache_w = open_cache(uri)  # the job's cache (URIs are kept as given), whichever revision's job type
            fit_normalizer(cache_w, fold.train)  # read by every worker (its transform standardises on the device)
            ds = WindowDataset(cache_w, modality="facebio")
            for rows in (fold.train[rank::workers], fold.val[rank::workers]):
                for start in range(0, len(rows), 32):
                    ds.batch(np.asarray(rows[start:start + 32]))
        out["trials"].append(CountingFileSystem.bytes_read)
    out["cache_bytes"] = sum(p.stat().st_size for p in cache.glob("*.arrow"))
    return out


def export_package(rev: str, into: Path) -> Path:
    """The ``gbvnet`` package of git revision ``rev``, written under ``into``."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "gbvnet"], cwd=REPO, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_side(package_root: Path, cache: Path, trials: int, workers: int, local_copies: Path) -> dict:
    """:func:`measure` in a subprocess importing ``gbvnet`` from ``package_root`` (run from the cache's folder:
    ``python -m`` puts the working directory first on the path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), str(REPO)]),
           "GBVNET_LOCAL_CACHE": str(local_copies)}
    code = ("import gbvnet, sys; from bench.object_store import main; "
            "print(gbvnet.__file__, file=sys.stderr); main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "--measure", str(cache), "--trials", str(trials),
                           "--workers", str(workers)], env=env, cwd=cache, capture_output=True, text=True)
    if proc.returncode or not proc.stderr.startswith(str(package_root)):
        raise RuntimeError(f"measurement with {package_root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mb(n: float) -> str:
    return f"{n / 2**20:.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="b42dfae", help="git revision measured as 'before'")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers per trial")
    p.add_argument("--write", action="store_true", help="replace this section of bench/RESULTS.md")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one side, in a subprocess
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.trials, args.workers)))
        return

    from bench.common import machine, publish

    with tempfile.TemporaryDirectory(prefix="gbvnet-bench-store-") as tmp:
        tmp = Path(tmp)
        cache = prepared_cache(tmp)
        sides = {f"before ({args.baseline})": export_package(args.baseline, tmp / "baseline"),
                 "after (this tree)": REPO}
        results = {name: run_side(root, cache, args.trials, args.workers, tmp / f"copies-{i}")
                   for i, (name, root) in enumerate(sides.items())}
        shutil.rmtree(tmp / "baseline", ignore_errors=True)
    size = next(iter(results.values()))["cache_bytes"]
    lines = [f"Machine: {machine()}",
             f"Cache: synthetic MAHNOB, 4 subjects x 6 sessions, faces (4 frames of 64 x 64): {mb(size)} MiB in "
             f"subject files. Search replay: driver, then {args.trials} trials of {args.workers} Ray Train "
             "workers each (facebio), all on one machine. MiB read from the store:", "",
             "| code | driver | trial 1 | each later trial | whole search |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        later = r["trials"][1:] or [0]
        lines.append(f"| {name} | {mb(r['driver'])} | {mb(r['trials'][0])} | "
                     f"{mb(max(later))} | {mb(r['driver'] + sum(r['trials']))} |")
    body = "\n".join(lines)
    publish("Object storage reads (bench/object_store.py)", body, args.write)


if __name__ == "__main__":
    main()
