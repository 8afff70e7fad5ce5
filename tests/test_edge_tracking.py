"""Per-camera tracking, the crop gate and per-track embedding aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from edge.aggregation import TrackEmbeddings
from edge.crops import CropGate, cut_crops
from edge.detect import Detections
from edge.tracking import CameraTracker, TrackerSettings


def _walk(t: int, offset: float = 0.0) -> Detections:
    """Two people walking towards each other (no crossing within 8 steps)."""
    return Detections(
        [[10 + 6 * t + offset, 20, 40 + 6 * t + offset, 100], [250 - 6 * t, 30, 280 - 6 * t, 110]], [0.9, 0.8]
    )


@pytest.mark.parametrize("kind", ["bytetrack", "botsort"])
def test_tracks_keep_their_ids_and_boxes_are_the_detections(kind: str) -> None:
    pytest.importorskip("ultralytics")
    tracker = CameraTracker(TrackerSettings(kind=kind), frame_rate=10)
    image = np.zeros((240, 320, 3), np.uint8)
    for t in range(8):
        out = tracker(_walk(t), image)
        assert out.track_ids.tolist() == [1, 2]
        np.testing.assert_array_equal(out.xyxy, _walk(t).xyxy)  # detector boxes, not Kalman boxes


def test_camera_trackers_number_ids_independently_and_deterministically() -> None:
    pytest.importorskip("ultralytics")
    settings = TrackerSettings()
    alone = CameraTracker(settings, 10)
    solo_ids = [alone(_walk(t)).track_ids.tolist() for t in range(6)]
    # Interleave three trackers (as a node with three cameras does): each numbers its own tracks
    # from 1, whatever the others did before -- the library's id counter does not leak across.
    a, b, c = (CameraTracker(settings, 10) for _ in range(3))
    for t in range(3):
        b(_walk(t, offset=3.0))
        c(_walk(t))
    ids_a = [a(_walk(t)).track_ids.tolist() for t in range(6)]
    assert ids_a == solo_ids == [[1, 2]] * 6


def test_a_new_person_gets_the_next_id_and_a_lost_one_expires() -> None:
    pytest.importorskip("ultralytics")
    tracker = CameraTracker(TrackerSettings(max_age_s=0.3), frame_rate=10)  # 3 frames
    tracker(_walk(0))
    tracker(_walk(1))
    late = Detections([*_walk(2).xyxy, [150, 150, 170, 220]], [0.9, 0.8, 0.9])
    tracker(late)
    out = tracker(Detections([*_walk(3).xyxy, [151, 150, 171, 220]], [0.9, 0.8, 0.9]))
    assert sorted(out.track_ids.tolist()) == [1, 2, 3]  # confirmed on its second sighting
    for _ in range(4, 9):
        tracker(Detections.empty())
    tracker(_walk(9))  # long gone: new tracks (their ids count on), not 1 and 2
    again = tracker(_walk(10))
    assert min(again.track_ids.tolist()) > 3


def test_given_tracker_keeps_detector_ids_and_needs_them() -> None:
    tracker = CameraTracker(TrackerSettings(kind="given"), 10)
    det = _walk(0).with_track_ids(np.array([17, 4]))
    assert tracker(det).track_ids.tolist() == [17, 4]
    with pytest.raises(ValueError, match="track_ids"):
        tracker(_walk(0))
    with pytest.raises(ValueError, match="tracker.kind"):
        TrackerSettings(kind="sort")


def test_given_tracker_drops_rows_without_a_track_id(tmp_path) -> None:
    """A MOTChallenge det.txt has id -1 on every row: those rows are detections, not tracks, and a
    sighting with a negative track id is refused on the wire, so the node must never send one."""
    from edge.detect.mot import MotFileDetector
    from edge.sources.frame import Frame

    det_txt = tmp_path / "det.txt"
    det_txt.write_text(
        "1,-1,10,20,30,80,0.9,-1,-1,-1\n1,-1,100,20,30,80,0.8,-1,-1,-1\n1,5,200,20,30,80,0.7,-1,-1,-1\n"
    )
    detector = MotFileDetector(det_txt, ground_truth=False, keep_ids=True)
    frame = Frame(
        camera_id="c", modality="visible", index=0, timestamp=0.0, image=np.zeros((240, 320, 3), np.uint8)
    )
    tracker = CameraTracker(TrackerSettings(kind="given"), 10)
    out = tracker(detector(frame))
    assert out.track_ids.tolist() == [5]
    assert tracker.untracked == 2
    assert len(tracker(detector(frame).with_track_ids(np.array([-1, -1, -1])))) == 0


def test_crop_gate_table() -> None:
    gate = CropGate(min_height_px=48, border_margin_px=2, full_quality_height_px=128)
    det = Detections(
        [
            [10, 10, 50, 138],  # 128 tall, inside: quality = score
            [10, 10, 30, 74],  # 64 tall: half the size factor
            [10, 10, 30, 50],  # 40 tall: too small
            [0, 10, 40, 138],  # touches the left border: cut
            [100, 10, 300, 60],  # wider than tall
        ],
        [0.8, 0.8, 0.9, 0.9, 0.9],
    )
    np.testing.assert_allclose(gate.quality(det, 320, 240), [0.8, 0.4, 0, 0, 0], rtol=1e-6)
    lenient = CropGate(reject_cut=False)
    assert lenient.quality(det, 320, 240)[3] == pytest.approx(0.9 * 0.5)
    assert gate.quality(Detections.empty(), 10, 10).shape == (0,)


def test_cut_crops_round_outwards_and_clip() -> None:
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    crops = cut_crops(image, np.array([[1.5, 2.5, 4.2, 6.0], [-5, -5, 100, 100], [29.5, 19.5, 29.6, 19.6]]))
    assert crops[0].shape == (4, 4, 3) and np.shares_memory(crops[0], image)
    assert crops[1].shape == (20, 30, 3)
    assert crops[2].shape == (1, 1, 3)


def test_track_embeddings_quality_weighted_mean() -> None:
    tracks = TrackEmbeddings(max_age_s=5.0)
    tracks.update(
        "cam", np.array([1, 2]), np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([1.0, 0.5]), now_s=0.0
    )
    tracks.update("cam", np.array([1]), np.array([[0.0, 3.0]]), np.array([3.0]), now_s=1.0)
    tracks.update(
        "cam", np.array([2]), np.array([[1.0, 0.0]]), np.array([0.0]), now_s=1.0
    )  # weight 0: ignored
    rows, vectors = tracks.get("cam", np.array([5, 1, 2]))
    assert rows.tolist() == [1, 2]
    np.testing.assert_allclose(vectors[0], np.array([1.0, 3.0]) / np.sqrt(10), rtol=1e-6)  # (1*e_x + 3*e_y)
    np.testing.assert_allclose(vectors[1], [0.0, 1.0])
    assert tracks.crops_seen("cam", 1) == 2 and tracks.get("other", np.array([1]))[0].size == 0
    assert tracks.expire(5.5, camera_id="cam") == 1  # track 2 last seen at 0.0
    assert len(tracks) == 1
    with pytest.raises(ValueError, match="update needs"):
        tracks.update("cam", np.array([1, 2]), np.zeros((1, 2)), np.ones(2), 0.0)
