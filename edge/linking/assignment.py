"""Decision rules: which global identity a camera track is, and when that decision is revised.

The rules are pure functions over ranked candidates, so they can be tested table by table; the
linker (:mod:`edge.linking.linker`) feeds them and keeps the per-track state (votes, patience).

Scores. A track's evidence is its aggregated embedding (unit length). For an identity, the best
cosine with its prototypes of the track's modality (``cosine_same``) and of the other modality
(``cosine_cross``) are compared with their own thresholds, because MPANet narrows the
visible-infrared gap without closing it: cross-modality cosines of one person are lower. The
same-modality threshold is per modality (different people are typically more alike in infrared,
where colour is gone, than in visible). A candidate's *excess* is
``max(cosine_same - same_threshold(modality), cosine_cross - cross_threshold)``; it is eligible
when the excess is >= 0, and candidates are ranked by excess. The thresholds come from the
engine's calibration (:mod:`edge.linking.calibration`) unless set in the config.

Rules (thresholds in :class:`MatchingRules`):

1. First decision, once a track has ``min_sightings`` sightings with an embedding: the best
   eligible candidate if it beats the second-best by ``margin_min`` (excess difference), else wait
   while ambiguous (at most ``max_ambiguous_sightings`` evaluations, then take the best); no
   eligible candidate: a new identity.
2. Revision (stickiness): an assigned track moves to another identity only if that identity is
   eligible, unambiguous (``margin_min`` over the next one) and beats the current identity's excess
   (computed without the track's own evidence; 0 when the track is the identity's only evidence) by
   ``revise_margin``, in ``revise_votes`` consecutive evaluations. It splits off into a new identity
   only if the current identity's excess falls below ``-revise_margin`` with no eligible
   alternative, in ``revise_votes`` consecutive evaluations.
3. Co-occurrence: identities held by another track of the same camera whose lifetime overlaps this
   track's are excluded (two people seen at once by one camera are two people). If such a conflict
   appears after both were assigned, the track assigned later is re-decided at once without that
   identity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from common.modality import Modality
from edge.linking.gallery import IdentityMatch

DEFAULT_COSINE_MIN_SAME = 0.5
DEFAULT_COSINE_MIN_CROSS = 0.3
THRESHOLD_FIELDS = ("cosine_min_same", "cosine_min_cross", "cosine_min_visible", "cosine_min_infrared")


@dataclass
class MatchingRules:
    """Thresholds of the decision rules (cosine similarities of unit vectors, in [-1, 1]).

    The four thresholds are ``None`` unless set explicitly; ``None`` takes the engine's calibration
    (:func:`edge.linking.calibration.resolve_thresholds`) and, without one, the defaults
    ``DEFAULT_COSINE_MIN_SAME`` / ``DEFAULT_COSINE_MIN_CROSS``.

    Attributes:
        cosine_min_same: least cosine with a prototype of the track's own modality to match it
            (both modalities, unless the per-modality value is set).
        cosine_min_visible, cosine_min_infrared: the same, for visible / infrared tracks.
        cosine_min_cross: least cosine with a prototype of the other modality to match it
            (lower: visible-infrared cosines of one person are lower than same-modality ones).
        margin_min: the best candidate's excess must beat the second-best's by this much.
        revise_margin: stickiness; a revision needs a candidate this much better (in excess) than
            the current identity, or the current identity this far below its threshold for a split.
        revise_votes: consecutive evaluations that must agree before a revision is made.
        min_sightings: sightings with an embedding a track needs before its first decision.
        max_ambiguous_sightings: evaluations an ambiguous track waits before taking the best.
        reevaluate_every_sightings: an assigned track is re-evaluated every this many sightings
            (each evaluation is a gallery search: the cost of the linker grows with evaluations, not
            sightings, and a track's aggregated embedding changes slowly).
        cooccurrence_min_overlap_s: two tracks of one camera whose lifetimes overlap by at least
            this many seconds (0: share any instant, e.g. one frame) are different people.
        track_idle_s: a track not seen for this many seconds of its camera's capture time has ended.
        top_k: identities considered per evaluation.
        joint_assignment: first decisions of tracks pending at the same time are made jointly,
            one-to-one (a linear assignment); ``false``: one after another (greedy, as before).
    """

    cosine_min_same: float | None = None
    cosine_min_cross: float | None = None
    cosine_min_visible: float | None = None
    cosine_min_infrared: float | None = None
    margin_min: float = 0.05
    revise_margin: float = 0.05
    revise_votes: int = 3
    min_sightings: int = 3
    max_ambiguous_sightings: int = 10
    reevaluate_every_sightings: int = 5
    cooccurrence_min_overlap_s: float = 0.0
    track_idle_s: float = 5.0
    top_k: int = 5
    joint_assignment: bool = True

    def __post_init__(self) -> None:
        for name in THRESHOLD_FIELDS:
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"matching.{name} must be a cosine in (0, 1], got {value}")
        for name in ("margin_min", "revise_margin", "cooccurrence_min_overlap_s"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"matching.{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "revise_votes",
            "min_sightings",
            "max_ambiguous_sightings",
            "reevaluate_every_sightings",
            "top_k",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"matching.{name} must be >= 1, got {getattr(self, name)}")
        if not self.track_idle_s > 0:
            raise ValueError(f"matching.track_idle_s must be > 0 seconds, got {self.track_idle_s}")

    def same_threshold(self, modality: Modality) -> float:
        """The least same-modality cosine for a ``modality`` track (per-modality, shared, default)."""
        own = self.cosine_min_visible if modality is Modality.VISIBLE else self.cosine_min_infrared
        if own is not None:
            return own
        return self.cosine_min_same if self.cosine_min_same is not None else DEFAULT_COSINE_MIN_SAME

    @property
    def cross_threshold(self) -> float:
        """The least visible-infrared cosine."""
        return self.cosine_min_cross if self.cosine_min_cross is not None else DEFAULT_COSINE_MIN_CROSS


@dataclass(frozen=True)
class Candidate:
    """An identity as a possible match for a track.

    Attributes:
        global_id: the identity.
        excess: the better of its same- and cross-modality cosine minus the respective threshold.
        cosine: the raw cosine behind ``excess``.
        matched_modality: modality of the prototype behind ``excess``.
        matched_camera_id: camera of that prototype.
    """

    global_id: int
    excess: float
    cosine: float
    matched_modality: Modality
    matched_camera_id: str

    @property
    def eligible(self) -> bool:
        return self.excess >= 0.0


def to_candidate(match: IdentityMatch, modality: Modality, rules: MatchingRules) -> Candidate | None:
    """Score an :class:`IdentityMatch` of a ``modality`` track; None when it has no evidence."""
    same = match.cosine_same - rules.same_threshold(modality)
    cross = match.cosine_cross - rules.cross_threshold
    if math.isinf(same) and math.isinf(cross):
        return None
    if same >= cross:
        return Candidate(match.global_id, same, match.cosine_same, modality, match.camera_same)
    return Candidate(match.global_id, cross, match.cosine_cross, modality.other, match.camera_cross)


def rank_candidates(
    matches: Iterable[IdentityMatch], modality: Modality, rules: MatchingRules, exclude: Iterable[int] = ()
) -> list[Candidate]:
    """Candidates from ``matches`` minus ``exclude``, best excess first (ties: lower global_id)."""
    excluded = set(exclude)
    candidates = [
        c
        for m in matches
        if m.global_id not in excluded and (c := to_candidate(m, modality, rules)) is not None
    ]
    candidates.sort(key=lambda c: (-c.excess, c.global_id))
    return candidates


@dataclass(frozen=True)
class Choice:
    """Outcome of a rule: ``match`` / ``move`` (to ``candidate``), ``new`` / ``split`` (a new
    identity), ``wait`` (ambiguous, decide later) or ``keep`` (no change)."""

    action: Literal["match", "new", "wait", "move", "split", "keep"]
    candidate: Candidate | None = None


def choose_initial(
    candidates: list[Candidate], rules: MatchingRules, ambiguous_evaluations: int = 0, force: bool = False
) -> Choice:
    """Rule 1: the first decision for a track (``candidates`` ranked, exclusions applied).

    Args:
        ambiguous_evaluations: earlier evaluations of this track that were ambiguous.
        force: decide now (the track ended, or a conflict must be resolved): no waiting.
    """
    if not candidates or not candidates[0].eligible:
        return Choice("new")
    best = candidates[0]
    second = candidates[1].excess if len(candidates) > 1 else -math.inf
    if best.excess - second >= rules.margin_min:
        return Choice("match", best)
    if force or ambiguous_evaluations + 1 >= rules.max_ambiguous_sightings:
        return Choice("match", best)
    return Choice("wait")


def choose_revision(current: Candidate | None, others: list[Candidate], rules: MatchingRules) -> Choice:
    """Rule 2: should an assigned track leave its identity (one evaluation, before voting)?

    Args:
        current: the track's identity scored without the track's own evidence; ``None`` when the
            track is its only evidence (then the current excess counts as 0: a fresh identity is
            as good as a borderline match, so moving needs ``revise_margin`` above threshold).
        others: the other candidates, ranked, exclusions applied.
    """
    current_excess = current.excess if current is not None else 0.0
    if others and others[0].eligible:
        best = others[0]
        second = others[1].excess if len(others) > 1 else -math.inf
        if best.excess - second >= rules.margin_min and best.excess - current_excess >= rules.revise_margin:
            return Choice("move", best)
        return Choice("keep")
    if current is not None and current.excess < -rules.revise_margin:
        return Choice("split")
    return Choice("keep")


def lifetimes_overlap(
    first_a: float, last_a: float, first_b: float, last_b: float, min_overlap_s: float
) -> bool:
    """Whether two track lifetimes [first, last] (capture seconds) overlap by >= ``min_overlap_s``."""
    return min(last_a, last_b) - max(first_a, first_b) >= min_overlap_s
