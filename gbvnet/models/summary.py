"""Size of a GBV-Net: parameter counts per branch and forward FLOPs per sample (used by ``python -m gbvnet.models``
and the benchmarks' MFU).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; 1 multiply-add =
2 FLOPs).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from gbvnet.models.gbvnet import GBVNet


def example_inputs(model: GBVNet, batch: int = 1) -> dict[str, torch.Tensor]:
    """Random inputs of the shapes ``model`` expects, for the modalities it uses."""
    c = model.cfg
    inputs = {}
    if model.face is not None:
        inputs["face"] = torch.randn(batch, c.face.frames, 3, c.face.image_size, c.face.image_size)
    if model.bio is not None:
        inputs["bio"] = torch.randn(batch, c.bio.channels, c.bio.samples)
    return inputs


def count_flops(model: GBVNet, batch: int = 1) -> int:
    """Forward FLOPs for ``batch`` samples (eval mode, no grad)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**example_inputs(model, batch))
    return counter.get_total_flops()


def parameter_counts(model: GBVNet) -> dict[str, int]:
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
