"""The training passes shared by the Ray worker and the benchmarks (gbvnet.train.steps), compilation and its fallback,
and the compute settings (workers, CPU threads, GPU shares) that reach Ray."""

from __future__ import annotations

import argparse
import copy
import functools

import numpy as np
import pytest
import torch

from gbvnet.cli import add_compute_arguments, apply_compute_arguments
from gbvnet.config import ConfigError, TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.data.loader import BatchLoader
from gbvnet.data.transform import BatchTransform
from gbvnet.data.window_dataset import WindowDataset, fit_normalizer
from gbvnet.models import GBVNet
from gbvnet.train.launch import scaling
from gbvnet.train.loop import fit_model_to_cache
from gbvnet.train.steps import Forward, evaluate, make_optimizer, train_epoch

CPU = torch.device("cpu")


def bio_setup(cache_dir, compile: bool, batch_size: int = 8):
    cache = open_cache(str(cache_dir))
    rows = np.arange(len(WindowDataset(cache, modality="bio")))
    tc = TrainConfig(epochs=2, batch_size=batch_size, lr=3e-3, warmup_epochs=0)
    ds = WindowDataset(cache, target=tc.target, modality="bio")
    transform = BatchTransform("bio", CPU, fit_normalizer(cache, rows))
    torch.manual_seed(0)
    model = GBVNet(fit_model_to_cache(model_preset("smoke", modality="bio"), cache.manifest))
    optimizer, scheduler = make_optimizer(model, tc, CPU, steps_per_epoch=-(-len(rows) // tc.batch_size))
    return ds, rows, tc, transform, Forward(model, compile=compile), optimizer, scheduler


def two_epochs(cache_dir, compile: bool, batch_size: int = 8):
    ds, rows, tc, transform, forward, optimizer, scheduler = bio_setup(cache_dir, compile, batch_size)
    losses = []
    for epoch in range(tc.epochs):
        generator = torch.Generator().manual_seed(epoch)
        loss, seen = train_epoch(forward, BatchLoader(ds, rows, tc.batch_size, CPU), transform, tc, optimizer,
                                 scheduler, generator)
        assert seen == len(rows)
        losses.append(loss / seen)
    cm, val_loss, _ = evaluate(forward.model, BatchLoader(ds, rows, tc.batch_size, CPU), transform)
    assert cm.sum() == len(rows) and np.isfinite(val_loss)
    return losses, forward


def test_compiled_and_eager_training_agree(small_mahnob_cache, monkeypatch):
    # Dynamo graph capture + AOTAutograd (forward and backward graphs), without inductor's C++ code generation,
    # which costs minutes on 2 cores; bench/gpu_train.py runs the default inductor backend on a GPU.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    eager, _ = two_epochs(small_mahnob_cache, compile=False, batch_size=5)
    torch._dynamo.utils.counters.clear()
    compiled, forward = two_epochs(small_mahnob_cache, compile=True, batch_size=5)
    assert forward.compiled is not None, "compilation fell back to eager on CPU"
    # one graph, for the full batch: each epoch's shorter last batch runs eagerly (no second shape to compile)
    assert len(bio_setup(small_mahnob_cache, False)[1]) % 5, "the cache must leave a shorter last batch"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert np.isfinite(eager).all() and eager[1] < eager[0]  # it learns
    np.testing.assert_allclose(compiled, eager, rtol=2e-3)  # the same function, compiled


def test_failed_compilation_warns_and_trains_eagerly(small_mahnob_cache, monkeypatch):
    def broken_compile(model, **kwargs):
        def run(**inputs):
            raise RuntimeError("inductor: no working C++ compiler\nlong traceback")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    ds, rows, tc, transform, forward, optimizer, scheduler = bio_setup(small_mahnob_cache, compile=True)
    before = copy.deepcopy(forward.model.state_dict())
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed \(RuntimeError: inductor: no working C\+\+ "
                                            r"compiler\); continuing without compilation"):
        loss, seen = train_epoch(forward, BatchLoader(ds, rows, tc.batch_size, CPU), transform, tc, optimizer,
                                 scheduler, torch.Generator().manual_seed(0))
    assert forward.compiled is None and seen == len(rows) and np.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in forward.model.state_dict().items())


def compute_args(*argv: str) -> TrainConfig:
    p = argparse.ArgumentParser()
    add_compute_arguments(p)  # --workers-per-trial: an old spelling of --workers, still accepted
    return apply_compute_arguments(p.parse_args(list(argv)), TrainConfig())


def test_gpu_shares_and_cpus_reach_the_trainer_resources():
    tc = compute_args("--gpus-per-worker", "0.25", "--cpus-per-worker", "2", "--no-compile")
    assert (tc.num_workers, tc.gpus_per_worker, tc.cpus_per_worker, tc.compile) == (1, 0.25, 2.0, False)
    s = scaling(tc)
    assert s.use_gpu and s.num_workers == 1 and s.num_gpus_per_worker == 0.25 and s.num_cpus_per_worker == 2
    s = scaling(tc, in_tune=True)  # the trial's driver holds 0.01 CPU; the worker takes the rest
    assert s.num_gpus_per_worker == 0.25 and s.num_cpus_per_worker == pytest.approx(1.99)
    s = scaling(compute_args("--workers-per-trial", "2", "--gpus-per-worker", "1"))
    assert s.use_gpu and s.num_workers == 2 and s.num_gpus_per_worker == 1
    s = scaling(compute_args("--gpus-per-worker", "0"))
    assert not s.use_gpu and s.num_gpus_per_worker == 0
    s = scaling(compute_args())  # default: a GPU per worker only where the cluster has GPUs (Ray not started)
    assert not s.use_gpu and compute_args().compile is None


@pytest.mark.parametrize("argv, message", [
    (("--gpus-per-worker", "-1"), "gpus_per_worker must be >= 0"),
    (("--gpus-per-worker", "1.5"), "whole number of GPUs"),
    (("--gpus-per-worker", "0.5", "--workers-per-trial", "2"), "DDP needs a GPU per worker"),
    (("--cpus-per-worker", "0"), "cpus_per_worker must be > 0"),
])
def test_bad_compute_settings_are_refused(argv, message):
    with pytest.raises(ConfigError, match=message):
        compute_args(*argv)


def test_gpu_bench_runs_on_cpu_and_imports_no_cluster_stack():
    """bench/gpu_train.py must run on a bare GPU machine (torch, timm, numpy, pyarrow only) and on CPU."""
    import subprocess
    import sys

    probe = ("import sys, bench.gpu_train; "
             "print(sorted(m for m in ('ray', 'mlflow', 'mne', 'optuna', 'sklearn') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    from bench.gpu_train import main

    rows = main(["--preset", "smoke", "--modalities", "bio", "--batches", "8", "--windows", "16",
                 "--min-seconds", "0.05", "--frames", "2", "--face-size", "32"])
    assert [(r["modality"], r["batch"], r["compiled"]) for r in rows] == [("bio", 8, False)]
    r = rows[0]
    assert r["model_alone"] > 0 and r["training_path"] > 0
    assert r["ratio"] == pytest.approx(r["training_path"] / r["model_alone"])
