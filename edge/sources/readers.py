"""Raw frame I/O: video files, folders of frames, RTSP/HTTP URLs, USB cameras (OpenCV/FFmpeg).

A reader knows nothing about modes, modalities or timestamps; :mod:`edge.sources.streams` does.
Contract: :meth:`FrameReader.open` raises :class:`SourceError` when the source cannot be opened
(naming it and why); :meth:`FrameReader.read` returns the next raw image (uint8 or uint16, as the
file holds it) or ``None`` at the end of the stream or when a stream is lost.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from edge.sources.frame import SourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


class FrameReader(ABC):
    """Raw image I/O of one source.

    Attributes:
        name: what the errors and logs call this source (a path, a URL, ``usb:0``).
        finite: whether the stream has a natural end (files, folders).
    """

    name: str = "reader"
    finite: bool = True

    @abstractmethod
    def open(self) -> None:
        """Open (or re-open) the source; raises :class:`SourceError` when it cannot."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next image, or ``None`` at the end / when the stream is lost."""

    @property
    def fps(self) -> float | None:
        """Frames per second the source declares (``None`` if unknown)."""
        return None

    def close(self) -> None:  # noqa: B027 - readers without resources have nothing to release
        """Release the source. Idempotent."""

    def __enter__(self) -> FrameReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CaptureReader(FrameReader):
    """A cv2.VideoCapture-backed reader (files, URLs, USB devices)."""

    def __init__(self) -> None:
        self._capture: cv2.VideoCapture | None = None
        self._fps: float | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    def read(self) -> np.ndarray | None:
        if self._capture is None:
            raise SourceError(f"{self.name}: read() before open()")
        ok, image = self._capture.read()
        return image if ok and image is not None else None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _finish_open(self, capture: cv2.VideoCapture, what: str) -> None:
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {what} {self.name}: OpenCV/FFmpeg could not open or decode it")
        fps = capture.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None
        self._capture = capture


class VideoFileReader(_CaptureReader):
    """A video file (anything FFmpeg decodes: mp4, avi, mkv, ...), or a single image.

    A single image file (a suffix of :data:`IMAGE_SUFFIXES`) is a stream of exactly one frame,
    read with ``cv2.imread`` (16-bit thermal kept as stored), declaring 1 fps (its only frame is at
    t = 0, so the rate changes nothing). FFmpeg would open such a file and then yield no frame after
    the seek back to the start -- a silent empty stream. A sequence of images is ``kind: folder``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = str(self.path)
        self._image: np.ndarray | None = None
        self._single = False  # opened as a single image

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_SUFFIXES

    def open(self) -> None:
        self.close()
        if self.path.is_dir():
            raise SourceError(
                f"video file {self.path} is a folder: a folder of frames is a source of kind 'folder' "
                "(with path and pattern), not 'file'"
            )
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist")
        if self.is_image:
            image = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise SourceError(
                    f"image {self.path} is not readable; for a sequence of frames use kind 'folder'"
                )
            self._image, self._single, self._fps = image, True, 1.0
            return
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        self._finish_open(capture, "video file")
        # A file that opens but whose first frame does not decode is corrupt: say so now, not
        # later as an empty stream that looks like success.
        ok, _ = capture.read()
        if not ok:
            self.close()
            raise SourceError(
                f"video file {self.path} opened but no frame could be decoded (corrupt or empty)"
            )
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def read(self) -> np.ndarray | None:
        if self._single:
            image, self._image = self._image, None
            return image
        return super().read()

    def close(self) -> None:
        self._image, self._single = None, False
        super().close()


class UrlReader(_CaptureReader):
    """An RTSP/HTTP(S) stream through FFmpeg, with open and read timeouts.

    Args:
        url: ``rtsp://...``, ``http://...`` (MJPEG or any FFmpeg-readable stream), ``https://...``.
        open_timeout_ms, read_timeout_ms: FFmpeg timeouts, so a dead camera fails instead of hanging.
    """

    finite = False

    def __init__(self, url: str, open_timeout_ms: int = 5000, read_timeout_ms: int = 5000) -> None:
        super().__init__()
        if not re.match(r"^(rtsp|rtsps|http|https|rtmp|udp|tcp)://", url):
            raise SourceError(
                f"URL {url!r} must start with rtsp://, http://, https://, rtmp://, udp:// or tcp://"
            )
        self.url = url
        self.name = _redact(url)
        self.open_timeout_ms = open_timeout_ms
        self.read_timeout_ms = read_timeout_ms

    def open(self) -> None:
        self.close()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self.open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self.read_timeout_ms,
        ]
        capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        self._finish_open(capture, "stream")


class UsbReader(_CaptureReader):
    """A local camera by index (``/dev/video<index>`` on Linux)."""

    finite = False

    def __init__(self, index: int, width: int | None = None, height: int | None = None) -> None:
        super().__init__()
        self.index = int(index)
        self.name = f"usb:{self.index}"
        self.width, self.height = width, height

    def open(self) -> None:
        self.close()
        capture = cv2.VideoCapture(self.index)
        if self.width and self.height:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._finish_open(capture, "camera")


class FolderReader(FrameReader):
    """A folder of frames read in sorted file-name order (8- or 16-bit images kept as stored).

    Args:
        path: the folder.
        pattern: glob of the frame files (default: every image suffix of :data:`IMAGE_SUFFIXES`).
        fps: frame rate for timestamps (a folder has none of its own).
    """

    def __init__(self, path: str | os.PathLike[str], pattern: str = "*", fps: float | None = None) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.pattern = pattern
        self._fps = fps
        self._files: list[Path] = []
        self._next = 0

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"frame folder {self.path} does not exist (or is not a folder)")
        files = sorted(
            p for p in self.path.glob(self.pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise SourceError(
                f"frame folder {self.path} has no images matching {self.pattern!r} "
                f"(suffixes {', '.join(IMAGE_SUFFIXES)})"
            )
        self._files = files
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        self._next += 1
        if not path.is_file():  # the folder changed under us: a lost stream, not a crash
            return None
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SourceError(f"frame {path} is not a readable image")
        return image


def _redact(url: str) -> str:
    """``rtsp://user:pass@host`` -> ``rtsp://user:***@host`` for logs and messages."""
    return re.sub(r"://([^:/@]+):([^@]+)@", r"://\1:***@", url)
