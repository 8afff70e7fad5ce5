"""Table-driven tests of the linker's pure decision rules (edge.linking.assignment)."""

from __future__ import annotations

import math

import pytest

from common.modality import Modality
from edge.linking.assignment import (
    Candidate,
    MatchingRules,
    choose_initial,
    choose_revision,
    lifetimes_overlap,
    rank_candidates,
    to_candidate,
)
from edge.linking.gallery import IdentityMatch

VIS, IR = Modality.VISIBLE, Modality.INFRARED
RULES = MatchingRules(cosine_min_same=0.5, cosine_min_cross=0.3, margin_min=0.05, revise_margin=0.1)


def cand(gid: int, excess: float) -> Candidate:
    return Candidate(gid, excess, 0.5 + excess, VIS, "cam")


@pytest.mark.parametrize(
    ("match", "expected_excess", "expected_modality"),
    [
        (IdentityMatch(1, cosine_same=0.62, camera_same="a"), 0.12, VIS),
        (IdentityMatch(1, cosine_cross=0.42, camera_cross="b"), 0.12, IR),
        # cross 0.40 -> excess 0.10 beats same 0.55 -> excess 0.05
        (IdentityMatch(1, 0.55, "a", 0.40, "b"), 0.10, IR),
        (IdentityMatch(1, 0.70, "a", 0.40, "b"), 0.20, VIS),
        (IdentityMatch(1, cosine_same=0.2, camera_same="a"), -0.3, VIS),
    ],
)
def test_candidate_uses_the_threshold_of_the_matched_modality(match, expected_excess, expected_modality):
    c = to_candidate(match, VIS, RULES)
    assert c is not None
    assert c.excess == pytest.approx(expected_excess)
    assert c.matched_modality is expected_modality
    assert c.cosine == pytest.approx(expected_excess + (0.5 if expected_modality is VIS else 0.3))
    assert c.matched_camera_id == ("a" if expected_modality is VIS else "b")


def test_candidate_without_evidence_is_none():
    assert to_candidate(IdentityMatch(3), VIS, RULES) is None


def test_rank_candidates_sorts_by_excess_then_id_and_excludes():
    matches = [IdentityMatch(5, 0.6), IdentityMatch(2, 0.7), IdentityMatch(9, 0.7), IdentityMatch(4, 0.9)]
    ranked = rank_candidates(matches, VIS, RULES, exclude={4})
    assert [c.global_id for c in ranked] == [2, 9, 5]


@pytest.mark.parametrize(
    ("candidates", "ambiguous", "force", "action", "gid"),
    [
        ([], 0, False, "new", None),
        ([cand(1, -0.01)], 0, False, "new", None),  # just below the threshold
        ([cand(1, 0.0)], 0, False, "match", 1),  # exactly at the threshold is eligible
        ([cand(1, 0.10), cand(2, 0.05)], 0, False, "match", 1),  # margin exactly 0.05
        ([cand(1, 0.10), cand(2, 0.06)], 0, False, "wait", None),  # margin 0.04 < 0.05
        ([cand(1, 0.10), cand(2, 0.06)], 8, False, "wait", None),
        ([cand(1, 0.10), cand(2, 0.06)], 9, False, "match", 1),  # patience (10 evaluations) used up
        ([cand(1, 0.10), cand(2, 0.06)], 0, True, "match", 1),  # forced: no waiting
        ([cand(1, 0.02), cand(2, -0.5)], 0, False, "match", 1),  # second far below: clear
    ],
)
def test_choose_initial(candidates, ambiguous, force, action, gid):
    choice = choose_initial(candidates, RULES, ambiguous, force=force)
    assert choice.action == action
    assert (choice.candidate.global_id if choice.candidate else None) == gid


@pytest.mark.parametrize(
    ("current", "others", "action", "gid"),
    [
        (cand(1, 0.2), [], "keep", None),
        (cand(1, 0.2), [cand(2, 0.25)], "keep", None),  # better, but by less than revise_margin
        (cand(1, 0.2), [cand(2, 0.31)], "move", 2),  # better by 0.11 >= 0.1
        (cand(1, 0.2), [cand(2, 0.31), cand(3, 0.29)], "keep", None),  # ambiguous between 2 and 3
        (None, [cand(2, 0.05)], "keep", None),  # own identity counts as excess 0: needs 0.1
        (None, [cand(2, 0.12)], "move", 2),
        (None, [], "keep", None),  # a track that is its identity's only evidence never splits
        (cand(1, -0.05), [], "keep", None),  # a little below: sticky
        (cand(1, -0.11), [], "split", None),  # clearly below and nothing else fits
        (cand(1, -0.05), [cand(2, 0.01)], "keep", None),  # eligible elsewhere, but not clearly better
        (cand(1, -0.11), [cand(2, 0.01)], "move", 2),  # 0.12 better than the current identity
        (cand(1, -0.11), [cand(2, 0.2)], "move", 2),
    ],
)
def test_choose_revision(current, others, action, gid):
    choice = choose_revision(current, others, RULES)
    assert choice.action == action
    assert (choice.candidate.global_id if choice.candidate else None) == gid


@pytest.mark.parametrize(
    ("a", "b", "min_overlap", "expected"),
    [
        ((0.0, 1.0), (1.0, 2.0), 0.0, True),  # share the instant 1.0 (one frame)
        ((0.0, 1.0), (1.1, 2.0), 0.0, False),
        ((0.0, 1.0), (0.5, 0.6), 0.0, True),
        ((0.0, 1.0), (0.9, 2.0), 0.2, False),  # overlap 0.1 < 0.2
        ((0.0, 1.0), (0.7, 2.0), 0.2, True),
    ],
)
def test_lifetimes_overlap(a, b, min_overlap, expected):
    assert lifetimes_overlap(*a, *b, min_overlap) is expected
    assert lifetimes_overlap(*b, *a, min_overlap) is expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cosine_min_same": 0.0},
        {"cosine_min_cross": 1.5},
        {"margin_min": -0.1},
        {"revise_votes": 0},
        {"min_sightings": 0},
        {"track_idle_s": 0.0},
    ],
)
def test_rules_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match="matching\\."):
        MatchingRules(**kwargs)


def test_infinite_cosines_mean_no_evidence_of_that_modality():
    c = to_candidate(IdentityMatch(1, cosine_cross=0.5), VIS, RULES)
    assert c is not None and c.matched_modality is IR and not math.isinf(c.excess)
