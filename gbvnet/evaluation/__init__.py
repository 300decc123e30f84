"""Evaluations: the engine every protocol runs through (:mod:`~gbvnet.evaluation.engine`), subject-dependent and
LOSO, nested search, the protocol gap, the model benchmark, seeds, the statistics and the report. The commands
(``python -m evaluation.loso`` ...) are thin entry points over these modules."""
