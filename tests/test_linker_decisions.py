"""The linker's decisions end to end on hand-made evidence (edge.linking.linker.IdentityLinker)."""

from __future__ import annotations

import numpy as np
import pytest
from linker_scenes import ENGINE_ID, Appearance, People, basis, feed, scene_messages, sighting_batch

from common.modality import Modality
from edge.linking.assignment import MatchingRules
from edge.linking.events import EngineAdopted, IdentityDecision, IdentityEviction
from edge.linking.gallery import GalleryConfig
from edge.linking.linker import IdentityLinker
from edge.messages import SightingBatch

VIS, IR = Modality.VISIBLE, Modality.INFRARED
D = 8


def make(**rules) -> IdentityLinker:
    defaults = dict(
        min_sightings=1,
        revise_votes=2,
        revise_margin=0.1,
        margin_min=0.05,
        track_idle_s=1.0,
        reevaluate_every_sightings=1,
    )
    gallery = rules.pop("gallery", GalleryConfig())
    return IdentityLinker(MatchingRules(**{**defaults, **rules}), gallery)


def decisions(events) -> list[IdentityDecision]:
    return [e for e in events if isinstance(e, IdentityDecision)]


def seed_identity(linker, camera: str, track: int, vector, ts: float = 0.0, modality=VIS) -> int:
    """A track seen once, then ended by its camera's clock: an identity with one prototype."""
    (d,) = decisions(feed(linker, camera, modality, ts, {track: vector}))
    assert d.event == "new"
    feed(linker, camera, modality, ts + 2.0, {})  # idle > track_idle_s: the track ends
    assert linker.identity_of("node0", camera, track) is None
    return d.global_id


def test_first_batch_adopts_the_engine_and_numbers_start_at_zero():
    linker = make()
    events = feed(linker, "cam0", VIS, 0.0, {1: basis(D, 1.0)})
    assert isinstance(events[0], EngineAdopted) and events[0].engine_id == ENGINE_ID and events[0].dim == D
    (d,) = decisions(events)
    assert (d.event, d.global_id, d.score, d.matched_modality) == ("new", 0, 1.0, None)
    assert [e.seq for e in events] == [1, 2]


@pytest.mark.parametrize(
    ("cosine", "modality", "expected"),
    [
        (0.55, VIS, "matched"),  # same modality, above cosine_min_same 0.5
        (0.45, VIS, "new"),  # same modality, below
        (0.35, IR, "matched"),  # cross modality, above cosine_min_cross 0.3
        (0.25, IR, "new"),  # cross modality, below
    ],
)
def test_same_and_cross_modality_thresholds(cosine, modality, expected):
    linker = make(cosine_min_same=0.5, cosine_min_cross=0.3)
    gid = seed_identity(linker, "cam0", 1, basis(D, 1.0))
    (d,) = decisions(feed(linker, "cam1", modality, 5.0, {7: basis(D, cosine)}))
    assert d.event == expected
    if expected == "matched":
        assert d.global_id == gid
        assert d.score == pytest.approx(cosine, abs=1e-5)
        assert d.matched_modality is VIS and d.matched_camera_id == "cam0"
    else:
        assert d.global_id == gid + 1


def test_margin_makes_an_ambiguous_track_wait_then_take_the_best():
    linker = make(max_ambiguous_sightings=3)
    a = seed_identity(linker, "cam0", 1, basis(D, 1.0))
    seed_identity(linker, "cam0", 2, basis(D, 0.0, 1.0), ts=3.0)
    close_call = basis(D, 0.62, 0.60)  # excesses 0.12 and 0.10: margin 0.02 < 0.05
    assert decisions(feed(linker, "cam1", VIS, 10.0, {5: close_call})) == []
    assert decisions(feed(linker, "cam1", VIS, 10.1, {5: close_call})) == []
    (d,) = decisions(feed(linker, "cam1", VIS, 10.2, {5: close_call}))
    assert (d.event, d.global_id) == ("matched", a)
    assert linker.counters.ambiguous_waits == 2
    clear = basis(D, 0.70, 0.55)  # margin 0.15: decided at once
    (d,) = decisions(feed(linker, "cam2", VIS, 11.0, {6: clear}))
    assert (d.event, d.global_id) == ("matched", a)


