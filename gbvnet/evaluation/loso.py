"""``python -m evaluation.loso --dataset {deap,mahnob,amigos} (--root DIR | --synthetic)``: leave-one-subject-out.

Each subject is the test set once; the model never sees it. Validation (early stopping) uses held-out training
subjects (``--validation trials``: held-out trials of the training subjects).
See :mod:`gbvnet.evaluation.run` for the options shared with ``evaluation.subject_dependent``. ``--search N`` makes it a
nested evaluation: every outer fold searched on its own training subjects first (:mod:`gbvnet.evaluation.nested`).
"""

from gbvnet.evaluation import nested
from gbvnet.evaluation.run import cli


def main(argv: list[str] | None = None) -> dict:
    return cli("loso", __doc__.splitlines()[0], extra=nested.add_arguments, argv=argv, run=nested.run)


if __name__ == "__main__":
    main()
