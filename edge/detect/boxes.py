"""Box arithmetic on (N, 4) xyxy pixel arrays: IoU, non-maximum suppression, format conversion."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) float32 intersection over union (0 for empty boxes)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_max: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices (int64) by decreasing score."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(xyxy[i : i + 1], xyxy[order[1:]])[0]
        order = order[1:][ious <= iou_max]
    return np.asarray(keep, dtype=np.int64)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """(N, 4) top-left x, y, width, height -> (N, 4) x1, y1, x2, y2 (float32)."""
    xywh = np.asarray(xywh, np.float32).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> (N, 4) top-left x, y, width, height (float32)."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
