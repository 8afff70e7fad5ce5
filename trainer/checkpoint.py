"""Checkpoint files: the model's weights with the architecture that reads them, written atomically.

A checkpoint is a ``torch.save`` dict with at least:

- ``format``: ``"mpanet-checkpoint"``, ``version``: 1
- ``model_config``: ``dataclasses.asdict(ModelConfig)``, enough to rebuild the network
- ``model``: the network's ``state_dict()`` (EMA classifiers included, as buffers)

Training adds optimizer/scheduler/sampler/RNG state and the resolved config (``config_yaml``) under
further keys; export reads only the three above.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from common.files import atomic_save
from trainer.model import ModelConfig, MPANet, build_mpanet

FORMAT = "mpanet-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable, or not an MPANet checkpoint."""


def save_checkpoint(path: str | os.PathLike[str], model: MPANet, **extra: Any) -> Path:
    """Write ``model`` (and any ``extra`` picklable state) to ``path`` atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dataclasses.asdict(model.config),
        "model": model.state_dict(),
        **extra,
    }
    target = Path(path)
    atomic_save(target, lambda handle: torch.save(payload, handle))
    return target


def read_checkpoint(path: str | os.PathLike[str], trusted: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict on CPU.

    Args:
        trusted: allow full unpickling (needed for training state such as RNG states); export and
            inference read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an MPANet checkpoint (no format={FORMAT!r} entry)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})"
        )
    for key in ("model_config", "model"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    return payload


def load_model(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[MPANet, dict[str, Any]]:
    """Rebuild the network of a checkpoint and load its weights (eval mode).

    Returns:
        (model, payload) where payload is the whole checkpoint dict.
    """
    payload = read_checkpoint(path)
    try:
        config = ModelConfig(**{**payload["model_config"], "pretrained": None})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model_config: {exc}") from exc
    model = build_mpanet(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored model_config: {exc}") from exc
    return model.to(map_location).eval(), payload
