"""The training and evaluation passes, shared by the Ray Train worker loop and the benchmarks.

This module imports only torch, numpy and the project's config/data/metrics modules (no Ray, MLflow, mne or
Optuna), so a bare GPU machine with a stock PyTorch can run exactly what a Ray worker runs
(``bench/gpu_train.py``).

Per batch: :class:`~gbvnet.data.loader.BatchLoader` delivers the cached values on the device (the next batches
read and copied in the background), :class:`~gbvnet.data.transform.BatchTransform` turns them into model inputs
there (augmenting in training), the model runs under bf16 autocast on CUDA, and losses and confusion counts are
summed on the device: the host waits for the device once per pass, not once per batch.

``torch.compile`` (:class:`Forward`) is on by default on CUDA (``TrainConfig.compile = None``); if compiling
fails the pass continues eagerly with a warning. A run compiles one shape, the full training batch (the shorter
last batch of an epoch runs eagerly), and PyTorch keeps what it compiled in its on-disk caches (Inductor's FX
graph and AOTAutograd caches under ``TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``, one per
machine): the next fold or trial of the same model on that machine, in the same process or a new one, loads the
compiled graph instead of compiling it again.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gbvnet.config import TrainConfig
from gbvnet.data.transform import BatchTransform


def lr_lambda(epochs: int, warmup: int, steps_per_epoch: int):
    """Linear warm-up for ``warmup`` epochs, then cosine decay to 0, per optimiser step."""
    total, warm = max(1, epochs * steps_per_epoch), warmup * steps_per_epoch

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f


def make_optimizer(model: nn.Module, tc: TrainConfig, device: torch.device, steps_per_epoch: int):
    """AdamW (the fused CUDA kernel on GPUs) and its warm-up + cosine schedule."""
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, **fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.epochs, tc.warmup_epochs, steps_per_epoch))
    return optimizer, scheduler


def use_compile(setting: bool | None, device: torch.device) -> bool:
    """``TrainConfig.compile``: ``None`` compiles on CUDA only (where it pays), ``True``/``False`` as said."""
    return torch.device(device).type == "cuda" if setting is None else bool(setting)


class Forward:
    """Calls ``model``, through ``torch.compile`` when ``compile`` is set.

    Shapes are static (``dynamic=False``) and one is compiled: :meth:`run` takes the compiled model for full
    batches and the eager one for a step marked ``eager`` (:func:`train_epoch`: an epoch's shorter last batch),
    so a run compiles once, and a later run of the same model on the machine finds that one graph in PyTorch's
    compile cache. If the compiled step raises (compilation failed, an unsupported setup), :meth:`run` warns once,
    drops the compiled model and runs the step again eagerly.
    """

    def __init__(self, model: nn.Module, compile: bool = False):
        self.model = model
        if compile:
            # Forget graphs compiled for earlier models in this process (a Tune trial process runs one fold or
            # trial after another): dynamo's per-function recompile limit would otherwise turn later ones eager.
            torch._dynamo.reset()
        self.compiled = torch.compile(model, dynamic=False) if compile else None

    def run(self, step: Callable[[Callable], torch.Tensor], eager: bool = False) -> torch.Tensor:
        """``step(model)`` with the compiled model, or with the eager one when ``eager`` (or nothing compiled)."""
        if self.compiled is None or eager:
            return step(self.model)
        try:
            return step(self.compiled)
        except Exception as exc:  # noqa: BLE001 - any failure of the compiled path falls back to eager
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {message[:200]}); continuing without "
                          "compilation (set compile: false / --no-compile to skip it)", RuntimeWarning, stacklevel=2)
            self.compiled = None
            return step(self.model)


def train_epoch(forward: Forward, batches: Iterable[dict], transform: BatchTransform, tc: TrainConfig,
                optimizer, scheduler, generator: torch.Generator | None,
                weight: torch.Tensor | None = None) -> tuple[float, int]:
    """One pass over ``batches`` (a :class:`~gbvnet.data.loader.BatchLoader` over already shuffled rows);
    returns (summed loss, windows seen). Augments with ``generator`` when ``tc.augment``."""
    forward.model.train()
    device = transform.device
    autocast = device.type == "cuda"
    loss_sum, seen = torch.zeros((), device=device), 0
    for batch in batches:
        inputs = transform(batch, generator if tc.augment else None)
        y = batch["label"]

        def step(model: Callable, inputs: dict = inputs, y: torch.Tensor = y) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(**inputs)["logits"]
            loss = F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=tc.label_smoothing)
            loss.backward()
            return loss

        loss = forward.run(step, eager=len(y) < tc.batch_size)  # one compiled shape: the full batch
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(y)
        seen += len(y)
    return float(loss_sum), seen


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], transform: BatchTransform
             ) -> tuple[np.ndarray, float, float]:
    """Confusion matrix, summed loss and summed face-gate weight over ``batches`` (eager ``model``)."""
    model.eval()
    device = transform.device
    counts = torch.zeros(4, device=device)
    loss_sum, gate_sum = torch.zeros((), device=device), torch.zeros((), device=device)
    for batch in batches:
        y = batch["label"]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(**transform(batch))
        logits = out["logits"].float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        counts += torch.bincount(y * 2 + logits.argmax(1), minlength=4)
        if "gates" in out:
            gate_sum += out["gates"][:, 0].float().mean(1).sum()
    cm = counts.cpu().numpy().astype(np.float64).reshape(2, 2)  # rows: true class, columns: predicted
    return cm, float(loss_sum), float(gate_sum)
