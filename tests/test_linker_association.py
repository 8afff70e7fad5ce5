"""Association that does not over-merge: camera topology, joint one-to-one first decisions,
identity hygiene and the final offline pass (edge.linking.topology / clustering / linker)."""

from __future__ import annotations

import numpy as np
import pytest
from linker_scenes import basis, feed

from common.modality import Modality
from edge.linking.assignment import MatchingRules
from edge.linking.clustering import ClusterTrack, assign_identities, cluster_tracks
from edge.linking.events import IdentityDecision
from edge.linking.gallery import GalleryConfig
from edge.linking.linker import HygieneSettings, IdentityLinker
from edge.linking.topology import CameraPlace, Topology, TopologyConfig, TransitRule

VIS, IR = Modality.VISIBLE, Modality.INFRARED
D = 8


def make(topology: Topology | None = None, hygiene_s: float = 0.0, **rules) -> IdentityLinker:
    defaults = dict(min_sightings=1, margin_min=0.05, track_idle_s=1.0, reevaluate_every_sightings=100)
    linker = IdentityLinker(MatchingRules(**{**defaults, **rules}), GalleryConfig())
    linker.configure(topology or Topology(), HygieneSettings(interval_s=hygiene_s))
    return linker


def decisions(events) -> list[IdentityDecision]:
    return [e for e in events if isinstance(e, IdentityDecision)]


TOPOLOGY = Topology(
    TopologyConfig(
        cameras={
            "lobby-rgb": CameraPlace("lobby", "door"),
            "lobby-ir": CameraPlace("lobby", "door"),
            "lobby-hall": CameraPlace("lobby"),
            "lot": CameraPlace("parking"),
            "roof": CameraPlace("roof"),
        },
        transit=[TransitRule("lobby", "parking", 30.0)],
    )
)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (("lobby-rgb", 0, 5), ("lobby-ir", 2, 8), True),  # one overlap group: at the same time
        (("lobby-rgb", 0, 5), ("lobby-hall", 4, 9), False),  # one site, other place, same time
        (("lobby-rgb", 0, 5), ("lobby-hall", 6, 9), True),  # ... one after the other
        (("lobby-rgb", 0, 5), ("lot", 20, 30), False),  # other site, faster than the transit
        (("lot", 0, 5), ("lobby-ir", 40, 50), True),  # transit rules hold both ways
        (("lobby-rgb", 0, 5), ("roof", 500, 600), False),  # no transit rule: never
        (("lobby-rgb", 0, 5), ("unlisted", 100, 110), False),  # unlisted: site "", no transit
        (("lot", 0, 5), ("lot", 1, 2), True),  # one camera: the co-occurrence rule's business
    ],
)
def test_topology_table(a, b, expected):
    assert TOPOLOGY.compatible(*a, *b) is expected
    assert TOPOLOGY.compatible(*b, *a) is expected


def test_no_topology_constrains_nothing():
    assert Topology().compatible("a", 0, 10, "b", 0, 10) and not Topology().constrained


def test_cameras_of_different_sites_never_share_an_identity_unless_transit_allows():
    e = basis(D, 1.0)
    linker = make(TOPOLOGY)
    (first,) = decisions(feed(linker, "lobby-rgb", VIS, 0.0, {1: e}))
    feed(linker, "lobby-rgb", VIS, 2.0, {})  # the track ends at 0 s
    # The same look at the roof, much later: no transit rule -> a new identity.
    (roof,) = decisions(feed(linker, "roof", VIS, 100.0, {7: e}))
    assert roof.event == "new" and roof.global_id != first.global_id
    # At the parking lot 10 s after the lobby: faster than the 30 s transit -> new.
    (early,) = decisions(feed(linker, "lot", VIS, 10.0, {8: e}, seq=0))
    assert early.global_id not in (first.global_id,)
    assert linker.counters.topology_exclusions >= 2


def test_a_person_may_be_in_two_cameras_of_one_place_but_not_of_two_places_at_once():
    e = basis(D, 1.0)
    linker = make(TOPOLOGY)
    (rgb,) = decisions(feed(linker, "lobby-rgb", VIS, 0.0, {1: e}))
    (ir,) = decisions(feed(linker, "lobby-ir", IR, 0.0, {2: e}))  # co-located: the same person
    assert ir.event == "matched" and ir.global_id == rgb.global_id
    (hall,) = decisions(feed(linker, "lobby-hall", VIS, 0.0, {3: e}))  # elsewhere at that instant
    assert hall.event == "new" and hall.global_id != rgb.global_id


def test_tracks_pending_at_once_are_assigned_one_to_one_by_total_excess():
    """Track 1 likes X a little more than Y; track 2 is X. One after another, track 1 takes X and
    track 2 becomes new; jointly, 2 takes X and 1 takes Y."""
    x, y = basis(D, 1.0), basis(D, 0.0, 1.0)
    results = {}
    for joint in (False, True):
        linker = make(joint_assignment=joint, cosine_min_same=0.5)
        (dx,) = decisions(feed(linker, "cam0", VIS, 0.0, {1: x}))
        (dy,) = decisions(feed(linker, "cam0", VIS, 0.0, {2: y}, seq=1))
        feed(linker, "cam0", VIS, 2.0, {}, seq=2)  # both end
        a = basis(D, 0.72, 0.62)  # cos 0.72 with x, 0.62 with y: excess 0.22 vs 0.12
        b = basis(D, 0.95, 0.1)
        got = {d.track_id: d.global_id for d in decisions(feed(linker, "cam1", VIS, 5.0, {11: a, 12: b}))}
        results[joint] = (got[11], got[12], dx.global_id, dy.global_id)
    g11, g12, gx, gy = results[False]
    assert g11 == gx and g12 not in (gx, gy)
    j11, j12, gx, gy = results[True]
    assert (j11, j12) == (gy, gx)