def test_min_sightings_delays_the_first_decision():
    linker = make(min_sightings=3)
    v = basis(D, 1.0)
    assert decisions(feed(linker, "cam0", VIS, 0.0, {1: v})) == []
    assert decisions(feed(linker, "cam0", VIS, 0.1, {1: v})) == []
    assert len(decisions(feed(linker, "cam0", VIS, 0.2, {1: v}))) == 1
    # A track that ends with fewer sightings is dropped, not given an identity.
    feed(linker, "cam1", VIS, 0.0, {9: v})
    feed(linker, "cam1", VIS, 5.0, {})
    assert linker.counters.short_tracks_dropped == 1


def test_revision_when_evidence_accumulates_is_published_with_the_previous_id():
    linker = make()
    a = seed_identity(linker, "cam0", 1, basis(D, 1.0))
    # Early, the track's mean is unlike anyone (new identity); as it accumulates it becomes A.
    (first,) = decisions(feed(linker, "cam1", IR, 5.0, {3: basis(D, 0.1)}))
    assert first.event == "new" and first.global_id == a + 1
    assert decisions(feed(linker, "cam1", IR, 5.1, {3: basis(D, 0.45)})) == []  # vote 1 of 2
    (revised,) = decisions(feed(linker, "cam1", IR, 5.2, {3: basis(D, 0.5)}))
    assert (revised.event, revised.global_id, revised.previous_global_id) == ("revised", a, a + 1)
    assert revised.matched_modality is VIS and revised.score == pytest.approx(0.5, abs=1e-5)
    assert a + 1 not in linker.gallery.identities  # its only evidence moved: the number retires
    assert linker.counters.identities_retired == 1
    (later,) = decisions(feed(linker, "cam2", VIS, 9.0, {4: basis(D, 0.0, 1.0)}))
    assert later.global_id == a + 2  # numbers are never reused


def test_identity_is_sticky_against_small_or_flickering_evidence():
    linker = make()
    a = seed_identity(linker, "cam0", 1, basis(D, 1.0))
    b = seed_identity(linker, "cam0", 2, basis(D, 0.0, 1.0), ts=3.0)
    (d,) = decisions(feed(linker, "cam1", VIS, 10.0, {5: basis(D, 0.8, 0.3)}))
    assert d.global_id == a
    # Now slightly closer to B, but by less than revise_margin: kept.
    for k in range(5):
        assert decisions(feed(linker, "cam1", VIS, 10.1 + 0.1 * k, {5: basis(D, 0.6, 0.65)})) == []
    # Clearly B, but only every other evaluation: the votes never reach 2 in a row.
    for k in range(6):
        v = basis(D, 0.2, 0.9) if k % 2 == 0 else basis(D, 0.8, 0.3)
        assert decisions(feed(linker, "cam1", VIS, 11.0 + 0.1 * k, {5: v})) == []
    assert linker.identity_of("node0", "cam1", 5) == a
    # Clearly B twice in a row: revised.
    feed(linker, "cam1", VIS, 12.0, {5: basis(D, 0.2, 0.9)})
    (d,) = decisions(feed(linker, "cam1", VIS, 12.1, {5: basis(D, 0.2, 0.9)}))
    assert (d.event, d.global_id, d.previous_global_id) == ("revised", b, a)


def test_split_into_a_new_identity_when_evidence_clearly_leaves():
    linker = make()
    a = seed_identity(linker, "cam0", 1, basis(D, 1.0))
    (d,) = decisions(feed(linker, "cam1", VIS, 5.0, {2: basis(D, 0.7)}))
    assert d.global_id == a
    feed(linker, "cam1", VIS, 5.1, {2: basis(D, 0.3)})  # excess -0.2 < -0.1: vote 1
    (d,) = decisions(feed(linker, "cam1", VIS, 5.2, {2: basis(D, 0.3)}))
    assert (d.event, d.previous_global_id, d.global_id) == ("revised", a, a + 1)
    assert a in linker.gallery.identities  # A keeps its other evidence


