"""Pictures of a run: loss curves, and what each PAM pattern attends to on both modalities."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.model import MPANet

_LOSS_KEYS = ("loss", "id", "cc", "sep", "id_visible", "id_infrared", "kl")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_loss_curves(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One panel per loss term (weighted total first) against the global step; eval metrics too.

    Returns the PNG path, or ``None`` when there is nothing to draw.
    """
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        return None
    plt = _pyplot()
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in train:
        for key in _LOSS_KEYS:
            if key in record:
                series[key].append((record["step"], record[key]))
    evals = [r for r in records if r.get("kind") == "eval"]
    panels = list(series) + (["evaluation"] if evals else [])
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, panels, strict=False):
        if name == "evaluation":
            for metric in ("rank1", "mAP", "mINP"):
                points = [(r["step"], r[metric]) for r in evals if metric in r]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", label=metric)
            ax.set_ylim(0, 1)
            ax.legend()
        else:
            steps, values = zip(*series[name], strict=True)
            ax.plot(steps, values)
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_pattern_maps(
    model: MPANet, images: Sequence[np.ndarray], titles: Sequence[str], path: Path, height: int, width: int
) -> Path:
    """Overlay each of the P pattern maps on each image; one row per image.

    Args:
        model: an MPANet with a PAM.
        images: RGB uint8 (h, w, 3) images (infrared ones already 3-channel).
        titles: one label per row (e.g. "query IR id 12").
        height, width: the model's input size.
    """
    import cv2

    from trainer.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    if model.pattern is None:
        raise ValueError(
            "the model has no pattern alignment module (model.pam=false): no pattern maps to draw"
        )
    resized = [cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA) for img in images]
    batch = np.stack(resized).astype(np.float32) / 255.0
    batch = (batch - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    tensor = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        maps = model(tensor).pattern_maps.float().cpu().numpy()  # (B, P, h, w)
    model.train(was_training)
    patterns = maps.shape[1]
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(images), patterns + 1, figsize=(1.3 * (patterns + 1), 2.6 * len(images)), squeeze=False
    )
    for row, (img, title) in enumerate(zip(resized, titles, strict=True)):
        axes[row, 0].imshow(img)
        axes[row, 0].set_title(title, fontsize=7)
        for p in range(patterns):
            heat = cv2.resize(maps[row, p], (width, height), interpolation=cv2.INTER_LINEAR)
            axes[row, p + 1].imshow(img)
            axes[row, p + 1].imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            if row == 0:
                axes[row, p + 1].set_title(f"pattern {p + 1}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_run_pattern_maps(model: MPANet, cfg: TrainConfig, path: Path, num_people: int = 3) -> Path | None:
    """Pattern maps on test images of a few people: one infrared and one visible image each.

    Returns the PNG path, or ``None`` without a PAM or without people seen in both modalities.
    """
    if model.pattern is None:
        return None
    from trainer.data import regdb, sysu_mm01
    from trainer.data.images import load_image_array

    if cfg.data.dataset == "sysu":
        test_set = sysu_mm01.load_test_set(cfg.data.root)
        infrared, visible = test_set.query, test_set.gallery_pool
    else:
        visible, infrared = regdb.load_test_samples(cfg.data.root, cfg.data.regdb_trial)
    first_visible = {}
    for sample in visible:
        first_visible.setdefault(sample.pid, sample)
    rows = []
    for sample in infrared:
        if sample.pid in first_visible and all(sample.pid != r[0].pid for r in rows):
            rows.append((sample, first_visible[sample.pid]))
        if len(rows) == num_people:
            break
    if not rows:
        return None
    chosen = [s for pair in rows for s in pair]
    images = [load_image_array(s.path) for s in chosen]
    titles = [f"id {s.pid} {s.modality.value} cam{s.camid}" for s in chosen]
    return draw_pattern_maps(model, images, titles, path, cfg.model.height, cfg.model.width)
