"""``python -m evaluation.gap``: the command of :mod:`gbvnet.evaluation.gap`."""

if __name__ == "__main__":
    from gbvnet.evaluation.gap import main

    main()
