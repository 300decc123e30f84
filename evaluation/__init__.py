"""The evaluation commands (``python -m evaluation.loso`` ...): thin entry points, run from the repository's root,
over :mod:`gbvnet.evaluation`. Nothing here is installed."""
