"""One optimisation step of MPANet: EMA update, (mixed-precision) forward, objective, backward, step.

Shared by the training loop and the throughput benchmark, so what is measured is what trains.
"""

from __future__ import annotations

import torch

from trainer.losses import MPANetObjective
from trainer.model import MPANet


def train_step(
    model: torch.nn.Module,
    network: MPANet,
    objective: MPANetObjective,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: torch.Tensor,
    labels: torch.Tensor,
    modality: torch.Tensor,
    mean_rate: float | None,
    amp: bool,
) -> dict[str, float]:
    """Run one step; returns the unweighted loss terms and ``loss`` (the weighted total) as floats.

    Args:
        model: what is called (``network`` itself, or its DDP wrapper).
        network: the bare MPANet (its EMA classifiers are updated first when ``mean_rate`` is set).
        images: (B, 3, H, W) float on the model's device; labels, modality: (B,) int64.
        mean_rate: EMA rate of the mean classifiers this epoch (``None``: no mutual mean learning).
        amp: float16 autocast on CUDA (the GradScaler must be enabled likewise).

    Raises:
        FloatingPointError: the loss is not finite (with the terms, to see which one broke).
    """
    if mean_rate is not None:
        network.update_mean_classifiers(mean_rate)
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=amp):
        out = model(images, modality)
    result = objective(out, labels, modality)
    if not torch.isfinite(result.total):
        raise FloatingPointError(
            f"loss is {result.total.item()}: terms { ({k: float(v) for k, v in result.terms.items()}) }"
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(result.total).backward()
    scaler.step(optimizer)
    scaler.update()
    values = {k: float(v) for k, v in result.terms.items()}
    values["loss"] = float(result.total.detach())
    return values
