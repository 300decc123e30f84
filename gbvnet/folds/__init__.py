"""Folds: the evaluation protocols (:mod:`gbvnet.folds.protocols`) and the leakage guard every fold passes."""
