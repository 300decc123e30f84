"""``python -m evaluation.run``: the command of :mod:`gbvnet.evaluation.run`."""

if __name__ == "__main__":
    from gbvnet.evaluation.run import main

    main()
