"""``python -m evaluation.benchmark``: the command of :mod:`gbvnet.evaluation.benchmark`."""

if __name__ == "__main__":
    from gbvnet.evaluation.benchmark import main

    main()
