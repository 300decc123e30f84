"""One training job: the worker loop (:mod:`~gbvnet.train.loop`), its epoch steps (:mod:`~gbvnet.train.steps`),
metrics, and its launch as Ray Train workers or Ray Tune trials (:mod:`~gbvnet.train.launch`); the
``python -m gbvnet.train`` command is :mod:`gbvnet.train.cli`."""
