"""``python -m evaluation.loso --dataset {deap,mahnob,amigos} (--root DIR | --synthetic)``: leave-one-subject-out.

Each subject is the test set once; the model never sees it. Validation (early stopping) uses held-out training
subjects (``--validation trials``: held-out trials of the training subjects).
See :mod:`gbvnet.evaluation.run` for the options shared with ``evaluation.subject_dependent``.
``--search-trials N`` makes it a nested evaluation: every outer fold searched on its own training subjects first
(:mod:`gbvnet.evaluation.nested`).
"""

import argparse

from gbvnet.evaluation import nested
from gbvnet.evaluation.run import cli, protocol_parser


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m evaluation.loso``: an evaluation's, LOSO's and the nested search's."""
    parser = protocol_parser(("loso",), __doc__.splitlines()[0])
    nested.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    return cli(build_parser(), argv, run=nested.run)


if __name__ == "__main__":
    main()
