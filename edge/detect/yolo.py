"""Ultralytics YOLO person detector (person class only); weights from a local path.

Each camera may use its own weights (a thermal-trained model for infrared). Nothing is downloaded
here: the weights must be on disk (ultralytics fetches official ones on a machine with internet).
Building from a model ``.yaml`` gives random weights -- for plumbing tests only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.detect.detections import Detections
from edge.detect.factory import DetectorError
from edge.sources.frame import Frame


class YoloDetector:
    """Persons found by an ultralytics YOLO model.

    Args:
        weights: path to a ``.pt`` (or exported ``.onnx``/``.engine``) checkpoint, or a model ``.yaml``
            (random weights, tests only).
        confidence_min: detections below this confidence are dropped (ultralytics ``conf``).
        iou_max: NMS IoU threshold (ultralytics ``iou``).
        image_size: inference size in pixels (ultralytics ``imgsz``).
        min_height_px: drop boxes shorter than this.
        max_detections: at most this many boxes per frame.
        person_class: class id of persons; ``None`` looks up the class named ``person`` in the model
            (COCO: 0) and falls back to 0 for models without names.
        device: ``cpu``, ``cuda:0``, ... (``None``: ultralytics' choice).
        half: FP16 inference (GPU only).
    """

    name = "yolo"

    def __init__(
        self,
        weights: str | os.PathLike[str],
        confidence_min: float = 0.25,
        iou_max: float = 0.7,
        image_size: int = 640,
        min_height_px: float = 0.0,
        max_detections: int = 300,
        person_class: int | None = None,
        device: str | None = None,
        half: bool = False,
    ) -> None:
        path = Path(weights)
        if path.suffix not in (".yaml", ".yml") and not path.exists():
            raise DetectorError(
                f"YOLO weights {path} not found. Get them on a machine with internet, e.g. "
                f"`python -c \"from ultralytics import YOLO; YOLO('{path.name or 'yolo11n.pt'}')\"` "
                "(ultralytics downloads official weights such as yolo11n.pt / yolov8n.pt into the "
                "working directory), then copy the file to this path or set detector.weights to it."
            )
        try:
            from ultralytics import YOLO
        except ImportError as exc:  # pragma: no cover - ultralytics is a declared dependency
            raise DetectorError(
                "the yolo detector needs the ultralytics package (pip install ultralytics)"
            ) from exc
        try:
            self.model = YOLO(str(path), task="detect")
        except Exception as exc:  # ultralytics raises assorted types for unreadable files
            raise DetectorError(f"cannot load YOLO model {path}: {exc}") from exc
        self.weights = path
        self.confidence_min = confidence_min
        self.iou_max = iou_max
        self.image_size = image_size
        self.min_height_px = min_height_px
        self.max_detections = max_detections
        self.device = device
        self.half = half
        self.person_class = self._person_class(person_class)

    def _person_class(self, person_class: int | None) -> int:
        if person_class is not None:
            return int(person_class)
        names = getattr(self.model, "names", None) or {}
        for index, label in dict(names).items():
            if str(label).lower() == "person":
                return int(index)
        return 0

    def __call__(self, frame: Frame) -> Detections:
        options = dict(
            conf=self.confidence_min,
            iou=self.iou_max,
            imgsz=self.image_size,
            classes=[self.person_class],
            max_det=self.max_detections,
            device=self.device,
            verbose=False,
        )
        if self.half:  # only when asked: recent ultralytics warns about the flag itself
            options["half"] = True
        results = self.model.predict(frame.image, **options)
        boxes = results[0].boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        xyxy = boxes.xyxy.cpu().numpy().astype(np.float32)
        scores = boxes.conf.cpu().numpy().astype(np.float32)
        det = Detections(xyxy, scores).clipped(frame.width, frame.height)
        return det[det.heights >= self.min_height_px]
