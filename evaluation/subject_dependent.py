"""``python -m evaluation.subject_dependent --dataset deap (--root DIR | --synthetic) [--k 5]``.

Per subject, k folds over its *trials*: windows of one trial never straddle train and test. The common leaky
protocol (windows of one trial shuffled into train and test) runs only with ``--allow-leaky-split`` and is
labelled leaky in every output.
"""

from evaluation.run import cli


def _extra(parser) -> None:
    parser.add_argument("--k", type=int, default=5, help="folds over the trials of each subject")
    parser.add_argument("--allow-leaky-split", action="store_true",
                        help="run the LEAKY segment-random protocol instead (for comparison with the literature)")


def main(argv: list[str] | None = None) -> dict:
    return cli("subject-dependent", __doc__.splitlines()[0], extra=_extra, argv=argv)


if __name__ == "__main__":
    main()
