"""Train and test image transforms of MPANet (spec section 3, "Augmentations").

Train, in this order: hard resize to (H, W) (aspect ratio not kept), horizontal flip (p 0.5), pad
10 px with constant 127, random crop back to (H, W), ToTensor, ImageNet normalisation, random
erasing (p 0.5, scale (0.02, 0.33), ratio (0.3, 3.3), value 0, i.e. applied after normalisation so
erased pixels are 0 in normalised space). Test: resize, ToTensor, normalise; no flip.
Inputs are PIL RGB images (see :func:`trainer.data.images.load_image`); outputs float32 (3, H, W).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torchvision import transforms as T

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_test_transform",
    "build_train_transform",
    "preprocess_test",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(
    height: int,
    width: int,
    *,
    flip_p: float = 0.5,
    pad: int = 10,
    pad_fill: int = 127,
    erasing_p: float = 0.5,
) -> T.Compose:
    """The MPANet training transform for (H, W) = (``height``, ``width``) (spec defaults)."""
    steps: list = [T.Resize((height, width))]
    if flip_p > 0:
        steps.append(T.RandomHorizontalFlip(flip_p))
    if pad > 0:
        steps += [T.Pad(pad, fill=pad_fill), T.RandomCrop((height, width))]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if erasing_p > 0:
        steps.append(T.RandomErasing(p=erasing_p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0))
    return T.Compose(steps)


def build_test_transform(height: int, width: int) -> T.Compose:
    """The MPANet test transform: Resize((H, W)), ToTensor, ImageNet Normalize (no flip)."""
    return T.Compose([T.Resize((height, width)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def preprocess_test(image: Image.Image, height: int, width: int) -> np.ndarray:
    """The test transform without torch: PIL bilinear resize, /255, ImageNet normalise.

    Returns float32 (3, H, W); equal to :func:`build_test_transform` up to float rounding (both use
    PIL's antialiased bilinear resize).
    """
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    array = (array - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))
