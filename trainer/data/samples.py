"""The record every dataset reader returns: one image with its identity, camera and modality."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from common import Modality

__all__ = ["DatasetError", "LabelledSample", "Sample", "relabel"]


class DatasetError(ValueError):
    """A dataset folder, split file or image that is missing or malformed; the message names the path."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image of a re-identification dataset.

    Attributes:
        path: image file path (as found on disk; absolute when the reader was given an absolute root).
        pid: the dataset's own identity number (SYSU-MM01: the 4-digit folder id; RegDB: the split
            file's label).
        camid: camera number. SYSU-MM01: 1..6 (infrared iff 3 or 6). RegDB: 2 for visible and 3 for
            thermal, as MPANet assigns them; RegDB searches use no camera filtering.
        modality: :class:`~common.Modality` of the image.
    """

    path: str
    pid: int
    camid: int
    modality: Modality


@dataclasses.dataclass(frozen=True)
class LabelledSample(Sample):
    """A training sample: :class:`Sample` plus ``label``, the identity relabelled to 0..N-1."""

    label: int = -1


def relabel(samples: Iterable[Sample]) -> list[LabelledSample]:
    """Attach contiguous labels 0..N-1 to ``samples``, in increasing ``pid`` order.

    The order of the returned list is the order of ``samples``.
    """
    items: Sequence[Sample] = list(samples)
    mapping = {pid: label for label, pid in enumerate(sorted({s.pid for s in items}))}
    return [
        LabelledSample(path=s.path, pid=s.pid, camid=s.camid, modality=s.modality, label=mapping[s.pid])
        for s in items
    ]
