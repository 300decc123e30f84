"""``python -m evaluation.run --protocol NAME`` runs any protocol of the registry
:data:`gbvnet.folds.protocols.PROTOCOLS` (with the arguments it declares); ``evaluation.loso`` and
``evaluation.subject_dependent`` are the same with the protocol chosen. This module is the evaluation commands'
shared command line (flags, ``--seeds``, publishing the tables and ``--output``); what they run is
:mod:`gbvnet.evaluation.engine`.
"""


from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from gbvnet.cli import (
    CommandParser,
    add_compute_arguments,
    add_concurrency_arguments,
    add_config_argument,
    add_face_weight_arguments,
    add_leaky_argument,
    add_model_arguments,
    add_output_argument,
    add_preset_argument,
    add_result_arguments,
    add_source_arguments,
    add_tracking_arguments,
    add_training_arguments,
    apply_compute_arguments,
    apply_config_file,
    apply_face_weight_arguments,
    apply_model_arguments,
    apply_training_arguments,
    hidden_alias,
    one_line_errors,
    preset_of,
)
from gbvnet.config import (
    TrainConfig,
    load_yaml,
    model_preset,
)
from gbvnet.data.sources import resolve_cache
from gbvnet.data.storage import missing_folder, write_text
from gbvnet.evaluation import aggregate, seeds
from gbvnet.evaluation.audit import search_provenance
from gbvnet.evaluation.engine import EvalSpec, evaluate
from gbvnet.folds.protocols import (
    PROTOCOLS,
    ProtocolArgument,
)
from gbvnet.train.launch import (
    exit_on_interrupt,
)

Runner = Callable[[argparse.Namespace, 'EvalSpec', Callable[[dict], None]], dict]
"""What evaluates a CLI's spec: ``run(args, spec, publish) -> document`` (:func:`run_cli`)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every evaluation CLI shares (the protocol's own: :func:`add_protocol_arguments`)."""
    add_source_arguments(p)
    add_model_arguments(p)
    g = p.add_argument_group("model")
    add_preset_argument(g)
    add_config_argument(g)
    add_face_weight_arguments(g)
    add_training_arguments(p, "training (default: the preset's, or --config's; on a --synthetic corpus 10 epochs, "
                              "patience 5, lr 1e-3)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--only-test-subjects", type=int, nargs="+", default=None, metavar="ID",
                   help="test only the folds whose test subjects are among these (default: every fold)")
    hidden_alias(e, "--test-subjects", "only_test_subjects", type=int, nargs="+")
    e.add_argument("--allow-searched-test-subjects", action="store_true",
                   help="let --config's search subjects be tested (refused by default: they were tuned on)")
    add_result_arguments(e)
    add_output_argument(e, "per-fold and aggregate metrics (JSON)")
    e.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each fold's checkpoints under --storage (default: removed once the fold is logged)")
    add_tracking_arguments(p)
    add_concurrency_arguments(p, old_flag="--folds-in-parallel")
    add_compute_arguments(p)


