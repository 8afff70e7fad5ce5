"""Crop preprocessing exactly as an engine's sidecar says (no torch).

Edge frames are OpenCV images (BGR, uint8); infrared crops may be single-channel. The result is the
(N, 3, H, W) float32 tensor the engine takes.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from engines.sidecar import Preprocessing


def preprocess_crops(
    crops: Sequence[np.ndarray], spec: Preprocessing, input_order: str = "BGR"
) -> np.ndarray:
    """Resize, reorder, scale and normalise crops into one batch.

    Args:
        crops: uint8 images, each (h, w, 3) in ``input_order`` or (h, w) / (h, w, 1) single-channel
            (infrared: the grey value is replicated to 3 channels, ``spec.infrared_to_3ch``).
            16-bit thermal frames must be turned into 8 bits before cropping (see edge.sources).
        spec: the engine's :class:`Preprocessing`.
        input_order: ``BGR`` (OpenCV) or ``RGB``: the channel order of 3-channel ``crops``.

    Returns:
        (N, 3, spec.height, spec.width) float32, normalised; (0, 3, H, W) for no crops.
    """
    if input_order not in ("BGR", "RGB"):
        raise ValueError(f"input_order must be 'BGR' or 'RGB', got {input_order!r}")
    out = np.empty((len(crops), 3, spec.height, spec.width), dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    inv_std = (1.0 / np.asarray(spec.std, dtype=np.float32)).reshape(3, 1, 1)
    for i, crop in enumerate(crops):
        image = _three_channels(crop, i)
        if input_order != spec.channel_order:
            image = image[:, :, ::-1]
        h, w = image.shape[:2]
        # INTER_AREA when shrinking approximates the antialiased bilinear resize used in training.
        interp = cv2.INTER_AREA if (h > spec.height and w > spec.width) else cv2.INTER_LINEAR
        resized = cv2.resize(np.ascontiguousarray(image), (spec.width, spec.height), interpolation=interp)
        chw = resized.transpose(2, 0, 1).astype(np.float32) * (1.0 / 255.0)
        out[i] = (chw - mean) * inv_std
    return out


def _three_channels(crop: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8:
        raise ValueError(
            f"crop {index}: expected a uint8 numpy image, got {getattr(crop, 'dtype', type(crop))}"
        )
    if crop.ndim == 3 and crop.shape[2] == 1:
        crop = crop[:, :, 0]
    if crop.ndim == 2:
        return np.repeat(crop[:, :, None], 3, axis=2)  # 'replicate'
    if crop.ndim == 3 and crop.shape[2] == 3:
        if crop.shape[0] < 1 or crop.shape[1] < 1:
            raise ValueError(f"crop {index} is empty: shape {crop.shape}")
        return crop
    raise ValueError(f"crop {index}: expected (h, w), (h, w, 1) or (h, w, 3), got shape {crop.shape}")
