"""Frame sources: video files, folders of frames, RTSP/HTTP URLs, USB cameras, synthetic scenes.

A *reader* (:mod:`edge.sources.readers`) does the raw I/O; a *source* (:mod:`edge.sources.streams`)
wraps a reader with a mode -- ``live`` (latest-frame semantics, drops, reconnects, wall-clock time)
or ``replay`` (every frame, stream time) -- and turns raw images into :class:`Frame` objects whose
image is always 8-bit, 3-channel BGR (infrared: a percentile-stretched grey value replicated).
"""

from edge.sources.frame import Frame, SourceError, SourceStats, StreamEnd
from edge.sources.thermal import ThermalNormalizer, infrared_to_3ch

__all__ = ["Frame", "SourceError", "SourceStats", "StreamEnd", "ThermalNormalizer", "infrared_to_3ch"]
