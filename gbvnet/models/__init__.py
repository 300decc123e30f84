"""The models: GBV-Net (``gbvnet.models.gbvnet``) and the comparison networks of the model registry.

``build_model(cfg)`` builds the network a :class:`~gbvnet.config.ModelConfig` names; every network's
``forward(face=None, bio=None)`` returns ``{"logits": (B, num_classes)}``.
"""

from gbvnet.models.gbvnet import GBVNet, create_model


def build_model(cfg):
    """The ``nn.Module`` that ``cfg`` (a :class:`~gbvnet.config.ModelConfig`, input sizes fitted to the cache)
    describes."""
    return cfg.kind.build(cfg)


__all__ = ["GBVNet", "build_model", "create_model"]
