"""Tiny engine artifacts shared by the engine tests: built once per test session, in a temp folder.

A random-init ResNet-18 MPANet at 128x64 (D = 7 x 512 = 3584) is saved as a checkpoint and exported
once; the FP16 and INT8 graphs are derived from that export on first use. Tests that modify files
copy them first.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 128, 64
EMBEDDING_DIM = 7 * 512


@dataclass(frozen=True)
class TinyEngine:
    folder: Path
    checkpoint: Path
    onnx: Path


@functools.cache
def tiny_engine(base: Path) -> TinyEngine:
    """Checkpoint + verified FP32 ONNX under ``base/tiny-engine`` (built on the first call)."""
    import torch

    from engines.export import export_onnx
    from trainer.checkpoint import save_checkpoint
    from trainer.model import build_mpanet

    folder = base / "tiny-engine"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_mpanet(arch="resnet18", height=HEIGHT, width=WIDTH, num_classes=8)
    # Non-trivial BN-neck statistics, as a trained model has (random init leaves mean 0 / var 1).
    with torch.no_grad():
        model.neck.running_mean.uniform_(-0.05, 0.05)
        model.neck.running_var.uniform_(0.5, 2.0)
    checkpoint = save_checkpoint(folder / "tiny.pt", model)
    result = export_onnx(checkpoint, folder / "tiny.onnx")
    return TinyEngine(folder=folder, checkpoint=checkpoint, onnx=result.artifact)


@functools.cache
def tiny_fp16(base: Path) -> Path:
    from engines.precision import convert_fp16

    return convert_fp16(tiny_engine(base).onnx).artifact


@functools.cache
def tiny_int8(base: Path) -> Path:
    from engines.precision import quantize_int8

    return quantize_int8(tiny_engine(base).onnx, calibration_set(48)).artifact


@functools.cache
def tiny_int8_cpu(base: Path) -> Path:
    from engines.precision import quantize_int8

    # 40 crops in batches of 16: a ragged last batch, which the calibration must handle.
    return quantize_int8(tiny_engine(base).onnx, calibration_set(40), target="cpu").artifact


def calibration_set(count: int, seed: int = 1):
    """Synthetic calibration crops of both modalities, preprocessed (no files needed)."""
    from engines.calibration import CalibrationSet

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, 3, HEIGHT, WIDTH), dtype=np.float32)
    half = count // 2
    modalities = ("visible",) * half + ("infrared",) * (count - half)
    return CalibrationSet(images, modalities, tuple(f"synthetic-{i}" for i in range(count)))


def images(count: int, seed: int = 0) -> np.ndarray:
    """(count, 3, H, W) float32 standard-normal inputs (the scale of normalised images)."""
    return np.random.default_rng(seed).standard_normal((count, 3, HEIGHT, WIDTH), dtype=np.float32)


def copy_artifact(artifact: Path, folder: Path) -> Path:
    """Copy an artifact and its sidecar into ``folder`` (for tests that alter them)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / artifact.name
    shutil.copyfile(artifact, target)
    shutil.copyfile(artifact.with_name(artifact.name + ".json"), target.with_name(target.name + ".json"))
    return target
