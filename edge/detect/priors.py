"""Camera-geometry priors: how tall a person may be, depending on where their feet are in the image.

For a fixed camera looking down at a ground plane, a standing person's image height grows roughly
linearly with the image row of their feet (further down the image = closer to the camera). A
:class:`HeightPrior` holds that as a table of ``(foot row, min height, max height)`` knots, all as
fractions of the frame height (so the prior survives a change of resolution), linearly
interpolated between knots and held constant beyond the first and last. It can be written by hand
("at the bottom of the frame people are 40-70% of its height, at the horizon 3-8%") or fitted from a
few labelled frames of the camera with :meth:`HeightPrior.fit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HeightPrior:
    """Allowed person height by foot row.

    Attributes:
        knots: ``(foot_row, min_height, max_height)`` triples, fractions of the frame height in
            [0, 1], foot rows strictly increasing, ``0 < min_height <= max_height``.
    """

    knots: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        knots = tuple(tuple(float(v) for v in knot) for knot in self.knots)
        if not knots or any(len(k) != 3 for k in knots):
            raise ValueError(
                f"height prior: need [foot_row, min_height, max_height] triples, got {self.knots}"
            )
        rows = [k[0] for k in knots]
        if any(b <= a for a, b in zip(rows, rows[1:])):
            raise ValueError(f"height prior: foot rows must increase strictly, got {rows}")
        for row, low, high in knots:
            if not (0.0 <= row <= 1.0 and 0.0 < low <= high <= 1.5):
                raise ValueError(
                    f"height prior knot {(row, low, high)}: need 0 <= foot_row <= 1 and "
                    "0 < min_height <= max_height (fractions of the frame height)"
                )
        object.__setattr__(self, "knots", knots)

    @classmethod
    def from_setting(cls, value: HeightPrior | Sequence[Sequence[float]] | None) -> HeightPrior | None:
        """``None``, a prior, or a YAML list of ``[foot_row, min_height, max_height]`` lists."""
        if value is None or isinstance(value, HeightPrior):
            return value
        return cls(tuple(tuple(knot) for knot in value))  # type: ignore[arg-type]

    def bounds(self, foot_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) allowed heights, fractions of the frame height, for (N,) foot-row fractions."""
        rows, lows, highs = (np.asarray(column, np.float64) for column in zip(*self.knots))
        foot_rows = np.asarray(foot_rows, np.float64)
        return np.interp(foot_rows, rows, lows), np.interp(foot_rows, rows, highs)

    def allows(self, xyxy: np.ndarray, frame_height: int) -> np.ndarray:
        """(N,) bool: whether each (N, 4) xyxy pixel box's height fits its foot row."""
        xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
        low, high = self.bounds(xyxy[:, 3] / frame_height)
        height = (xyxy[:, 3] - xyxy[:, 1]) / frame_height
        return (height >= low) & (height <= high)

    @classmethod
    def fit(
        cls,
        xyxy: np.ndarray,
        frame_height: int,
        tolerance: float = 0.35,
        knots: int = 3,
    ) -> HeightPrior:
        """Fit ``height = a * foot_row + b`` to labelled person boxes of one camera (least squares)
        and allow ``+-tolerance`` (relative) around it, at ``knots`` rows spread over the rows seen.

        Args:
            xyxy: (N, 4) ground-truth boxes in pixels (N >= 2, feet at two or more rows).
            frame_height: the frames' height in pixels.
            tolerance: relative band around the fitted height (0.35: 65%..135%).
            knots: number of knots (>= 2); beyond the first and last the band is held constant.
        """
        xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
        if len(xyxy) < 2 or np.ptp(xyxy[:, 3]) <= 0:
            raise ValueError("height prior fit: need boxes with feet at two or more different rows")
        if not 0 < tolerance < 1 or knots < 2:
            raise ValueError("height prior fit: need 0 < tolerance < 1 and knots >= 2")
        rows = xyxy[:, 3] / frame_height
        heights = (xyxy[:, 3] - xyxy[:, 1]) / frame_height
        slope, intercept = np.polyfit(rows, heights, 1)
        at = np.linspace(rows.min(), rows.max(), knots)
        fitted = np.maximum(slope * at + intercept, 1e-3)
        return cls(
            tuple(
                (float(r), float(h * (1 - tolerance)), float(h * (1 + tolerance))) for r, h in zip(at, fitted)
            )
        )

    def to_setting(self) -> list[list[float]]:
        """The YAML form (``detector.settings.height_prior``), rounded to 4 decimals."""
        return [[round(v, 4) for v in knot] for knot in self.knots]
