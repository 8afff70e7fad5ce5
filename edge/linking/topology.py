"""Camera topology: where cameras are, which see the same place, how long it takes to get between sites.

A person is in one place at a time. With a topology the linker never gives one identity to two
tracks that this rules out (:meth:`Topology.compatible`):

- cameras of one **overlap group** see the same place (an RGB and a thermal camera side by side,
  two views of one hall): one identity may be active in both at the same time;
- other cameras of one **site** do not overlap: an identity may not be active in two of them at the
  same time (their track lifetimes must not overlap; ``min_transit_s`` of the site pair
  ``(site, site)`` may ask for a gap);
- cameras of **different sites** never share an identity, unless a transit rule for the two sites
  exists and the gap between the tracks is at least its ``min_s`` (either direction).

No cameras configured (the default): no constraint at all, as before topologies existed. Cameras
missing from a configured topology are each their own overlap group in site ``""``.

Config (the ``topology`` section)::

    topology:
      cameras:
        cam-rgb: {site: lobby, overlap_group: entrance}
        cam-ir:  {site: lobby, overlap_group: entrance}
        cam-lot: {site: parking}
      transit:
        - {from_site: lobby, to_site: parking, min_s: 40}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["CameraPlace", "Topology", "TopologyConfig", "TransitRule"]


@dataclass
class CameraPlace:
    """Where one camera is: its ``site`` and optional ``overlap_group`` ("" = overlaps no other)."""

    site: str = ""
    overlap_group: str = ""


@dataclass
class TransitRule:
    """The least time (s) between leaving a camera of ``from_site`` and appearing at ``to_site``
    (and back: the rule holds in both directions)."""

    from_site: str = ""
    to_site: str = ""
    min_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_s) and self.min_s >= 0):
            raise ValueError(
                f"topology.transit min_s must be a finite number of seconds >= 0, got {self.min_s}"
            )


@dataclass
class TopologyConfig:
    """The ``topology`` section: ``cameras`` (camera id -> place) and ``transit`` rules."""

    cameras: dict[str, CameraPlace] = field(default_factory=dict)
    transit: list[TransitRule] = field(default_factory=list)


class Topology:
    """Answers whether one person could have made two tracks (module docstring)."""

    def __init__(self, config: TopologyConfig | None = None) -> None:
        config = config or TopologyConfig()
        self.places = {str(c): p for c, p in config.cameras.items()}
        self.transit: dict[tuple[str, str], float] = {}
        for rule in config.transit:
            for pair in ((rule.from_site, rule.to_site), (rule.to_site, rule.from_site)):
                self.transit[pair] = min(self.transit.get(pair, math.inf), float(rule.min_s))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topology) and (self.places, self.transit) == (other.places, other.transit)

    __hash__ = None  # type: ignore[assignment]

    @property
    def sites(self) -> int:
        """How many sites the configured cameras are at."""
        return len({p.site for p in self.places.values()})

    @property
    def constrained(self) -> bool:
        return bool(self.places)

    def site(self, camera: str) -> str:
        place = self.places.get(camera)
        return place.site if place is not None else ""

    def compatible(
        self, camera_a: str, first_a: float, last_a: float, camera_b: str, first_b: float, last_b: float
    ) -> bool:
        """Whether tracks of ``camera_a`` during [first_a, last_a] and ``camera_b`` during
        [first_b, last_b] (capture s) may be one person. One camera: always (its own rule, the
        co-occurrence of overlapping tracks, is the linker's)."""
        if not self.places or camera_a == camera_b:
            return True
        a = self.places.get(camera_a) or CameraPlace(overlap_group=f"\0{camera_a}")
        b = self.places.get(camera_b) or CameraPlace(overlap_group=f"\0{camera_b}")
        if a.overlap_group and a.overlap_group == b.overlap_group:
            return True
        gap = max(first_b - last_a, first_a - last_b)  # <= 0: both active at one instant
        needed = self.transit.get((a.site, b.site))
        if needed is None:
            return a.site == b.site and gap > 0  # one site: not at the same time; other sites: never
        return gap >= needed and gap > 0