def add_seeds_argument(p: argparse.ArgumentParser) -> None:
    """``--seeds``, for the commands that repeat their protocol per seed (:mod:`gbvnet.evaluation.seeds`)."""
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="instead of --seed: the whole protocol once per seed (folds, initial weights, baselines), "
                        "every fold in one pool; each subject's scores averaged over the seeds before the "
                        "statistics, the spread over seeds reported (one value: the same as --seed)")


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The seeds ``args`` ask for: ``--seeds`` (each once; not beside a ``--seed`` other than the default 0), else
    ``--seed``."""
    chosen = getattr(args, "seeds", None)
    if not chosen:
        return [args.seed]
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"--seeds {seeds.label(chosen)} names a seed twice: give each once")
    if args.seed != 0:
        raise ValueError(f"--seed {args.seed} and --seeds {seeds.label(chosen)}: give one of them (--seeds repeats "
                         "the protocol per seed)")
    return chosen


def spec_from_args(args: argparse.Namespace, protocol: str, protocol_args: dict) -> EvalSpec:
    preset = preset_of(args)
    model = model_preset(preset)
    chosen = seeds_of(args)
    train = TrainConfig(target=args.target, seed=chosen[0])
    if args.synthetic:  # a small corpus and the smoke model: fewer epochs at a higher rate
        train.epochs, train.patience, train.lr = 10, 5, 1e-3
    search = None
    if args.config:
        config = load_yaml(args.config)
        search = search_provenance(config, args.config)
        if "model" in config:
            preset = Path(args.config).stem
        # what a search decided; the evaluation's own fields stay the evaluation's
        model, train = apply_config_file(config, model, train, searched=bool(search))
    apply_face_weight_arguments(args, apply_model_arguments(args, model))
    train.target, train.seed = args.target, chosen[0]
    apply_compute_arguments(args, train)
    if args.log_models and train.num_workers > 1:
        raise ValueError(f"--log-models logs each fold's model from its trial's checkpoints; with --workers "
                         f"{train.num_workers} they are its trainer's: evaluate with one worker per fold, or train "
                         "the final model with python -m gbvnet.train --all-subjects")
    apply_training_arguments(args, train)  # command-line values win over the config file
    cache = resolve_cache(args.dataset, root=args.root, synthetic=args.synthetic, cache=args.cache,
                          on_error=args.on_error, need_face=model.modality != "bio" or args.rows == "face",
                          rebuild=args.rebuild)
    return EvalSpec(protocol=protocol, dataset=args.dataset, cache=cache, model=model.validate(),
                    train=train.validate(), protocol_args=protocol_args, test_subjects=args.only_test_subjects,
                    folds_in_parallel=args.concurrent,
                    resume=args.resume, tracking_uri=args.tracking_uri, experiment=args.experiment,
                    storage=args.storage, search=search,
                    allow_searched_test_subjects=args.allow_searched_test_subjects, rows=args.rows,
                    preset=preset, quiet=args.quiet, keep_checkpoints=args.keep_checkpoints,
                    log_models=args.log_models,
                    seeds=tuple(chosen) if len(chosen) > 1 else ())


def add_protocol_arguments(p: argparse.ArgumentParser, protocols) -> None:
    """The arguments ``protocols`` declare (:attr:`~gbvnet.folds.protocols.ProtocolArgument`), one group each; a flag two
    protocols share is added once. They default to unset: :func:`protocol_arguments` fills in the defaults."""
    added = set()
    for name in protocols:
        group = p.add_argument_group(f"{name} protocol")
        for arg in PROTOCOLS[name].arguments:
            if arg.flag not in added:
                added.add(arg.flag)
                group.add_argument(arg.flag, dest=arg.name, type=arg.type, choices=arg.choices, default=None,
                                   help=arg.help)


def argument_value(args: argparse.Namespace, argument: ProtocolArgument):
    """The value of a protocol's ``argument`` in ``args``: as given, else its default."""
    given = getattr(args, argument.name, None)
    return argument.default if given is None else given


def protocol_arguments(args: argparse.Namespace, protocol: str) -> dict:
    """The keyword arguments of ``protocol`` from ``args``: ``seed`` and each argument it declares (its default
    where not given). A protocol argument given on the command line that ``protocol`` does not take is an error,
    and so are a leaky protocol without ``--allow-leaky-split`` and ``--allow-leaky-split`` with a protocol that
    is not leaky (the flag permits one, ``--protocol`` chooses it)."""
    cls = PROTOCOLS[protocol]
    own = {a.name for a in cls.arguments}
    stray = sorted({a.flag for name in PROTOCOLS for a in PROTOCOLS[name].arguments
                    if a.name not in own and getattr(args, a.name, None) is not None})
    if stray:
        raise ValueError(f"{', '.join(stray)} does not apply to protocol {protocol!r}")
    allowed = getattr(args, "allow_leaky_split", False)
    if cls.leaky and not allowed:
        raise ValueError(f"protocol {protocol!r} is leaky (windows of one trial in train and test): refused "
                         "unless --allow-leaky-split")
    if allowed and not cls.leaky:
        leaky = ", ".join(name for name in PROTOCOLS if PROTOCOLS[name].leaky)
        raise ValueError(f"--allow-leaky-split permits a leaky protocol, and {protocol!r} is not one: choose one "
                         f"with --protocol ({leaky}) or drop --allow-leaky-split")
    values = {"seed": seeds_of(args)[0], **{a.name: argument_value(args, a) for a in cls.arguments}}
    if cls.leaky:
        values["allow_leaky"] = True
    return values


