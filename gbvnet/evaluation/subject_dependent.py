"""``python -m evaluation.subject_dependent --dataset deap (--root DIR | --synthetic) [--k 5]``.

Per subject, k folds over its *trials*: windows of one trial never straddle train and test. The common leaky
protocol (windows of one trial shuffled into train and test) runs only with ``--allow-leaky-split`` and is
labelled leaky in every output.
"""

from gbvnet.evaluation.run import cli


def main(argv: list[str] | None = None) -> dict:
    return cli("subject-dependent", __doc__.splitlines()[0], argv=argv, leaky_alternative="segment-random")


if __name__ == "__main__":
    main()
