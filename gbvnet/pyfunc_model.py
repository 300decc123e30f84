"""The MLflow model-from-code of a logged gbvnet model (:mod:`gbvnet.export`): MLflow runs this file when it loads
the model, so loading unpickles nothing; the python model is :class:`gbvnet.export.GBVNetModel`."""

import mlflow

from gbvnet.export import GBVNetModel

mlflow.models.set_model(GBVNetModel())
