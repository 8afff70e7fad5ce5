"""The detector interface and the explicit name -> constructor table (no import-time registry)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from edge.detect.detections import Detections
from edge.sources.frame import Frame


class DetectorError(RuntimeError):
    """A detector that cannot be built or run (missing weights, bad settings, wrong modality)."""


@runtime_checkable
class Detector(Protocol):
    """``detector(frame) -> Detections`` of persons (class id 0), boxes in the frame's pixels."""

    name: str

    def __call__(self, frame: Frame) -> Detections: ...


def _build_yolo(**kwargs: Any) -> Detector:
    from edge.detect.yolo import YoloDetector

    return YoloDetector(**kwargs)


def _build_hog(**kwargs: Any) -> Detector:
    from edge.detect.hog import HogDetector

    return HogDetector(**kwargs)


def _build_thermal(**kwargs: Any) -> Detector:
    from edge.detect.thermal import HotRegionDetector

    return HotRegionDetector(**kwargs)


def _build_mot(**kwargs: Any) -> Detector:
    from edge.detect.mot import MotFileDetector

    return MotFileDetector(**kwargs)


# name -> constructor. Each constructor imports its backend only when called.
DETECTORS: dict[str, Callable[..., Detector]] = {
    "yolo": _build_yolo,
    "hog": _build_hog,
    "thermal": _build_thermal,
    "mot": _build_mot,
}
_CLASSES = {
    "yolo": ("edge.detect.yolo", "YoloDetector"),
    "hog": ("edge.detect.hog", "HogDetector"),
    "thermal": ("edge.detect.thermal", "HotRegionDetector"),
    "mot": ("edge.detect.mot", "MotFileDetector"),
}


def build_detector(name: str, **kwargs: Any) -> Detector:
    """Build the detector ``name`` (``yolo``, ``hog``, ``thermal``, ``mot``) with typed settings.

    Raises:
        DetectorError: unknown name, or settings the backend does not take (named with the valid ones).
    """
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; available: {', '.join(sorted(DETECTORS))}")
    try:
        return DETECTORS[name](**kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        module, cls = _CLASSES[name]
        params = inspect.signature(getattr(__import__(module, fromlist=[cls]), cls)).parameters
        raise DetectorError(f"detector {name!r}: {exc}; valid settings: {', '.join(params)}") from exc