def test_final_pass_joins_what_the_online_linker_kept_apart_and_respects_cannot_link():
    """Online: one person's visible and infrared tracks are two identities (the cross-modality cosine
    is under the threshold until later evidence); two people seen at once by one camera stay two."""
    linker = make(cosine_min_same=0.6, cosine_min_cross=0.6)
    p, q = basis(D, 1.0), basis(D, 0.0, 1.0)
    feed(linker, "rgb", VIS, 0.0, {1: p, 2: q})  # two people at once
    feed(linker, "rgb", VIS, 2.0, {})
    ir_p = basis(D, 0.55, 0.0, 0.6)  # 0.55 < 0.6 with p: a new identity online
    feed(linker, "ir", IR, 10.0, {5: ir_p})
    feed(linker, "ir", IR, 12.0, {})
    ir_p2 = basis(D, 0.75, 0.0, 0.6)  # a second infrared track of p, clearly p
    online = {
        (d.camera_id, d.track_id): d.global_id for d in decisions(feed(linker, "ir", IR, 20.0, {6: ir_p2}))
    }
    for camera in ("rgb", "ir"):
        linker.end_camera("node0", camera)
    before = {k: linker.history[k].global_id for k in linker.history}
    final = decisions(linker.final_pass(margin=-0.2))
    assert final and all(d.final and d.event == "revised" for d in final)
    after = {k: linker.history[k].global_id for k in linker.history}
    assert after[("node0", "ir", 5)] == after[("node0", "ir", 6)] == after[("node0", "rgb", 1)]
    assert after[("node0", "rgb", 1)] != after[("node0", "rgb", 2)]  # cannot-link: seen together
    assert online and before != after
    assert linker.final_pass(margin=-0.2) == []  # a second pass changes nothing


def test_cluster_tracks_is_average_linkage_under_cannot_link():
    rng = np.random.default_rng(0)
    centres = np.eye(D)[:3]
    tracks = []
    for person in range(3):
        for k in range(4):
            v = centres[person] + 0.1 * rng.standard_normal(D)
            tracks.append(
                ClusterTrack(
                    ("n", f"cam{k}", person),
                    f"cam{k}",
                    VIS,
                    10.0 * person,
                    10.0 * person + 1,
                    v / np.linalg.norm(v),
                )
            )
    clusters = cluster_tracks(tracks, lambda a, b: 0.5, lambda a, b: False)
    assert sorted(len(c) for c in clusters) == [4, 4, 4]
    assert all(len({tracks[i].key[2] for i in c}) == 1 for c in clusters)
    # Person 0 and 1 forbidden from each other whatever the vectors say; all-merging threshold.
    forbid = lambda a, b: {a.key[2], b.key[2]} == {0, 1}  # noqa: E731
    clusters = cluster_tracks(tracks, lambda a, b: -1.0, forbid)
    assert all(not ({0, 1} <= {tracks[i].key[2] for i in c}) for c in clusters)
    assert cluster_tracks(tracks, lambda a, b: 0.5, lambda a, b: False) == clusters_again(tracks)


def clusters_again(tracks):
    return cluster_tracks(list(tracks), lambda a, b: 0.5, lambda a, b: False)


def test_an_identity_number_stays_with_the_cluster_of_its_earliest_track():
    v = basis(D, 1.0)
    spec = [(5, 7, 0.0), (1, 3, 1.0), (2, 7, 5.0), (4, None, 2.0), (1, 3, 0.5)]
    tracks = [
        ClusterTrack(("n", "c", i), "c", VIS, t, t + 1, v, weight=w, global_id=g)
        for i, (w, g, t) in enumerate(spec)
    ]
    ids, next_id = assign_identities(tracks, [[0, 1], [2], [3], [4]], next_id=10)
    # 7 stays with the cluster of its earliest track; [2] held 7 later: a new number; [4] holds 3
    # earliest (0.5 s) and keeps it, so cluster [0, 1] keeps 7 only.
    assert ids == [7, 10, 11, 3] and next_id == 12


def test_hygiene_splits_a_live_track_that_clearly_left_its_identity():
    linker = make(hygiene_s=10.0, cosine_min_same=0.5, reevaluate_every_sightings=1000)
    p = basis(D, 1.0)
    (d1,) = decisions(feed(linker, "cam0", VIS, 0.0, {1: p}))
    feed(linker, "cam0", VIS, 2.0, {})
    (d2,) = decisions(feed(linker, "cam1", VIS, 3.0, {2: basis(D, 0.7, 0.71)}, seq=0))
    assert d2.global_id == d1.global_id  # matched at first sight
    # Its later crops are someone else: the quality-weighted mean drifts away from p.
    events = []
    for k in range(1, 40):
        events += feed(linker, "cam1", VIS, 3.0 + 0.5 * k, {2: basis(D, 0.0, 1.0)}, seq=k)
    assert linker.counters.hygiene_passes >= 1
    split = [d for d in decisions(events) if d.event == "revised"]
    assert split and split[-1].previous_global_id == d1.global_id and split[-1].global_id != d1.global_id
