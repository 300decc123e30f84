"""Physiological branch: the "Local-Medium-Global" extractor of GBV-Net.

* Local: two Conv1d-BN-GELU blocks (kernels ``local_kernels``, stride 2 on the first) for transient patterns.
* Medium: a dilated causal TCN (residual blocks, one per dilation) for rhythmic mid-range patterns.
* Global: convolutional self-attention: depthwise Conv1d projections give queries, keys and values, multi-head
  attention runs over time, then residual + LayerNorm + feed-forward.

The branch returns time tokens ``(B, T', dim)`` (``T' = ceil(T / 2)``). Layer sizes are our choices where the
paper is silent; see :class:`gbvnet.config.BioConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gbvnet.config import BioConfig


def conv_bn_gelu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(cout),
        nn.GELU(),
    )


class TemporalBlock(nn.Module):
    """Residual TCN block: two causal dilated convolutions with BN, GELU and dropout."""

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(channels, channels, kernel, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(F.gelu(self.bn1(self.conv1(F.pad(x, (self.pad, 0))))))
        y = self.drop(F.gelu(self.bn2(self.conv2(F.pad(y, (self.pad, 0))))))
        return F.gelu(x + y)


class ConvSelfAttention(nn.Module):
    """Multi-head self-attention over time whose q/k/v come from depthwise convolutions (kernel 3)."""

    def __init__(self, channels: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv1d(channels, 3 * channels, 3, padding=1, groups=channels)
        self.out = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(2 * channels, channels))
        self.norm2 = nn.LayerNorm(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, T)`` -> ``(B, T, C)``."""
        b, c, t = x.shape
        q, k, v = self.qkv(x).view(b, c, 3, t).unbind(2)  # grouped conv keeps (q, k, v) per channel together

        def heads(z: torch.Tensor) -> torch.Tensor:
            # (B, h, T, C/h), made contiguous: on a CPU, scaled_dot_product_attention takes its fused (flash) kernel
            # only when the head dimension is contiguous; the transposed view fell back to matmul + softmax
            # (bench/RESULTS.md: the one-thread training path 1.28x slower)
            return z.view(b, self.heads, c // self.heads, t).transpose(-1, -2).contiguous()

        attn = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        attn = attn.transpose(1, 2).reshape(b, t, c)
        y = self.norm1(x.transpose(1, 2) + self.drop(self.out(attn)))
        return self.norm2(y + self.drop(self.ff(y)))


class BioEncoder(nn.Module):
    """The physiological branch: a Local stage (two conv-BN-GELU blocks, the first with stride 2), a Medium
    stage (dilated TCN blocks) and a Global stage (self-attention over time), projected to ``dim``.

    Args:
        cfg: its :class:`~gbvnet.config.BioConfig` (channels, samples, stage widths, kernels, dilations).

    Input ``(B, channels, samples)``; output time tokens ``(B, ceil(samples / 2), dim)``.
    """

    def __init__(self, cfg: BioConfig):
        super().__init__()
        self.cfg = cfg
        k1, k2 = cfg.local_kernels
        self.local = nn.Sequential(
            conv_bn_gelu(cfg.channels, cfg.local_channels, k1, stride=2),
            conv_bn_gelu(cfg.local_channels, cfg.local_channels, k2),
        )
        self.bridge = (nn.Identity() if cfg.local_channels == cfg.tcn_channels
                       else nn.Conv1d(cfg.local_channels, cfg.tcn_channels, 1))
        self.medium = nn.Sequential(*[TemporalBlock(cfg.tcn_channels, cfg.tcn_kernel, d, cfg.dropout)
                                      for d in cfg.tcn_dilations])
        self.glob = ConvSelfAttention(cfg.tcn_channels, cfg.attn_heads, cfg.dropout)
        self.proj = nn.Linear(cfg.tcn_channels, cfg.dim)

    def forward(self, bio: torch.Tensor) -> torch.Tensor:
        """``bio``: ``(B, C, T)`` -> time tokens ``(B, ceil(T/2), dim)``."""
        c = self.cfg
        if bio.ndim != 3 or bio.shape[1] != c.channels or bio.shape[2] != c.samples:
            raise ValueError(
                f"bio input must be (batch, {c.channels} channels, {c.samples} samples); got {tuple(bio.shape)}"
            )
        x = self.medium(self.bridge(self.local(bio)))
        return self.proj(self.glob(x))
