"""One vocabulary across the command lines (gbvnet.cli): the same flag for the same thing in every CLI, help on
every flag, old spellings still accepted (hidden from --help)."""

from __future__ import annotations

import argparse
import socket

import pytest

from gbvnet.evaluation import report, run
from gbvnet.prepare import cli as prepare
from gbvnet.search import cli as search
from gbvnet.train import cli as train

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


def test_every_commands_user_errors_are_one_line(ray_session, mahnob_cache, tmp_path, capsys):
    """Each command, given what a user gets wrong (a cache or root that is not there, subjects the cache lacks, a
    tracking server that is not up, a bad flag), ends with one line naming it (a ``SystemExit``: its message, or
    argparse's exit 2 with one line on stderr), before anything trains."""
    from gbvnet.evaluation import gap, loso, subject_dependent
    from tests.conftest import store_uri

    missing, cache = str(tmp_path / "missing"), str(mahnob_cache)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    evaluation = ["--dataset", "mahnob", "--cache", cache, "--modality", "bio", "--storage", str(tmp_path / "ray"),
                  "--tracking-uri", store_uri(tmp_path)]
    fold = ["--cache", cache, "--modality", "bio", "--train-subjects", "1", "--val-subjects", "2"]
    cases = [
        (prepare.main, ["--dataset", "deap", "--root", missing, "--cache", str(tmp_path / "c")], "does not exist"),
        (prepare.main, ["--dataset", "deap", "--root", missing, "--window", "x"], "argument --window: invalid"),
        (train.main, [*fold[:4], "--train-subjects", "1", "--val-subjects", "9"], "subject(s) [9] not in the cache"),
        (train.main, ["--cache", missing, *fold[2:]], f"{missing}: no manifest.json; run python -m gbvnet.prepare"),
        (train.main, [*fold, "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
        (loso.main, [*evaluation, "--test-subjects", "99"], "no fold tests only on subjects [99]"),
        (loso.main, ["--dataset", "mahnob", "--cache", missing], f"{missing}: no manifest.json"),
        (loso.main, [*evaluation, "--tracking-uri", dead], f"MLflow at {dead} cannot be reached ([Errno 111]"),
        (loso.main, [*evaluation, "--concurrent", "two"], "argument --concurrent: invalid int value: 'two'"),
        (subject_dependent.main, [*evaluation, "--k", "1"], "k must be >= 2, got 1"),
        (run.main, [*evaluation, "--protocol", "nope"], "argument --protocol: invalid choice: 'nope'"),
        (gap.main, ["--dataset", "mahnob", "--cache", missing], f"{missing}: no manifest.json"),
        (search.main, ["--dataset", "mahnob", "--cache", missing], f"{missing}: no manifest.json"),
        (search.main, [*evaluation[:6], "--search-subjects", "98", "99"], "search subjects [98, 99] are not in"),
        (report.main, ["--experiment", "none", "--tracking-uri", store_uri(tmp_path)], "no MLflow experiment named"),
        (report.main, ["--format", "pdf"], "argument --format: invalid choice: 'pdf'"),
    ]
    for main, argv, expected in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as ended:
            main(argv)
        shown = ended.value.code if isinstance(ended.value.code, str) else capsys.readouterr().err
        assert expected in shown and len(shown.strip().splitlines()) == 1, (main.__module__, argv, shown)
