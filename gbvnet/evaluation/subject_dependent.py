"""``python -m evaluation.subject_dependent --dataset deap (--root DIR | --synthetic) [--k 5]``.

Per subject, k folds over its *trials*: windows of one trial never straddle train and test. The common leaky
protocol (windows of one trial shuffled into train and test) runs only as ``--protocol segment-random
--allow-leaky-split`` and is labelled leaky in every output.
"""

import argparse

from gbvnet.evaluation.run import cli, protocol_parser


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m evaluation.subject_dependent``: an evaluation's, and its protocol and the leaky
    one's (``--protocol segment-random``)."""
    return protocol_parser(("subject-dependent", "segment-random"), __doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> dict:
    return cli(build_parser(), argv)


if __name__ == "__main__":
    main()