def publish(document: dict, output: str | None, formatter: Callable[[dict], str] = aggregate.format_table) -> None:
    """Print the document's tables (``formatter``: an evaluation's by default) and write ``output`` (JSON) when
    given, saying so, and which folder it created for it; a failure to write names ``--output``."""
    print(formatter(document))
    if output:
        created = missing_folder(output)
        try:
            write_text(output, json.dumps(document, indent=2))
        except OSError as exc:
            raise OSError(f"--output {output}: {exc}") from exc
        print(f"wrote {output}" + (f" (created the folder {created})" if created else ""))
    sys.stdout.flush()


def run_cli(args: argparse.Namespace, protocol: str, protocol_args: dict, run: Runner | None = None,
            formatter: Callable[[dict], str] = aggregate.format_table) -> dict:
    """The CLIs' evaluation: ``protocol`` as ``args`` ask, run by ``run(args, spec, publish)`` (default:
    :func:`evaluate`; ``evaluation.loso --search-trials`` hands over to the nested evaluation), the tables
    (``formatter``) printed and ``--output`` written before the final MLflow logging. Its caller ends a data
    problem or an interruption in one line (:func:`cli`)."""
    spec = spec_from_args(args, protocol, protocol_args)
    if spec.seeds and getattr(args, "search_trials", None) is not None:
        raise ValueError(f"--seeds repeats a plain evaluation; a nested one (--search-trials {args.search_trials}) "
                         "runs with one --seed: drop one of them")
    shown = seeds.format_seeds if spec.seeds else formatter
    return (run or default_run)(args, spec, lambda document: publish(document, args.output, shown))


def default_run(args: argparse.Namespace, spec: EvalSpec, publish: Callable[[dict], None]) -> dict:
    """The evaluation of ``spec`` (:func:`evaluate`)."""
    return evaluate(spec, publish)


def add_protocol_argument(p: argparse.ArgumentParser, protocols, default: str | None = None) -> None:
    """``--protocol``: which of ``protocols`` the command runs (``default``, else required)."""
    p.add_argument("--protocol", choices=protocols, default=default, required=default is None,
                   help="the evaluation protocol (a leaky one needs --allow-leaky-split)")


def protocol_parser(protocols: tuple[str, ...], description: str) -> argparse.ArgumentParser:
    """The parser of an evaluation command of ``protocols``: :func:`add_arguments`, ``--seeds``, the protocols'
    own arguments and, with several, ``--protocol`` (default the first) and ``--allow-leaky-split``."""
    parser = CommandParser(prog=f"python -m evaluation.{protocols[0].replace('-', '_')}", description=description)
    add_arguments(parser)
    add_seeds_argument(parser)
    add_protocol_arguments(parser, protocols)
    if len(protocols) > 1:
        add_protocol_argument(parser, protocols, default=protocols[0])
        add_leaky_argument(parser)
    else:
        parser.set_defaults(protocol=protocols[0])
    return parser


def cli(parser: argparse.ArgumentParser, argv: list[str] | None = None, run: Runner | None = None) -> dict:
    """The body of the evaluation commands: parse (``parser``: its ``--protocol`` or default names the protocol),
    evaluate (:func:`run_cli`, with ``run``), print the table, write ``--output``; a data problem ends in one
    line (exit 1), an interruption in one line and exit code 130 / 143."""
    with one_line_errors(), exit_on_interrupt():
        args = parser.parse_args(argv)
        try:
            protocol_args = protocol_arguments(args, args.protocol)
        except ValueError as exc:
            parser.error(str(exc))
        return run_cli(args, args.protocol, protocol_args, run)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m evaluation.run``: every registered protocol and its arguments."""
    parser = CommandParser(prog="python -m evaluation.run", description=__doc__.splitlines()[0])
    add_protocol_argument(parser, PROTOCOLS)
    add_arguments(parser)
    add_seeds_argument(parser)
    add_protocol_arguments(parser, PROTOCOLS)
    add_leaky_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """``python -m evaluation.run --protocol NAME``: any registered protocol (:data:`gbvnet.folds.protocols.PROTOCOLS`)."""
    return cli(build_parser(), argv)


if __name__ == "__main__":
    main()
