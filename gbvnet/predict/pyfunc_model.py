"""The MLflow model-from-code of a logged gbvnet model (:mod:`gbvnet.predict.export`): MLflow runs this file when it loads
the model, so loading unpickles nothing; the python model is :class:`gbvnet.predict.export.GBVNetModel`."""

import mlflow

from gbvnet.predict.export import GBVNetModel

mlflow.models.set_model(GBVNetModel())
