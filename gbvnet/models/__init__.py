"""GBV-Net model family. ``create_model`` is the factory; see ``gbvnet.models.gbvnet``."""

from gbvnet.models.gbvnet import GBVNet, create_model

__all__ = ["GBVNet", "create_model"]
