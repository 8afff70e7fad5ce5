"""How well a run linked people across cameras and modalities, against ground truth.

Inputs are the files a run leaves behind: the nodes' sightings logs (JSON lines, one per frame), the
linker's identity-update log, and MOTChallenge ground truth per camera (``frame`` 1-based, ``id`` =
the person's global identity across cameras).

Each sighting gets the global identity its track had

- ``online``: as last published at or before the sighting's frame (what a live consumer saw),
- ``before_final_pass``: as last published for the track by the online linker (its revisions
  included, the replay's final offline pass not), or
- ``final``: as last published for the track at the end of the run (after the final pass).

Metrics:

- **IDF1** (multi-camera, Ristani et al. 2016): sightings are matched to ground-truth boxes per frame
  (Hungarian on IoU >= ``iou_min``); one global bipartite matching of predicted identities to true
  people over *all* cameras maximises identity true positives; IDF1 = 2 IDTP / (GT boxes + predicted
  boxes). A sighting without an identity counts as a false positive.
- **Cross-modality linking precision / recall**, on (visible track, infrared track) pairs: a pair is
  *linked* when both tracks ended with the same global identity, and *truly linked* when the
  majority ground-truth person of both tracks is the same.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.detect.boxes import box_iou

TrackKey = tuple[str, str, int]  # (producer_id, camera_id, track_id)


@dataclass(frozen=True)
class Sighting:
    """One box of a sightings log. ``frame_index`` is 0-based; ``box`` is xyxy pixels."""

    producer_id: str
    camera_id: str
    modality: str
    frame_index: int
    track_id: int
    box: tuple[float, float, float, float]

    @property
    def key(self) -> TrackKey:
        return (self.producer_id, self.camera_id, self.track_id)


@dataclass(frozen=True)
class LinkingScore:
    """Scores of one run (fractions in [0, 1]; counts are ints)."""

    idf1_online: float
    idf1_before_final_pass: float
    idf1_final: float
    idp_final: float
    idr_final: float
    cross_modal_precision: float
    cross_modal_recall: float
    cross_modal_pairs_linked: int
    cross_modal_pairs_true: int
    people_in_ground_truth: int
    people_in_both_modalities: int
    people_linked_across_modalities: int
    identities_published: int
    identities_in_both_modalities: int
    tracks: int
    sightings: int
    sightings_with_identity: int
    ground_truth_boxes: int
    detection_recall: float
    detection_precision: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_sightings(paths: Iterable[str | os.PathLike[str]]) -> list[Sighting]:
    """All sightings of the given JSON-lines logs (a torn last line is skipped)."""
    out: list[Sighting] = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            for s in record["sightings"]:
                out.append(
                    Sighting(
                        producer_id=record["producer_id"],
                        camera_id=record["camera_id"],
                        modality=record["modality"],
                        frame_index=int(record["frame_index"]),
                        track_id=int(s["track_id"]),
                        box=tuple(float(v) for v in s["box"]),  # type: ignore[arg-type]
                    )
                )
    return out


def read_mot_ground_truth(
    path: str | os.PathLike[str], classes: tuple[int, ...] = (1,)
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """MOT gt.txt -> {0-based frame: (person ids (N,) int64, boxes (N, 4) xyxy float32)}.

    Only what MOTChallenge evaluates is kept: rows whose consider flag (``conf`` column) is 1 and
    whose class is in ``classes`` (1 = pedestrian; MOT17 also labels people on vehicles, static
    people, cars, occluders ... which are not people to re-identify). A file without a class column
    (7 columns) counts every considered row as a pedestrian.
    """
    from common.annotations import read_mot_file

    table = read_mot_file(path)
    keep = (table.conf == 1) & (np.isin(table.classes, classes) | (table.classes == -1))
    frames: dict[int, tuple[list[int], list[list[float]]]] = defaultdict(lambda: ([], []))
    for frame, pid, (x, y, w, h) in zip(table.frames[keep], table.ids[keep], table.xywh[keep]):
        ids, boxes = frames[int(frame) - 1]
        ids.append(int(pid))
        boxes.append([x, y, x + w, y + h])
    return {
        f: (np.asarray(i, np.int64), np.asarray(b, np.float32).reshape(-1, 4)) for f, (i, b) in frames.items()
    }


def identity_timelines(updates: Sequence[Mapping[str, Any]]) -> dict[TrackKey, list[tuple[int, int]]]:
    """Per track, the (frame_index, global_id) of each update in publication order."""
    ordered = sorted(updates, key=lambda u: u.get("journal_seq", 0))
    timelines: dict[TrackKey, list[tuple[int, int]]] = defaultdict(list)
    for u in ordered:
        key = (str(u["source_producer_id"]), str(u["camera_id"]), int(u["track_id"]))
        timelines[key].append((int(u["frame_index"]), int(u["global_id"])))
    return timelines


def sighting_identities(
    sightings: Sequence[Sighting], timelines: Mapping[TrackKey, list[tuple[int, int]]], mode: str
) -> np.ndarray:
    """Global identity of each sighting (-1: none yet), ``mode`` ``online`` or ``final``."""
    if mode not in ("online", "final"):
        raise ValueError(f"mode must be 'online' or 'final', got {mode!r}")
    out = np.full(len(sightings), -1, dtype=np.int64)
    for i, s in enumerate(sightings):
        timeline = timelines.get(s.key)
        if not timeline:
            continue
        if mode == "final":
            out[i] = timeline[-1][1]
            continue
        current = -1
        for frame, gid in timeline:  # publication order; frames are non-decreasing per track
            if frame > s.frame_index:
                break
            current = gid
        out[i] = current
    return out


def match_to_ground_truth(
    sightings: Sequence[Sighting],
    truth: Mapping[str, Mapping[int, tuple[np.ndarray, np.ndarray]]],
    iou_min: float = 0.5,
) -> np.ndarray:
    """The true person of each sighting (-1: a false detection), by per-frame Hungarian matching on IoU."""
    out = np.full(len(sightings), -1, dtype=np.int64)
    by_frame: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, s in enumerate(sightings):
        by_frame[(s.camera_id, s.frame_index)].append(i)
    for (camera, frame), rows in by_frame.items():
        gt = truth.get(camera, {}).get(frame)
        if gt is None or len(gt[0]) == 0:
            continue
        iou = box_iou(np.asarray([sightings[r].box for r in rows], np.float32), gt[1])
        pred, true = linear_sum_assignment(-iou)
        for p, t in zip(pred, true, strict=True):
            if iou[p, t] >= iou_min:
                out[rows[p]] = gt[0][t]
    return out


def _idf1(true_ids: np.ndarray, pred_ids: np.ndarray, num_truth_boxes: int) -> tuple[float, float, float]:
    """(IDF1, IDP, IDR) from per-sighting true ids (-1 = false detection) and predicted ids (-1 = none)."""
    num_pred = len(pred_ids)
    ok = (true_ids >= 0) & (pred_ids >= 0)
    if not ok.any() or num_pred == 0 or num_truth_boxes == 0:
        return 0.0, 0.0, 0.0
    truths, t_index = np.unique(true_ids[ok], return_inverse=True)
    preds, p_index = np.unique(pred_ids[ok], return_inverse=True)
    counts = np.zeros((len(truths), len(preds)), dtype=np.int64)
    np.add.at(counts, (t_index, p_index), 1)
    rows, cols = linear_sum_assignment(-counts)
    idtp = float(counts[rows, cols].sum())
    return 2 * idtp / (num_truth_boxes + num_pred), idtp / num_pred, idtp / num_truth_boxes


def score_linking(
    sightings: Sequence[Sighting],
    updates: Sequence[Mapping[str, Any]],
    truth: Mapping[str, Mapping[int, tuple[np.ndarray, np.ndarray]]],
    iou_min: float = 0.5,
) -> LinkingScore:
    """Score a run. ``truth`` maps camera id -> :func:`read_mot_ground_truth` output."""
    timelines = identity_timelines(updates)
    live = identity_timelines([u for u in updates if not u.get("final_pass")])
    true_ids = match_to_ground_truth(sightings, truth, iou_min)
    online = sighting_identities(sightings, live, "online")
    before_pass = sighting_identities(sightings, live, "final")
    final = sighting_identities(sightings, timelines, "final")
    num_truth = sum(len(ids) for frames in truth.values() for ids, _ in frames.values())
    idf1_online, _, _ = _idf1(true_ids, online, num_truth)
    idf1_before_pass, _, _ = _idf1(true_ids, before_pass, num_truth)
    idf1_final, idp, idr = _idf1(true_ids, final, num_truth)

    # Per track: modality, final identity, majority true person.
    track_modality: dict[TrackKey, str] = {}
    track_truth: dict[TrackKey, Counter[int]] = defaultdict(Counter)
    for s, t in zip(sightings, true_ids, strict=True):
        track_modality[s.key] = s.modality
        if t >= 0:
            track_truth[s.key][int(t)] += 1
    track_final = {k: tl[-1][1] for k, tl in timelines.items()}
    majority = {k: c.most_common(1)[0][0] for k, c in track_truth.items()}
    visible = [k for k, m in track_modality.items() if m == "visible" and k in track_final]
    infrared = [k for k, m in track_modality.items() if m == "infrared" and k in track_final]
    linked = true_pairs = both = 0
    linked_people: set[int] = set()  # true people with a correctly linked (visible, infrared) pair
    for v in visible:
        for i in infrared:
            is_linked = track_final[v] == track_final[i]
            is_true = v in majority and i in majority and majority[v] == majority[i]
            linked += is_linked
            true_pairs += is_true
            if is_linked and is_true:
                both += 1
                linked_people.add(majority[v])
    people_by_modality: dict[str, set[int]] = defaultdict(set)
    camera_modality = {s.camera_id: s.modality for s in sightings}
    for camera, frames in truth.items():
        for ids, _ in frames.values():
            people_by_modality[camera_modality.get(camera, camera)].update(int(i) for i in ids)
    gt_people = set().union(*people_by_modality.values()) if people_by_modality else set()
    gt_both = people_by_modality.get("visible", set()) & people_by_modality.get("infrared", set())
    ids_by_modality: dict[str, set[int]] = defaultdict(set)
    for k, gid in track_final.items():
        if k in track_modality:
            ids_by_modality[track_modality[k]].add(gid)
    matched = int((true_ids >= 0).sum())
    return LinkingScore(
        idf1_online=idf1_online,
        idf1_before_final_pass=idf1_before_pass,
        idf1_final=idf1_final,
        idp_final=idp,
        idr_final=idr,
        cross_modal_precision=both / linked if linked else 0.0,
        cross_modal_recall=both / true_pairs if true_pairs else 0.0,
        cross_modal_pairs_linked=linked,
        cross_modal_pairs_true=true_pairs,
        people_in_ground_truth=len(gt_people),
        people_in_both_modalities=len(gt_both),
        people_linked_across_modalities=len(linked_people),
        identities_published=len(set(track_final.values())),
        identities_in_both_modalities=len(
            ids_by_modality.get("visible", set()) & ids_by_modality.get("infrared", set())
        ),
        tracks=len(track_modality),
        sightings=len(sightings),
        sightings_with_identity=int((final >= 0).sum()),
        ground_truth_boxes=num_truth,
        detection_recall=matched / num_truth if num_truth else 0.0,
        detection_precision=matched / len(sightings) if sightings else 0.0,
    )
