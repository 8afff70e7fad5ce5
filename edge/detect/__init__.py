"""Person detection: one :class:`Detections` container and backends behind one interface.

Backends (``yolo``, ``hog``, ``thermal``, ``mot``) are built by name with
:func:`edge.detect.factory.build_detector`; each is imported only when built (ultralytics only for
``yolo``).
"""

from edge.detect.detections import Detections
from edge.detect.factory import DETECTORS, Detector, DetectorError, build_detector

__all__ = ["DETECTORS", "Detections", "Detector", "DetectorError", "build_detector"]
