"""How well the linker links people, on real and simulated material, three ways per set.

Each set is scored three ways: **greedy** (the rules before issue 11: tracks decided one after
another, no camera topology, no final pass), **online** (the linker as it runs: joint one-to-one
first decisions, topology, revisions; identities as last published before the final pass) and
**offline** (after the replay's final clustering pass: an upper bound the online linker is measured
against). Scores, per set:

- multi-camera **IDF1** (sightings weighted; detections are ground truth, so IDF1 = IDTP / sightings),
- **identities** published vs true **people**,
- **pair precision / recall** over track pairs (same identity vs same person),
- **cross-site merges**: identities holding tracks of two sites (must be 0).

Sets:

1. ``mot17``: real, same modality. MOTChallenge sequences (default ``../shared/data/real/mot17/*``,
   more with ``--mot``), ground-truth pedestrians, the real OSNet-x0.25 ReID model
   (``../shared/data/real/models/osnet_x0_25_msmt17.onnx``, a sidecar is written for a copy of it).
   Frames ``--mot-eval-frames`` (default 3:4) of each sequence are split into ``--pseudo-cameras``
   frame ranges, one pseudo-camera each; each sequence is its own site. The thresholds are
   calibrated on *other* frames (``--mot-calib-frames``, default 1:2) with ``mpanet-calibrate``.
2. ``llvip``: real, cross modality. LLVIP visible/infrared pairs with shared boxes: each pair two
   overlapping cameras (one site), pairs far apart in time. Calibrated on pairs 1..2, scored on 3..4
   (OSNet is visible-only: cross-modality matching is near chance; this set shows what the linker
   does with a weak cross-modality signal, not what MPANet achieves).
3. ``demo``: the demo scene (``python run_pipeline.py``'s RGB + thermal walkway, 6 people, ground
   truth boxes) with the demo's MPANet model (``--demo-model``; skipped if there is none), run
   through the real pipeline (nodes and linker as processes).
4. ``sim-auc0.80`` / ``0.90`` / ``0.97``: simulated track embeddings whose visible-infrared
   tracklet ROC AUC is set (``--people`` people, ``--cameras`` cameras in sites of 10: 5 co-located
   RGB + thermal pairs per site; each person walks through 2-3 pairs of one site), so the algorithm
   is measured apart from any model. Thresholds from the same calibration code on a separate
   simulated calibration population.

    python benchmarks/bench_linking_quality.py [--sets mot17 llvip demo sim] [--people 10000]
        [--cameras 100] [--out benchmarks/results/linking_quality.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report_file import machine_info, write_report  # noqa: E402
from common.modality import Modality  # noqa: E402

REAL = (ROOT / ".." / "shared" / "data" / "real").resolve()
TrackKey = tuple[str, str, int]


@dataclasses.dataclass
class Track:
    """Ground truth of one track: person, site, camera, modality, sightings."""

    pid: int
    site: str
    camera: str
    modality: Modality
    sightings: int = 0


@dataclasses.dataclass
class Frame:
    """One camera frame: capture time, camera, modality, (track id, unit vector) per sighting."""

    ts: float
    camera: str
    modality: Modality
    index: int
    rows: list[tuple[int, np.ndarray]]


# ---------------------------------------------------------------------------------------- linking


def run_linker(
    frames: list[Frame],
    thresholds: dict[str, float],
    topology: dict[str, Any] | None,
    greedy: bool,
    min_sightings: int = 1,
    hygiene_s: float = 30.0,
) -> tuple[dict[TrackKey, int], dict[TrackKey, int], float]:
    """Feed ``frames`` (capture-time order, as the ordering stage releases them) to a linker.

    Returns (identity per track before the final pass, after it, seconds).
    """
    from edge.linking.assignment import MatchingRules
    from edge.linking.events import IdentityDecision
    from edge.linking.gallery import GalleryConfig
    from edge.linking.linker import HygieneSettings, IdentityLinker
    from edge.linking.topology import CameraPlace, Topology, TopologyConfig, TransitRule
    from edge.messages import SightingBatch

    rules = MatchingRules(
        cosine_min_visible=thresholds["cosine_min_visible"],
        cosine_min_infrared=thresholds["cosine_min_infrared"],
        cosine_min_cross=thresholds["cosine_min_cross"],
        min_sightings=min_sightings,
        joint_assignment=not greedy,
        track_idle_s=30.0,
    )
    linker = IdentityLinker(rules, GalleryConfig(ttl_s=1e9, max_identities=10**6))
    if greedy:
        linker.configure(Topology(), HygieneSettings(interval_s=0.0))
    else:
        places = TopologyConfig(
            cameras={c: CameraPlace(**p) for c, p in (topology or {}).get("cameras", {}).items()},
            transit=[TransitRule(**t) for t in (topology or {}).get("transit", [])],
        )
        linker.configure(Topology(places), HygieneSettings(interval_s=hygiene_s))
    online: dict[TrackKey, int] = {}
    final: dict[TrackKey, int] = {}
    started = time.perf_counter()
    seqs: Counter[str] = Counter()
    events = []
    for frame in frames:
        ids = [t for t, _ in frame.rows]
        rows = np.stack([v for _, v in frame.rows]).astype(np.float32) if ids else None
        batch = SightingBatch(
            producer_id="p-" + frame.camera,
            camera_id=frame.camera,
            seq=seqs[frame.camera],
            capture_ts=frame.ts,
            send_ts=0.0,
            engine_id="bench",
            modality=frame.modality,
            frame_index=frame.index,
            frame_width=1920,
            frame_height=1080,
            boxes=[(0.0, 0.0, 10.0, 20.0)] * len(ids),
            track_ids=ids,
            scores=[1.0] * len(ids),
            quality=[1.0] * len(ids),
            embedding_rows=list(range(len(ids))),
            embedding_dtype="float32",
            embedding_shape=rows.shape if rows is not None else (0, 0),
            embedding_source="crop",
        )
        seqs[frame.camera] += 1
        events += linker.observe(batch, rows)
    for camera in sorted(seqs):
        events += linker.end_camera("p-" + camera, camera)
    for e in events:
        if isinstance(e, IdentityDecision):
            online[e.track_key] = e.global_id
    final.update(online)
    if not greedy:
        for e in linker.final_pass():
            if isinstance(e, IdentityDecision):
                final[e.track_key] = e.global_id
    return online, final, time.perf_counter() - started


def score(truth: dict[TrackKey, Track], assigned: dict[TrackKey, int]) -> dict[str, Any]:
    """IDF1 (sightings), identities vs people, pair precision/recall (tracks), cross-site merges."""
    total = sum(t.sightings for t in truth.values())
    counts: Counter[tuple[int, int]] = Counter()
    for key, t in truth.items():
        if key in assigned:
            counts[(t.pid, assigned[key])] += t.sightings
    from scipy.optimize import linear_sum_assignment

    pids = sorted({p for p, _ in counts})
    gids = sorted({g for _, g in counts})
    idtp = 0.0
    if counts:
        matrix = np.zeros((len(pids), len(gids)))
        pi, gi = {p: i for i, p in enumerate(pids)}, {g: i for i, g in enumerate(gids)}
        for (p, g), n in counts.items():
            matrix[pi[p], gi[g]] = n
        r, c = linear_sum_assignment(-matrix)
        idtp = float(matrix[r, c].sum())

    def pairs(groups: Counter) -> int:
        return int(sum(n * (n - 1) // 2 for n in groups.values()))

    cells = Counter((truth[k].pid, g) for k, g in assigned.items() if k in truth)
    linked = pairs(Counter(g for k, g in assigned.items() if k in truth))
    true_pairs = pairs(Counter(t.pid for t in truth.values()))
    correct = pairs(cells)
    sites: dict[int, set[str]] = defaultdict(set)
    for k, g in assigned.items():
        if k in truth:
            sites[g].add(truth[k].site)
    return {
        "idf1": idtp / total if total else 0.0,
        "identities": len(set(assigned.values())),
        "people": len({t.pid for t in truth.values()}),
        "tracks": len(truth),
        "tracks_with_identity": sum(1 for k in truth if k in assigned),
        "pair_precision": correct / linked if linked else 1.0,
        "pair_recall": correct / true_pairs if true_pairs else 1.0,
        "cross_site_merges": sum(1 for s in sites.values() if len(s) > 1),
    }


def todays_thresholds(calibration: dict[str, Any]) -> dict[str, float]:
    """The thresholds of the rules before issue 11: one pooled same-modality value for both
    modalities and the cross value as measured (no per-pair values, no AUC gate)."""
    same = calibration["same"]["threshold"] if calibration["same"]["threshold"] is not None else 0.5
    cross = calibration["cross"]["threshold"] if calibration["cross"]["threshold"] is not None else 0.3
    return {"cosine_min_visible": same, "cosine_min_infrared": same, "cosine_min_cross": cross}


def three_ways(frames, truth, thresholds, topology, calibration, min_sightings=1) -> dict[str, Any]:
    greedy_th = todays_thresholds(calibration)
    greedy_online, greedy_final, greedy_s = run_linker(frames, greedy_th, topology, True, min_sightings)
    online, final, new_s = run_linker(frames, thresholds, topology, False, min_sightings)
    return {
        "greedy": {**score(truth, greedy_final), "seconds": greedy_s},
        "online": {**score(truth, online), "seconds": new_s},
        "offline": score(truth, final),
        "thresholds": thresholds,
        "greedy_thresholds": greedy_th,
    }


# ---------------------------------------------------------------------------------- real material


def osnet_engine(folder: Path) -> Path:
    """A copy of the real OSNet model with a sidecar (input 256x128 RGB, ImageNet mean/std, 512-d)."""
    from engines.foreign import write_foreign_sidecar

    model = folder / "osnet.onnx"
    shutil.copy(REAL / "models" / "osnet_x0_25_msmt17.onnx", model)
    write_foreign_sidecar(model, 256, 128)  # what `mpanet-sidecar` does: graph facts, one checked run
    return model


def calibrated(
    model: Path, data: list[tuple[str, str]], frames: tuple[int, int], **options: Any
) -> dict[str, float]:
    from engines.cli.calibrate import calibrate_engine

    result = calibrate_engine(model, data, frames=frames, progress=False, plot=False, **options)
    out = {k: result[k] for k in ("cosine_min_visible", "cosine_min_infrared", "cosine_min_cross")}
    fallback = {
        "cosine_min_visible": 0.5,
        "cosine_min_infrared": 0.5,
        "cosine_min_cross": 0.3,
    }  # the defaults
    return {k: (v if v is not None else fallback[k]) for k, v in out.items()}, result


def mot_set(model: Path, sequences: list[Path], calib: tuple[int, int], evaluate: tuple[int, int], k: int):
    import cv2

    from engines.labelled_material import read_mot_pedestrians
    from engines.runtime import load_embedder

    embedder = load_embedder(model)
    frames: list[Frame] = []
    truth: dict[TrackKey, Track] = {}
    cameras: dict[str, dict[str, str]] = {}
    for s, sequence in enumerate(sequences):
        rows = read_mot_pedestrians(sequence / "gt" / "gt.txt")
        numbers = [f for f in sorted({int(f) for f in rows[:, 0]}) if evaluate[0] <= f <= evaluate[1]]
        for c, chunk in enumerate(np.array_split(np.asarray(numbers), min(k, len(numbers)))):
            camera = f"{sequence.name}-cam{c}"
            cameras[camera] = {"site": sequence.name}
            for number in chunk:
                image = cv2.imread(str(sequence / "img1" / f"{int(number):06d}.jpg"))
                crops, ids = [], []
                for _, pid, x, y, w, h in rows[rows[:, 0] == number]:
                    a, b = max(int(x), 0), max(int(y), 0)
                    crop = image[b : int(y + h), a : int(x + w)]
                    if crop.shape[0] >= 32 and crop.shape[1] >= 8:
                        crops.append(np.ascontiguousarray(crop))
                        ids.append(int(pid))
                vectors = embedder.embed_crops(crops, input_order="BGR") if crops else []
                frames.append(
                    Frame(
                        float(number) / 30.0, camera, Modality.VISIBLE, int(number), list(zip(ids, vectors))
                    )
                )
                for pid in ids:
                    key = ("p-" + camera, camera, pid)
                    truth.setdefault(
                        key, Track(s * 100_000 + pid, sequence.name, camera, Modality.VISIBLE)
                    ).sightings += 1
    frames.sort(key=lambda f: (f.ts, f.camera))
    thresholds, calibration = calibrated(model, [("mot", str(p)) for p in sequences], calib, pseudo_cameras=2)
    result = three_ways(frames, truth, thresholds, {"cameras": cameras}, calibration)
    result["calibrated_on"] = f"frames {calib[0]}..{calib[1]} of {[p.name for p in sequences]}"
    result["scored_on"] = f"frames {evaluate[0]}..{evaluate[1]}, {k} pseudo-cameras per sequence, a site each"
    result["calibration_auc"] = {p: e.get("auc") for p, e in calibration["pairs"].items()}
    return result


def llvip_set(model: Path, root: Path, calib: tuple[int, int], evaluate: tuple[int, int]):
    from engines.labelled_material import read_material
    from engines.runtime import load_embedder

    embedder = load_embedder(model)
    frames: list[Frame] = []
    truth: dict[TrackKey, Track] = {}
    items = list(read_material("paired", root, frames=evaluate))
    vectors = embedder.embed_crops([i.crop for i in items], input_order="BGR")
    by_frame: dict[tuple[int, str], list[tuple[int, np.ndarray]]] = defaultdict(list)
    for item, v in zip(items, vectors):
        pair = item.pid // 1000
        by_frame[(pair, item.modality)].append((item.pid % 1000 + 1000 * pair, v))
    for (pair, modality), rows in sorted(by_frame.items()):
        camera = f"llvip-{modality}"
        frames.append(Frame(100.0 * pair, camera, Modality(modality), pair, rows))
        for track_id, _ in rows:
            key = ("p-" + camera, camera, track_id)
            truth[key] = Track(track_id, "llvip", camera, Modality(modality), 1)
    frames.sort(key=lambda f: (f.ts, f.camera))
    thresholds, calibration = calibrated(model, [("paired", str(root))], calib)
    topology = {
        "cameras": {
            c: {"site": "llvip", "overlap_group": "pair"} for c in ("llvip-visible", "llvip-infrared")
        }
    }
    result = three_ways(frames, truth, thresholds, topology, calibration)
    result["calibrated_on"] = f"pairs {calib[0]}..{calib[1]} of {root}"
    result["scored_on"] = f"pairs {evaluate[0]}..{evaluate[1]}"
    result["calibration_auc"] = {p: e.get("auc") for p, e in calibration["pairs"].items()}
    return result


def demo_set(model: Path, work: Path, dataset_seed: int | None = None, people: int = 6) -> dict[str, Any]:
    """The demo scene through the real pipeline, greedy rules vs the new linker.

    ``dataset_seed``: the scene's people look like training identities of the model's dataset
    (``<model dir>/data``, as the end-to-end test does: a closed set the small model knows)."""
    import json as json_

    from edge.demo import DemoConfig, DemoSceneConfig, run_demo
    from engines.linking_thresholds import calibrate_artifact

    copy = work / "demo-model" / model.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".json", ".linking.json"):
        if Path(str(model) + suffix).is_file():
            shutil.copy(str(model) + suffix, str(copy) + suffix)
    data = model.parent / "data"
    existing = Path(str(copy) + ".linking.json")
    calibration = json_.loads(existing.read_text()) if existing.is_file() else None
    if (calibration is None or "pairs" not in calibration) and data.is_dir():
        # A per-pair calibration on the dataset's test split (people the model never saw).
        calibration = calibrate_artifact(copy, data)
    identities = None
    if dataset_seed is not None:
        from trainer.data import load_train_samples

        pids = sorted({s.pid for s in load_train_samples(data, "sysu")})
        identities = (dataset_seed, tuple(pids[:people]))
    model = copy
    out = {}
    for name, overrides in (
        (
            "greedy",
            ["matching.joint_assignment=false", "offline.final_pass=false", "hygiene.interval_s=0"]
            + (
                [
                    f"matching.cosine_min_same={calibration['same']['threshold']}",
                    f"matching.cosine_min_cross={calibration['cross']['threshold']}",
                ]
                if calibration
                else []
            ),
        ),
        ("new", []),
    ):
        demo = DemoConfig(
            output_dir=str(work / f"demo-{name}"),
            model=str(model),
            linker_overrides=overrides,
            scene=DemoSceneConfig(people=people),
            progress=False,
        )
        summary = run_demo(demo, scene_identities=identities)
        s = summary["score"]
        out[name] = s
    pick = (
        "idf1_final",
        "identities_published",
        "people_in_ground_truth",
        "cross_modal_precision",
        "cross_modal_recall",
    )
    greedy, new = out["greedy"], out["new"]
    return {
        "greedy": {k: greedy[k] for k in pick} | {"idf1": greedy["idf1_final"], "cross_site_merges": 0},
        "online": {
            "idf1": new["idf1_before_final_pass"],
            "idf1_as_published": new["idf1_online"],
            "cross_site_merges": 0,
        },
        "offline": {k: new[k] for k in pick} | {"idf1": new["idf1_final"], "cross_site_merges": 0},
        "note": "one site; pair precision/recall are over (visible, infrared) track pairs; greedy takes the "
        "pooled same/cross thresholds of the model's calibration, the new linker its per-pair thresholds",
        "scene": {"people": people, "closed_set_dataset_seed": dataset_seed},
        "calibration": (summary.get("calibration") or {}).get("thresholds"),
    }


# ------------------------------------------------------------------------------------- simulation


@dataclasses.dataclass
class SimWorld:
    """People as unit vectors seen through each modality: ``normalize(p + beta * q_m + gap * d_m +
    sigma * noise)``, where ``q_m`` is the person's own look in modality ``m`` (independent between
    modalities: what the engine cannot carry across), ``d_m`` a direction shared by the modality
    and ``noise`` per sighting. ``beta`` sets the visible-infrared separability, ``sigma`` the
    sighting noise (same-modality separability)."""

    dim: int
    gap: float
    beta: float
    sigma: float
    seed: int

    def people(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3, dim): each person's shared look and own look in each modality."""
        base = rng.standard_normal((n, 3, self.dim))
        return base / np.linalg.norm(base, axis=2, keepdims=True)

    def view(self, person: np.ndarray, modality: Modality, rng: np.random.Generator, n: int) -> np.ndarray:
        own = person[1] if modality is Modality.VISIBLE else person[2]
        direction = np.zeros(self.dim)
        direction[0] = 1.0 if modality is Modality.VISIBLE else -1.0
        v = person[0] + self.beta * own + self.gap * direction
        v = v + self.sigma * rng.standard_normal((n, self.dim)) / np.sqrt(self.dim)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def tracklet_auc(world: SimWorld, people: int = 400, sightings: int = 3, seed: int = 0) -> float:
    """Visible-infrared ROC AUC of tracklets (``sightings`` views averaged) of ``people`` people."""
    rng = np.random.default_rng(seed)
    base = world.people(people, rng)
    vis = np.stack([world.view(p, Modality.VISIBLE, rng, sightings).mean(0) for p in base])
    ir = np.stack([world.view(p, Modality.INFRARED, rng, sightings).mean(0) for p in base])
    vis /= np.linalg.norm(vis, axis=1, keepdims=True)
    ir /= np.linalg.norm(ir, axis=1, keepdims=True)
    cos = vis @ ir.T
    pos = np.diag(cos)
    neg = cos[~np.eye(people, dtype=bool)]
    ranks = np.searchsorted(np.sort(neg), pos)
    return float(ranks.mean() / len(neg))