def test_two_tracks_seen_at_once_by_one_camera_are_two_people():
    linker = make()
    v, w = basis(D, 1.0), basis(D, 0.9)  # cosine 0.9: alike enough to be one person
    events = decisions(feed(linker, "cam0", VIS, 0.0, {1: v, 2: w}))  # but seen in one frame
    assert [e.event for e in events] == ["new", "new"]
    assert events[0].global_id != events[1].global_id
    # Another camera at the same time may see the same person (excess 0.5 vs 0.4: clear).
    (d,) = decisions(feed(linker, "cam1", VIS, 0.0, {1: v}))
    assert d.event == "matched"
    # Once track 1 of cam0 has ended (no overlap), a later cam0 track may be the same person.
    feed(linker, "cam0", VIS, 0.5, {2: w})
    feed(linker, "cam0", VIS, 2.0, {2: w})  # track 1 idle for 2 s: ended
    assert linker.identity_of("node0", "cam0", 1) is None
    (d,) = decisions(feed(linker, "cam0", VIS, 2.1, {3: v}))
    assert d.global_id == events[0].global_id  # track 2 (still live) holds the other one


def test_conflict_found_after_both_were_assigned_revises_the_later_track():
    linker = make(track_idle_s=3.0)
    v = basis(D, 1.0)
    (first,) = decisions(feed(linker, "cam0", VIS, 0.0, {1: v}))
    # Track 2 appears right after track 1's last sighting (a tracker switch?): no overlap yet.
    (second,) = decisions(feed(linker, "cam0", VIS, 0.5, {2: v}))
    assert second.global_id == first.global_id
    # Track 1 shows up again while track 2 is live: they overlap, so they are two people.
    events = decisions(feed(linker, "cam0", VIS, 0.6, {1: v, 2: v}))
    assert [(e.track_id, e.event, e.previous_global_id) for e in events] == [(2, "revised", first.global_id)]
    assert linker.identity_of("node0", "cam0", 1) == first.global_id
    assert linker.identity_of("node0", "cam0", 2) != first.global_id
    assert linker.counters.conflicts_resolved == 1


def test_ttl_evicts_identities_not_seen_for_ttl_s():
    linker = make(gallery=GalleryConfig(ttl_s=10.0), track_idle_s=1.0)
    a = seed_identity(linker, "cam0", 1, basis(D, 1.0))
    b = seed_identity(linker, "cam1", 1, basis(D, 0.0, 1.0), ts=6.0)
    events = feed(linker, "cam0", VIS, 10.5, {})
    evictions = [e for e in events if isinstance(e, IdentityEviction)]
    assert [(e.global_ids, e.reason) for e in evictions] == [((a,), "ttl")]
    assert a not in linker.gallery.identities and b in linker.gallery.identities
    # An identity with a live track is kept however old its creation.
    (d,) = decisions(feed(linker, "cam2", VIS, 11.0, {4: basis(D, 0.0, 0.0, 1.0)}))
    for k in range(1, 30):
        feed(linker, "cam2", VIS, 11.0 + k * 0.5, {4: basis(D, 0.0, 0.0, 1.0)})
    assert d.global_id in linker.gallery.identities and b not in linker.gallery.identities
    assert linker.counters.evicted_ttl == 2


def test_capacity_bound_evicts_the_least_recently_seen_and_refuses_when_all_are_live():
    linker = make(gallery=GalleryConfig(max_identities=2))
    a = seed_identity(linker, "cam0", 1, basis(D, 1.0), ts=0.0)
    b = seed_identity(linker, "cam0", 2, basis(D, 0.0, 1.0), ts=3.0)
    events = feed(linker, "cam1", VIS, 6.0, {1: basis(D, 0.0, 0.0, 1.0)})
    (eviction,) = [e for e in events if isinstance(e, IdentityEviction)]
    assert (eviction.global_ids, eviction.reason) == ((a,), "capacity")
    assert sorted(linker.gallery.identities) == [b, b + 1]
    # Both remaining identities now have live tracks: a third person cannot get one.
    feed(linker, "cam2", VIS, 6.1, {1: basis(D, 0.0, 1.0)})
    assert linker.identity_of("node0", "cam2", 1) == b
    assert decisions(feed(linker, "cam3", VIS, 6.2, {1: basis(D, 0.0, 0.0, 0.0, 1.0)})) == []
    assert linker.counters.refused_capacity == 1 and len(linker.gallery.identities) == 2


