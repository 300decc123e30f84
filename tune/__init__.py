"""``python tune/search.py``: a thin entry point, run from the repository's root, over :mod:`gbvnet.search.cli`.
Nothing here is installed."""