def world_at_auc(target: float, dim: int = 64, gap: float = 0.3, sigma: float = 0.6) -> SimWorld:
    """Bisect ``beta`` so that the visible-infrared tracklet AUC is ``target``."""
    low, high = 0.0, 8.0
    for _ in range(25):
        mid = 0.5 * (low + high)
        if tracklet_auc(SimWorld(dim, gap, mid, sigma, 0)) > target:
            low = mid
        else:
            high = mid
    return SimWorld(dim, gap, 0.5 * (low + high), sigma, 0)


def sim_scene(world: SimWorld, people: int, cameras: int, seed: int, sightings: int = 3):
    """Sites of 10 cameras = 5 co-located (visible, infrared) pairs; each person walks through 2-3
    pairs of one site, ``sightings`` 1 s frames per pair, 20-60 s between pairs."""
    rng = np.random.default_rng(seed)
    sites = max(1, cameras // 10)
    base = world.people(people, rng)
    span = max(600.0, people / sites * 6.0)  # arrivals spread so that a site sees a few people at once
    sightings_at: dict[tuple[str, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
    truth: dict[TrackKey, Track] = {}
    topology: dict[str, Any] = {"cameras": {}}
    for site in range(sites):
        for pair in range(5):
            for modality in Modality:
                topology["cameras"][f"s{site}-g{pair}-{modality}"] = {
                    "site": f"s{site}",
                    "overlap_group": f"s{site}-g{pair}",
                }
    for person in range(people):
        site = int(rng.integers(sites))
        route = rng.choice(5, size=int(rng.integers(2, 4)), replace=False)
        t = float(rng.uniform(0, span))
        for pair in route:
            start = int(t)
            for modality in Modality:
                camera = f"s{site}-g{pair}-{modality}"
                views = world.view(base[person], modality, rng, sightings)
                for k in range(sightings):
                    sightings_at[(camera, start + k)].append((person, views[k]))
                truth[("p-" + camera, camera, person)] = Track(
                    person, f"s{site}", camera, modality, sightings
                )
            t += sightings + float(rng.uniform(20.0, 60.0))
    frames = [
        Frame(
            float(ts), camera, Modality.VISIBLE if camera.endswith("visible") else Modality.INFRARED, ts, rows
        )
        for (camera, ts), rows in sightings_at.items()
    ]
    frames.sort(key=lambda f: (f.ts, f.camera))
    return frames, truth, topology


def sim_thresholds(world: SimWorld, fpr: float) -> dict[str, float]:
    """Calibrate on a separate simulated population (300 people, 2 cameras per modality)."""
    from engines.linking_thresholds import calibrate_thresholds

    rng = np.random.default_rng(world.seed + 99)
    base = world.people(300, rng)
    rows, pids, cams, mods = [], [], [], []
    for p, person in enumerate(base):
        for cam, modality in (
            (0, Modality.VISIBLE),
            (1, Modality.VISIBLE),
            (2, Modality.INFRARED),
            (3, Modality.INFRARED),
        ):
            for v in world.view(person, modality, rng, 3):
                rows.append(v), pids.append(p), cams.append(cam), mods.append(str(modality))
    result = calibrate_thresholds(
        np.asarray(rows, np.float32), pids, cams, mods, tracklet_size=3, fpr_max=fpr
    )
    return {k: result[k] for k in ("cosine_min_visible", "cosine_min_infrared", "cosine_min_cross")}, result


def sim_set(auc: float, people: int, cameras: int, fpr: float) -> dict[str, Any]:
    world = world_at_auc(auc)
    thresholds, calibration = sim_thresholds(world, fpr)
    frames, truth, topology = sim_scene(world, people, cameras, seed=1)
    result = three_ways(frames, truth, thresholds, topology, calibration, min_sightings=3)
    result["measured_auc"] = {p: e.get("auc") for p, e in calibration["pairs"].items()}
    result["world"] = dataclasses.asdict(world)
    result["size"] = {"people": people, "cameras": cameras, "tracks": len(truth), "frames": len(frames)}
    return result


# ------------------------------------------------------------------------------------------- main


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| set | greedy IDF1 | online IDF1 | offline IDF1 | identities greedy / online / offline / people | "
        "pair P/R online | cross-site merges greedy / online / offline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["sets"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        g, o, f = r["greedy"], r["online"], r["offline"]
        people = g.get("people", g.get("people_in_ground_truth", "?"))
        ids = f"{g.get('identities', g.get('identities_published', '?'))} / {o.get('identities', '-')} / " + (
            f"{f.get('identities', f.get('identities_published', '?'))} / {people}"
        )
        pr = f"{o['pair_precision']:.2f} / {o['pair_recall']:.2f}" if "pair_precision" in o else "-"
        lines.append(
            f"| {name} | {g['idf1']:.3f} | {o['idf1']:.3f} | {f['idf1']:.3f} | {ids} | {pr} | "
            f"{g['cross_site_merges']} / {o['cross_site_merges']} / {f['cross_site_merges']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["mot17", "llvip", "demo", "sim"])
    parser.add_argument("--real", default="", help="the shared real material (default ../shared/data/real)")
    parser.add_argument("--mot", nargs="*", default=[], help="more MOTChallenge sequences")
    parser.add_argument("--mot-calib-frames", default="1:2")
    parser.add_argument("--mot-eval-frames", default="3:4")
    parser.add_argument("--pseudo-cameras", type=int, default=2)
    parser.add_argument("--demo-model", default="", help="the demo's MPANet engine (.onnx with sidecar)")
    parser.add_argument(
        "--demo-dataset-seed",
        type=int,
        help="scene people = training identities of <model dir>/data (closed set)",
    )
    parser.add_argument("--demo-people", type=int, default=6)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--cameras", type=int, default=100)
    parser.add_argument("--aucs", type=float, nargs="+", default=[0.80, 0.90, 0.97])
    parser.add_argument(
        "--target-fpr", type=float, default=0.001, help="false-match rate of the simulated sets' thresholds"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "linking_quality.json"))
    args = parser.parse_args()
    global REAL
    REAL = Path(args.real) if args.real else REAL

    def frames(text: str) -> tuple[int, int]:
        a, b = text.split(":")
        return int(a), int(b)

    report: dict[str, Any] = {"machine": machine_info(), "sets": {}, "args": vars(args)}
    work = Path(tempfile.mkdtemp(prefix="linking-quality-"))
    model = osnet_engine(work) if (REAL / "models" / "osnet_x0_25_msmt17.onnx").is_file() else None
    if "mot17" in args.sets:
        sequences = sorted(p for p in (REAL / "mot17").glob("*") if (p / "gt" / "gt.txt").is_file())
        sequences += [Path(p) for p in args.mot]
        if model is None or not sequences:
            report["sets"]["mot17"] = {"skipped": "no OSNet model or MOT17 sequences"}
        else:
            report["sets"]["mot17"] = mot_set(
                model,
                sequences,
                frames(args.mot_calib_frames),
                frames(args.mot_eval_frames),
                args.pseudo_cameras,
            )
        print("mot17", json.dumps(report["sets"]["mot17"], default=str)[:400], flush=True)
    if "llvip" in args.sets:
        if model is None or not (REAL / "llvip").is_dir():
            report["sets"]["llvip"] = {"skipped": "no OSNet model or LLVIP pairs"}
        else:
            report["sets"]["llvip"] = llvip_set(model, REAL / "llvip", (1, 2), (3, 4))
        print("llvip", json.dumps(report["sets"]["llvip"], default=str)[:400], flush=True)
    if "demo" in args.sets:
        if args.demo_model and Path(args.demo_model).is_file():
            report["sets"]["demo"] = demo_set(
                Path(args.demo_model), work, args.demo_dataset_seed, args.demo_people
            )
        else:
            report["sets"]["demo"] = {"skipped": "no --demo-model given (python run_pipeline.py trains one)"}
        print("demo", json.dumps(report["sets"]["demo"], default=str)[:400], flush=True)
    if "sim" in args.sets:
        for auc in args.aucs:
            name = f"sim-auc{auc:.2f}"
            report["sets"][name] = sim_set(auc, args.people, args.cameras, args.target_fpr)
            print(name, json.dumps(report["sets"][name], default=str)[:400], flush=True)
    out = Path(args.out)
    write_report(out, report)
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
