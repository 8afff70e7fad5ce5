"""Cross-camera identity scoring (IDF1, cross-modality link precision/recall) on hand-made runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA

from edge.evaluation.scoring import Sighting, read_mot_ground_truth, read_sightings, score_linking

A, B, C, FAR = (0, 0, 10, 20), (50, 0, 60, 20), (5, 5, 15, 25), (200, 200, 210, 220)


def _truth():
    return {
        "rgb": {0: (np.array([1, 2]), np.array([A, B], np.float32))},
        "ir": {0: (np.array([1]), np.array([C], np.float32)), 2: (np.array([1]), np.array([C], np.float32))},
    }


def _sightings(with_later_ir: bool = False):
    rows = [
        Sighting("n", "rgb", "visible", 0, 1, A),
        Sighting("n", "rgb", "visible", 0, 2, B),
        Sighting("n", "rgb", "visible", 0, 3, FAR),  # a false detection
        Sighting("n", "ir", "infrared", 0, 1, C),
    ]
    if with_later_ir:
        rows.append(Sighting("n", "ir", "infrared", 2, 1, C))
    return rows


def _update(seq, camera, track, gid, frame=0):
    return {
        "journal_seq": seq,
        "source_producer_id": "n",
        "camera_id": camera,
        "track_id": track,
        "global_id": gid,
        "frame_index": frame,
    }


def test_correct_cross_modal_link():
    truth = {"rgb": _truth()["rgb"], "ir": {0: _truth()["ir"][0]}}
    updates = [
        _update(1, "rgb", 1, 10),
        _update(2, "rgb", 2, 11),
        _update(3, "ir", 1, 10),
        _update(4, "rgb", 3, 12),
    ]
    score = score_linking(_sightings(), updates, truth)
    assert score.idf1_final == pytest.approx(2 * 3 / (3 + 4))  # IDTP 3, 3 true boxes, 4 sightings
    assert score.idf1_online == score.idf1_final
    assert (score.cross_modal_precision, score.cross_modal_recall) == (1.0, 1.0)
    assert (score.cross_modal_pairs_linked, score.cross_modal_pairs_true) == (1, 1)
    assert score.people_in_ground_truth == 2 and score.people_in_both_modalities == 1
    assert score.people_linked_across_modalities == 1
    assert score.identities_published == 3 and score.identities_in_both_modalities == 1
    assert score.detection_recall == 1.0 and score.detection_precision == pytest.approx(3 / 4)


def test_a_wrong_revision_costs_final_but_not_online_idf1():
    updates = [
        _update(1, "rgb", 1, 10),
        _update(2, "rgb", 2, 11),
        _update(3, "ir", 1, 10),
        _update(4, "rgb", 3, 12),
        _update(5, "ir", 1, 11, frame=2),  # revised to the wrong person at frame 2
    ]
    score = score_linking(_sightings(with_later_ir=True), updates, _truth())
    assert score.idf1_online == pytest.approx(2 * 3 / (4 + 5))
    assert score.idf1_final == pytest.approx(2 * 2 / (4 + 5))
    assert score.cross_modal_precision == 0.0 and score.cross_modal_recall == 0.0
    assert score.people_linked_across_modalities == 0


def test_sightings_without_identity_count_against_idf1():
    score = score_linking(
        _sightings(), [_update(1, "rgb", 1, 10)], {"rgb": _truth()["rgb"], "ir": {0: _truth()["ir"][0]}}
    )
    assert score.sightings_with_identity == 1
    assert score.idf1_final == pytest.approx(2 * 1 / (3 + 4))


def test_files_round_trip(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,0,0,10,20,1,1,1.0\n3,2,5,5,10,20,1,1,0.5\n")
    truth = read_mot_ground_truth(gt)
    assert sorted(truth) == [0, 2]
    np.testing.assert_allclose(truth[2][1], [[5, 5, 15, 25]])
    log = tmp_path / "s.jsonl"
    record = {
        "producer_id": "n",
        "camera_id": "rgb",
        "modality": "visible",
        "frame_index": 4,
        "sightings": [{"track_id": 7, "box": [1, 2, 3, 4]}],
    }
    log.write_text(json.dumps(record) + "\n" + '{"torn')
    assert read_sightings([log]) == [Sighting("n", "rgb", "visible", 4, 7, (1.0, 2.0, 3.0, 4.0))]


def test_ground_truth_keeps_only_considered_pedestrians_as_motchallenge_does(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text(
        "1,1,0,0,10,20,1,1,1.0\n"  # pedestrian
        "1,2,0,0,10,20,0,1,1.0\n"  # pedestrian, not considered
        "1,3,0,0,10,20,1,2,1.0\n"  # person on vehicle
        "1,4,0,0,10,20,0,7,1.0\n"  # static person
        "2,5,0,0,10,20,1,1,0.1\n"  # pedestrian, barely visible: still evaluated
    )
    truth = read_mot_ground_truth(gt)
    assert {f: ids.tolist() for f, (ids, _) in truth.items()} == {0: [1], 1: [5]}


def test_real_mot17_ground_truth_counts_the_pedestrians_only():
    root = SHARED_DATA / "real" / "mot17"
    if not root.is_dir():
        pytest.skip("../shared/data/real/mot17 is not here")
    for sequence in sorted(root.iterdir()):
        raw = np.loadtxt(sequence / "gt" / "gt.txt", delimiter=",", ndmin=2)
        truth = read_mot_ground_truth(sequence / "gt" / "gt.txt")
        people = {int(i) for ids, _ in truth.values() for i in ids}
        expected = {int(r[1]) for r in raw if r[6] == 1 and r[7] == 1}
        assert people == expected and len(people) < len({int(r[1]) for r in raw})
