"""``python -m evaluation.loso``: the command of :mod:`gbvnet.evaluation.loso`."""

if __name__ == "__main__":
    from gbvnet.evaluation.loso import main

    main()
