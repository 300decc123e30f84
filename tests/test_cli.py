"""One vocabulary across the command lines (gbvnet.cli): the same flag for the same thing in every CLI, help on
every flag, old spellings still accepted (hidden from --help)."""

from __future__ import annotations

import argparse

import pytest

from evaluation import report, run
from gbvnet import prepare, train
from tune import search

PARSERS = {
    "gbvnet.prepare": prepare.build_parser,
    "gbvnet.train": train.build_parser,
    "evaluation.run": run.build_parser,
    "evaluation.loso": lambda: run.protocol_parser("loso", "loso"),
    "evaluation.subject_dependent": lambda: run.protocol_parser("subject-dependent", "sd",
                                                                leaky_alternative="segment-random"),
    "evaluation.report": report.build_parser,
    "tune/search.py": search.build_parser,
}


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every visible option string of ``parser`` and its action."""
    return {s: a for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


@pytest.mark.parametrize("name", PARSERS)
def test_every_flag_has_help(name):
    missing = sorted({s for s, a in flags(PARSERS[name]()).items() if not a.help})
    assert not missing, f"{name}: flags without help: {missing}"


def test_the_same_thing_has_the_same_flag_everywhere():
    evaluation, searching, training = run.build_parser(), search.build_parser(), train.build_parser()
    shared = {"--dataset", "--root", "--synthetic", "--cache", "--on-error", "--modality", "--fusion", "--target",
              "--seed", "--rows", "--tracking-uri", "--experiment", "--storage", "--concurrent", "--workers",
              "--cpus-per-worker", "--gpus-per-worker", "--compile", "--pretrained", "--face-checkpoint",
              "--epochs", "--resume", "--output", "--quiet"}
    for parser in (evaluation, searching):
        assert shared <= flags(parser).keys()
        assert {s: flags(parser)[s].dest for s in shared} == {s: flags(evaluation)[s].dest for s in shared}
    assert {"--workers", "--epochs", "--modality", "--fusion", "--storage", "--name"} <= flags(training).keys()
    assert "--processes" in flags(prepare.build_parser()) and "--workers" not in flags(prepare.build_parser())


def test_old_spellings_are_hidden_aliases():
    base = ["--dataset", "mahnob"]
    old = run.build_parser().parse_args([*base, "--protocol", "loso", "--folds-in-parallel", "3",
                                         "--workers-per-fold", "2"])
    assert (old.concurrent, old.num_workers) == (3, 2)
    old = search.build_parser().parse_args([*base, "--max-epochs", "4", "--workers-per-trial", "2"])
    assert (old.epochs, old.num_workers) == (4, 2)
    assert search.build_parser().parse_args(base).epochs == 20
    for parser in (run.build_parser(), search.build_parser()):
        text = parser.format_help()
        assert all(f not in text for f in ("--max-epochs", "--folds-in-parallel", "--workers-per-"))
