"""``python -m evaluation.subject_dependent``: the command of :mod:`gbvnet.evaluation.subject_dependent`."""

if __name__ == "__main__":
    from gbvnet.evaluation.subject_dependent import main

    main()
