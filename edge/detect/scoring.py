"""Detection quality against ground truth: greedy matching at an IoU threshold, recall and precision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.detect.boxes import box_iou


@dataclass(frozen=True)
class DetectionScore:
    """Counts over one or more images.

    Attributes:
        true_positives: predictions matched one-to-one to a ground-truth box at IoU >= the threshold.
        false_positives: unmatched predictions.
        false_negatives: unmatched ground-truth boxes.
    """

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def recall(self) -> float:
        total = self.true_positives + self.false_negatives
        return self.true_positives / total if total else 1.0

    @property
    def precision(self) -> float:
        total = self.true_positives + self.false_positives
        return self.true_positives / total if total else 1.0

    def __add__(self, other: DetectionScore) -> DetectionScore:
        return DetectionScore(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )


def evaluate_detections(
    pred_xyxy: np.ndarray, pred_scores: np.ndarray, gt_xyxy: np.ndarray, iou_min: float = 0.5
) -> DetectionScore:
    """Match predictions (by decreasing score) to the best still-free ground truth with IoU >= ``iou_min``.

    Args:
        pred_xyxy: (N, 4) predicted boxes, pixels. pred_scores: (N,).
        gt_xyxy: (M, 4) ground-truth boxes, pixels.
    """
    pred_xyxy = np.asarray(pred_xyxy, np.float32).reshape(-1, 4)
    gt_xyxy = np.asarray(gt_xyxy, np.float32).reshape(-1, 4)
    if len(pred_xyxy) == 0 or len(gt_xyxy) == 0:
        return DetectionScore(0, len(pred_xyxy), len(gt_xyxy))
    ious = box_iou(pred_xyxy, gt_xyxy)
    free = np.ones(len(gt_xyxy), dtype=bool)
    tp = 0
    for i in np.argsort(-np.asarray(pred_scores), kind="stable"):
        candidates = np.where(free, ious[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_min:
            free[j] = False
            tp += 1
    return DetectionScore(tp, len(pred_xyxy) - tp, len(gt_xyxy) - tp)
