"""``python -m gbvnet.prepare``: the command over :func:`gbvnet.prepare.prepare_dataset` (flags, Ctrl-C and
SIGTERM ended as in every command, the report printed).

    python -m gbvnet.prepare --dataset deap --root ~/data/deap --cache data/cache/deap
    python -m gbvnet.prepare --dataset mahnob --root ~/data/mahnob-hci --cache s3://bucket/cache/mahnob --processes 4
"""


from __future__ import annotations

import argparse
from dataclasses import fields

from gbvnet.cli import (
    CommandParser,
    add_cache_argument,
    add_dataset_argument,
    add_preparation_arguments,
    add_root_argument,
    add_subjects_argument,
    exit_on_interrupt,
    hidden_alias,
    one_line_errors,
)
from gbvnet.config import ConfigError, PrepareConfig
from gbvnet.data.registry import DATASETS, get_dataset
from gbvnet.prepare.plan import format_report, prepare_dataset


def _optional_float(text: str) -> float | None:
    """A number, or ``none`` (the filter edge is not applied)."""
    return None if text.lower() == "none" else float(text)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m gbvnet.prepare``. Preparation flags default to unset: only those given override
    the dataset's own preparation defaults (:attr:`gbvnet.data.registry.Dataset.prepare_defaults`)."""
    p = CommandParser(prog="python -m gbvnet.prepare", description="Prepare a dataset download into the window cache.")
    add_dataset_argument(p)
    add_root_argument(p, required=True)
    add_cache_argument(p, required=True)
    prep = p.add_argument_group("preparation (default: the dataset's own, see gbvnet.data.registry)")
    prep.add_argument("--window", type=float, help=f"window length in seconds ({PrepareConfig.window:g})")
    prep.add_argument("--stride", type=float, help=f"step between windows in seconds ({PrepareConfig.stride:g})")
    prep.add_argument("--rate", type=float, help=f"sampling rate after resampling, Hz ({PrepareConfig.rate:g})")
    prep.add_argument("--l-freq", type=_optional_float, metavar="HZ|none",
                      help="band-pass low edge in Hz, or none (no high-pass)")
    prep.add_argument("--h-freq", type=_optional_float, metavar="HZ|none",
                      help="band-pass high edge in Hz, or none (no low-pass)")
    prep.add_argument("--frames", type=int, help=f"face frames per window ({PrepareConfig.frames})")
    prep.add_argument("--face-size", type=int, help=f"face crop side in pixels ({PrepareConfig.face_size})")
    prep.add_argument("--threshold", type=float,
                      help=f"a rating above it is 'high' ({PrepareConfig.threshold:g} on the 1-9 scale)")
    prep.add_argument("--baseline-norm", action=argparse.BooleanOptionalAction,
                      help="z-score each trial by its pre-stimulus baseline (DEAP)")
    p.add_argument("--no-face", action="store_true",
                   help="faces not needed: a new cache is bio-only (no video decoding); an existing face cache "
                        "of the same options keeps its faces")
    add_preparation_arguments(p)
    add_subjects_argument(p)
    p.add_argument("--processes", type=int, default=1, help="subjects prepared at once, one process each "
                                                          "(default 1)")
    hidden_alias(p, "--workers", "processes", type=int)  # processes, not training workers
    options = {o.name: o for d in DATASETS.values() for o in d.reader_options}  # the readers' own options
    for option in options.values():
        p.add_argument(option.flag, choices=option.choices, help=f"{option.help} (default: {option.default})")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed flags, with ``config``: the dataset's preparation config with the flags given written in."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.processes < 1:
        p.error(f"--processes must be >= 1, got {args.processes}")
    try:
        options = {o.name for d in DATASETS.values() for o in d.reader_options}
        args.config = get_dataset(args.dataset).prepare_config(
            **{f.name: getattr(args, f.name) for f in fields(PrepareConfig)
               if f.name != "reader" and getattr(args, f.name) is not None},
            reader={name: getattr(args, name) for name in options if getattr(args, name) is not None})
    except ConfigError as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> dict:
    """Prepare as the flags say and print the report; an error is one line (exit 1), Ctrl-C or SIGTERM one line
    (exit 130 / 143) once the files this run wrote are removed."""
    with one_line_errors(), exit_on_interrupt(note=INTERRUPTED):
        args = parse_args(argv)
        try:
            report = prepare_dataset(args.dataset, args.root, args.cache, args.config, on_error=args.on_error,
                                     face=not args.no_face, subjects=args.subjects, workers=args.processes,
                                     rebuild=args.rebuild)
        except OSError as exc:  # the cache's filesystem (disk full, connection lost, ...)
            raise OSError(f"{args.cache}: {exc}") from exc
    print(format_report(report))
    return report


INTERRUPTED = "the cache is as it was before this run (the files it wrote were removed)"
"""What an interrupted preparation says after the signal: :func:`gbvnet.prepare.prepare_dataset` has undone it."""
