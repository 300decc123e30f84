"""``python -m gbvnet.models --preset paper|smoke [--modality ...] [--fusion ...]``: parameters and FLOPs.

Prints the parameter count of each branch and the forward FLOPs per sample, counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; 1 multiply-add = 2 FLOPs).
"""

from __future__ import annotations

import argparse

from gbvnet.config import FUSIONS, MODALITIES, PRESETS, fusion_help
from gbvnet.models.gbvnet import create_model
from gbvnet.models.summary import count_flops, parameter_counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gbvnet.models", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="paper", help="model size preset (default paper)")
    parser.add_argument("--modality", choices=MODALITIES, default="facebio", help="face, bio or both")
    parser.add_argument("--fusion", choices=FUSIONS, default="gated", help=fusion_help())
    parser.add_argument("--bio-channels", type=int, default=40, help="physiological channels (DEAP 40)")
    parser.add_argument("--bio-samples", type=int, default=384, help="samples per window (3 s x 128 Hz)")
    args = parser.parse_args(argv)
    model = create_model(args.preset, modality=args.modality, fusion=args.fusion, bio_channels=args.bio_channels,
                         bio_samples=args.bio_samples)
    print(f"GBV-Net preset={args.preset} modality={args.modality} fusion={args.fusion}")
    for name, n in parameter_counts(model).items():
        print(f"  params {name:<8} {n:>12,}")
    print(f"  forward FLOPs / sample {count_flops(model) / 1e9:.3f} GFLOP")


if __name__ == "__main__":
    main()
