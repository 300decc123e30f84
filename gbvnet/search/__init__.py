"""Hyperparameter search: the spaces (:mod:`~gbvnet.search.space`), the per-fold searcher of nested evaluations
(:mod:`~gbvnet.search.fold_search`) and the ``python tune/search.py`` command (:mod:`gbvnet.search.cli`)."""
