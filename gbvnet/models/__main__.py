"""``python -m gbvnet.models --preset paper|smoke [--modality ...] [--fusion ...]``: parameters and FLOPs.

Prints the parameter count of each branch and the forward FLOPs per sample, counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; 1 multiply-add = 2 FLOPs).
"""

from __future__ import annotations

import argparse

from gbvnet.cli import (
    CommandParser,
    add_modality_arguments,
    add_preset_argument,
    exit_on_interrupt,
    one_line_errors,
    preset_of,
)
from gbvnet.config import get_model
from gbvnet.models.gbvnet import create_model
from gbvnet.models.summary import count_flops, parameter_counts


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m gbvnet.models``."""
    parser = CommandParser(prog="python -m gbvnet.models", description=__doc__.splitlines()[0])
    add_preset_argument(parser)
    add_modality_arguments(parser)
    parser.add_argument("--bio-channels", type=int, default=40, help="physiological channels (DEAP 40)")
    parser.add_argument("--bio-samples", type=int, default=384, help="samples per window (3 s x 128 Hz)")
    return parser


def main(argv: list[str] | None = None) -> None:
    with one_line_errors(), exit_on_interrupt(note="run the command again"):
        args = build_parser().parse_args(argv)
        preset, modality = preset_of(args), args.modality or get_model("gbvnet").modalities[0]
        model = create_model(preset, modality=modality, fusion=args.fusion, bio_channels=args.bio_channels,
                             bio_samples=args.bio_samples)
        print(f"GBV-Net preset={preset} modality={modality} fusion={args.fusion}")
        for name, n in parameter_counts(model).items():
            print(f"  params {name:<8} {n:>12,}")
        print(f"  forward FLOPs / sample {count_flops(model) / 1e9:.3f} GFLOP")


if __name__ == "__main__":
    main()
