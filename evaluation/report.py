"""``python -m evaluation.report``: the command of :mod:`gbvnet.evaluation.report`."""

if __name__ == "__main__":
    from gbvnet.evaluation.report import main

    main()
