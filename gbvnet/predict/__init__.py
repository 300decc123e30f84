"""The final model leaves for use: an MLflow pyfunc with everything needed to prepare a new recording
(:mod:`~gbvnet.predict.export`, :mod:`~gbvnet.predict.pyfunc_model`), and ``python -m gbvnet.predict``
(:mod:`gbvnet.predict.cli`), which applies it."""
