"""One vocabulary across the command lines (gbvnet.cli): a flag that two commands share does the same thing in
both (type, default, help, destination, choices, the config field it sets), except where a difference is listed
here with its reason; help on every flag; old spellings still accepted (hidden from --help); every command ends a
user error, Ctrl-C and SIGTERM the same way."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict

import pytest
import ray

from gbvnet.cli import COMPUTE_FIELDS, CommandParser, InterruptExit, preset_of
from gbvnet.config import to_dict
from gbvnet.data import synthetic
from gbvnet.evaluation import benchmark, gap, loso, report, run, subject_dependent
from gbvnet.models import __main__ as models
from gbvnet.predict import cli as predict
from gbvnet.prepare import cli as prepare
from gbvnet.search import cli as search
from gbvnet.train import cli as train

COMMANDS = {  # the command (as its entry point runs it; tests/test_imports starts each) -> its module
    "gbvnet.prepare": prepare,
    "gbvnet.train": train,
    "gbvnet.predict": predict,
    "gbvnet.data.synthetic": synthetic,
    "gbvnet.models": models,
    "tune/search.py": search,
    "evaluation.run": run,
    "evaluation.loso": loso,
    "evaluation.subject_dependent": subject_dependent,
    "evaluation.gap": gap,
    "evaluation.benchmark": benchmark,
    "evaluation.report": report,
}
PARSERS = {name: module.build_parser for name, module in COMMANDS.items()}
EVALUATIONS = {"evaluation.run", "evaluation.loso", "evaluation.subject_dependent", "evaluation.gap",
               "evaluation.benchmark"}
RAY_COMMANDS = {"gbvnet.train", "tune/search.py", *EVALUATIONS}  # they shut Ray down when interrupted

DIFFERENCES = {  # (flag, attribute): (the commands with their own value, why); every other command agrees
    ("--dataset", "required"): ({"gbvnet.predict", "gbvnet.data.synthetic"},
                                "predict: only with --root (a cache names its dataset); synthetic: or --format"),
    ("--root", "required"): ({"gbvnet.prepare"}, "prepare's input; elsewhere one source of several"),
    ("--cache", "required"): ({"gbvnet.prepare", "gbvnet.train"}, "their only output / input; elsewhere optional"),
    ("--output", "default"): (set(PARSERS), "where each command's result goes: the help says what, in which format"),
    ("--output", "help"): (set(PARSERS), "one helper (add_output_argument), naming each command's result"),
    ("--experiment", "nargs"): ({"evaluation.report"}, "the report reads several experiments, the others log to one"),
    ("--experiment", "help"): ({"evaluation.report"}, "the report reads several experiments, the others log to one"),
    ("--format", "default"): (set(PARSERS), "the format of each command's result (predict: tables, report: pages)"),
    ("--format", "choices"): (set(PARSERS), "the format of each command's result (predict: tables, report: pages)"),
    ("--format", "help"): (set(PARSERS), "the format of each command's result (predict: tables, report: pages)"),
    ("--batch-size", "default"): ({"gbvnet.predict"}, "prediction's batch, not a training hyper-parameter"),
    ("--batch-size", "help"): ({"gbvnet.predict"}, "prediction's batch, not a training hyper-parameter"),
    ("--seed", "help"): ({"gbvnet.data.synthetic"}, "the seed of what that command draws: a corpus, not a model"),
    ("--protocol", "default"): (set(PARSERS), "run: any protocol, required; the others their own protocols"),
    ("--protocol", "choices"): (set(PARSERS), "run: any protocol, required; the others their own protocols"),
    ("--protocol", "required"): (set(PARSERS), "run: any protocol, required; the others their own protocols"),
    ("--search-trials", "default"): ({"tune/search.py"}, "a search searches (16); an evaluation only when asked"),
    ("--search-trials", "help"): ({"tune/search.py"}, "a nested evaluation's budget is per outer fold"),
}


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every visible option string of ``parser`` and its action."""
    return {s: a for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def what_it_does(action: argparse.Action) -> dict:
    return {"action": type(action).__name__, "dest": action.dest, "type": action.type, "default": action.default,
            "nargs": action.nargs, "choices": None if action.choices is None else tuple(action.choices),
            "required": action.required, "help": action.help}


@pytest.mark.parametrize("name", PARSERS)
def test_every_flag_has_help(name):
    missing = sorted({s for s, a in flags(PARSERS[name]()).items() if not a.help})
    assert not missing, f"{name}: flags without help: {missing}"


def test_a_flag_does_the_same_thing_in_every_command():
    """Every flag of two or more commands: the same action, destination, type, default, nargs, choices, required
    and help in each, but for :data:`DIFFERENCES` (each of which is a real difference: none is stale)."""
    by_flag = defaultdict(dict)
    for name, build in PARSERS.items():
        for flag, action in flags(build()).items():
            by_flag[flag][name] = what_it_does(action)
    drift, used = [], set()
    for flag, commands in sorted(by_flag.items()):
        if len(commands) < 2:
            continue
        for attribute in next(iter(commands.values())):
            own, _ = DIFFERENCES.get((flag, attribute), (set(), ""))
            values = {name: repr(does[attribute]) for name, does in commands.items()}
            agreed = {value for name, value in values.items() if name not in own}
            if len(agreed) > 1:
                drift.append(f"{flag} {attribute}: {values}")
            if len(set(values.values())) > 1:
                used.add((flag, attribute))
    assert not drift, "\n".join(drift)
    assert not DIFFERENCES.keys() - used, f"listed but the same everywhere: {DIFFERENCES.keys() - used}"


SHARED = ["--modality", "bio", "--fusion", "concat", "--channels", "all", "--target", "arousal", "--seed", "3",
          "--workers", "2", "--cpus-per-worker", "2", "--gpus-per-worker", "0", "--no-compile", "--max-failures", "1"]
TRAINING = ["--preset", "smoke", "--epochs", "3", "--patience", "2", "--batch-size", "8", "--lr", "0.01"]


def configs(command: str, argv: list[str]):
    """The model and training configs ``command`` makes of ``argv`` (a cache given: nothing is prepared)."""
    if command == "gbvnet.train":
        return train.configs(train.parse_args(["--cache", "c", "--all-subjects", *argv]))
    if command == "tune/search.py":
        spec = search.spec_from_args(search.parse_args(["--dataset", "deap", "--cache", "c", *argv]))
        return spec.model, spec.train
    args = COMMANDS[command].build_parser().parse_args(["--dataset", "deap", "--cache", "c", *argv])
    spec = run.spec_from_args(args, args.protocol, run.protocol_arguments(args, args.protocol))
    return spec.model, spec.train


def test_shared_flags_set_the_same_config_fields():
    """The same flags give the same model and training configs in gbvnet.train, the evaluations and the search
    (the shared apply_* helpers), and the preset defaults to paper without --synthetic everywhere (smoke with)."""
    made = {command: configs(command, [*SHARED, *TRAINING]) for command in ("gbvnet.train", "evaluation.loso",
                                                                            "evaluation.subject_dependent")}
    made["tune/search.py"] = configs("tune/search.py", [*SHARED, "--space", "smoke"])
    (model, training), fields = made["gbvnet.train"], ("target", "seed", *COMPUTE_FIELDS)
    assert (model.name, model.modality, model.fusion.kind, model.channels) == ("gbvnet", "bio", "concat", ("all",))
    assert (training.target, training.seed, training.num_workers, training.cpus_per_worker, training.gpus_per_worker,
            training.compile, training.max_failures) == ("arousal", 3, 2, 2.0, 0.0, False, 1)
    assert (training.epochs, training.patience, training.batch_size, training.lr) == (3, 2, 8, 0.01)
    for command, (other_model, other_training) in made.items():
        assert to_dict(other_model) == to_dict(model), command
        same = to_dict(training) if command != "tune/search.py" else {f: getattr(training, f) for f in fields}
        assert {f: to_dict(other_training)[f] for f in same} == same, command
    paper = {command: to_dict(configs(command, ["--modality", "bio"])[0]) for command in made}
    assert len({repr(m) for m in paper.values()}) == 1 and paper["gbvnet.train"]["bio"] != to_dict(model)["bio"]
    for name in ("tune/search.py", *EVALUATIONS):
        protocol = ["--protocol", "loso"] if name == "evaluation.run" else []
        assert preset_of(PARSERS[name]().parse_args(["--dataset", "deap", "--synthetic", *protocol])) == "smoke"
    assert preset_of(models.build_parser().parse_args([])) == "paper"


def test_old_spellings_are_hidden_aliases():
    base = ["--dataset", "mahnob"]
    old = run.build_parser().parse_args([*base, "--protocol", "loso", "--folds-in-parallel", "3",
                                         "--workers-per-fold", "2", "--test-subjects", "4", "5"])
    assert (old.concurrent, old.num_workers, old.only_test_subjects) == (3, 2, [4, 5])
    old = search.build_parser().parse_args([*base, "--max-epochs", "4", "--workers-per-trial", "2",
                                            "--num-samples", "5"])
    assert (old.search_epochs, old.num_workers, old.search_trials) == (4, 2, 5)
    assert search.build_parser().parse_args([*base, "--epochs", "6"]).search_epochs == 6
    assert search.build_parser().parse_args(base).search_epochs == 20
    assert loso.build_parser().parse_args([*base, "--search", "3"]).search_trials == 3
    old = synthetic.build_parser().parse_args(["--format", "deap", "--out", "x", "--subjects", "2"])
    assert (old.dataset, old.n_subjects) == ("deap", 2)
    assert predict.build_parser().parse_args(["--model", "runs:/r/model", "--cache", "c"]).model_uri == "runs:/r/model"
    assert prepare.build_parser().parse_args(["--dataset", "deap", "--root", "r", "--cache", "c", "--workers",
                                              "3"]).processes == 3
    old_flags = ("--max-epochs", "--folds-in-parallel", "--workers-per-", "--num-samples", "--search ", "--format")
    for name in ("evaluation.run", "evaluation.loso", "tune/search.py", "gbvnet.data.synthetic"):
        text = PARSERS[name]().format_help()
        assert all(f not in text for f in old_flags), name


def test_allow_leaky_split_permits_a_leaky_protocol_and_chooses_none(capsys):
    """--allow-leaky-split means one thing everywhere: a leaky --protocol is refused without it, and a protocol
    that is not leaky is refused with it (subject_dependent's old --allow-leaky-split alone ran the leaky one)."""
    for parser, argv in ((subject_dependent.build_parser(), ["--protocol", "segment-random"]),
                         (run.build_parser(), ["--protocol", "segment-random"])):
        args = parser.parse_args(["--dataset", "deap", *argv])
        with pytest.raises(ValueError, match="is leaky .* refused unless --allow-leaky-split"):
            run.protocol_arguments(args, args.protocol)
        args = parser.parse_args(["--dataset", "deap", *argv, "--allow-leaky-split"])
        assert run.protocol_arguments(args, args.protocol)["allow_leaky"] is True
    with pytest.raises(SystemExit):
        subject_dependent.main(["--dataset", "deap", "--cache", "c", "--allow-leaky-split"])
    assert ("--allow-leaky-split permits a leaky protocol, and 'subject-dependent' is not one: choose one with "
            "--protocol (segment-random)") in capsys.readouterr().err


LATE_CTRL_C = """
import atexit, os, signal, time

from gbvnet.cli import exit_on_interrupt


def late():  # a library's exit callback (tqdm's monitor thread joins at exit) that a second Ctrl-C lands in
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(2)


atexit.register(late)
with exit_on_interrupt(note="stopped"):
    raise KeyboardInterrupt
"""


def test_a_second_ctrl_c_while_an_interrupted_command_exits_ends_it_without_a_traceback():
    proc = subprocess.run([sys.executable, "-c", LATE_CTRL_C], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr)  # a shell reports 130
    assert proc.stderr == "interrupted by SIGINT: stopped\n"  # the one line, no "Exception ignored" traceback


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_every_command_ends_an_interrupt_the_same_way(signum, monkeypatch, capsys):
    """Ctrl-C (a KeyboardInterrupt) or SIGTERM while any command runs (here: while it parses its flags) ends it
    with one line naming the signal and exit status 130 / 143 (gbvnet.cli.exit_on_interrupt), Ray shut down by
    the commands that run it, the signal handlers as they were before."""
    def stop(self, *args, **kwargs):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN), "no SIGTERM handler"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        pytest.fail("SIGTERM was not handled")

    stopped = []
    monkeypatch.setattr(CommandParser, "parse_args", stop)
    monkeypatch.setattr(ray, "shutdown", lambda: stopped.append(name))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for name, module in COMMANDS.items():
        capsys.readouterr()
        with pytest.raises(InterruptExit) as ended:
            module.main([])
        assert ended.value.code == 128 + signum, name
        err = capsys.readouterr().err
        assert err.startswith(f"interrupted by {signal.Signals(signum).name}") and err.count("\n") == 1, (name, err)
        assert {s: signal.getsignal(s) for s in before} == before, name
    assert set(stopped) == RAY_COMMANDS


def test_every_commands_user_errors_are_one_line(ray_session, mahnob_cache, tmp_path, capsys):
    """Each command, given what a user gets wrong (a cache or root that is not there, subjects the cache lacks, a
    tracking server that is not up, a bad flag), ends with one line naming it (a ``SystemExit``: its message, or
    argparse's exit 2 with one line on stderr), before anything trains."""
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
        (loso.main, [*evaluation, "--only-test-subjects", "99"], "--only-test-subjects: no fold tests only on "
                                                                 "subjects [99]"),
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
