"""``python tune/search.py`` (or ``ray job submit -- python tune/search.py``): the command of
:mod:`gbvnet.search.cli`."""

if __name__ == "__main__":
    from gbvnet.search.cli import main

    main()