def test_memory_bound_keeps_vector_storage_under_max_memory_mb():
    budget_vectors, dim = 6, 32
    gallery = GalleryConfig(max_memory_mb=budget_vectors * dim * 4 / 2**20)
    linker = make(gallery=gallery, track_idle_s=0.5)
    for t in range(20):
        modality = VIS if t % 3 else IR  # both stores share the budget
        feed(linker, "cam0", modality, float(t), {t: basis(dim, *([0.0] * t), 1.0)})  # 20 orthogonal people
        assert linker.gallery.nbytes <= budget_vectors * dim * 4
    assert linker.counters.decisions_new == 20
    assert len(linker.gallery.identities) == budget_vectors
    assert linker.counters.evicted_capacity == 20 - budget_vectors
    assert sorted(linker.gallery.identities) == list(range(14, 20))  # the most recently seen stay


def test_foreign_engine_and_wrong_dim_batches_are_refused_and_counted():
    linker = make(gallery=GalleryConfig(engine_id=ENGINE_ID))
    v = basis(D, 1.0)
    assert feed(linker, "cam0", VIS, 0.0, {1: v}, engine_id="ffffffffffffffff") == []
    assert linker.counters.foreign_engine_batches == 1 and linker.gallery is None
    assert decisions(feed(linker, "cam0", VIS, 0.1, {1: v}))
    batch, rows = sighting_batch(
        "cam0", VIS, 2, 0.2, [1], np.ones((1, 2 * D), np.float32) / 4, dtype="float32"
    )
    assert linker.observe(batch, rows) == []
    assert linker.counters.wrong_dim_batches == 1
    batch, rows = sighting_batch("cam0", VIS, 3, 0.3, [1], v[None], engine_id="", dtype="float32")
    assert linker.observe(batch, rows) == []  # embeddings that do not say their engine
    assert linker.counters.foreign_engine_batches == 2
    bad = np.full((1, D), np.nan, np.float32)
    batch, rows = sighting_batch("cam0", VIS, 4, 0.4, [1], bad, dtype="float32")
    linker.observe(batch, rows)
    assert linker.counters.bad_embeddings == 1


def test_adopted_engine_refuses_another_one_afterwards():
    linker = make()
    feed(linker, "cam0", VIS, 0.0, {1: basis(D, 1.0)}, engine_id="aaaaaaaaaaaaaaaa")
    assert feed(linker, "cam1", VIS, 0.0, {1: basis(D, 1.0)}, engine_id="bbbbbbbbbbbbbbbb") == []
    assert linker.counters.foreign_engine_batches == 1 and linker.engine_id == "aaaaaaaaaaaaaaaa"


def test_synthetic_scene_links_visible_and_infrared_tracks_of_each_person():
    people = People(8, seed=3)
    appearances = []
    for p in range(8):
        appearances.append(Appearance(p, "rgb0", VIS, 10 + p, 0.7 * p, 2.0))
        appearances.append(Appearance(p, "ir0", IR, 50 + p, 0.7 * p + 2.5, 2.0))
    linker = IdentityLinker(MatchingRules(), GalleryConfig())
    final: dict[tuple[str, int], int] = {}
    for message, rows in scene_messages(people, appearances):
        if isinstance(message, SightingBatch):
            events = linker.observe(message, rows)
        else:
            events = linker.end_camera(message.producer_id, message.camera_id)
        for d in decisions(events):
            final[(d.camera_id, d.track_id)] = d.global_id
    for p in range(8):
        assert final[("rgb0", 10 + p)] == final[("ir0", 50 + p)]
    assert len({final[("rgb0", 10 + p)] for p in range(8)}) == 8
    assert linker.tracks == {}  # every camera ended
