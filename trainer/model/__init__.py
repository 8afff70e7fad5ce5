"""The MPANet network (spec section 1): ``build_mpanet()`` -> :class:`MPANet`."""

from trainer.model.backbone import WeightsError, resolve_imagenet_file
from trainer.model.config import ModelConfig
from trainer.model.mpanet import EmbeddingHead, MPANet, MPANetOutput, build_mpanet, count_parameters

__all__ = [
    "EmbeddingHead",
    "MPANet",
    "MPANetOutput",
    "ModelConfig",
    "WeightsError",
    "build_mpanet",
    "count_parameters",
    "resolve_imagenet_file",
]
