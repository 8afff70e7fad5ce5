"""The edge node end to end: a synthetic two-camera scene through detection, tracking, embedding and
ZeroMQ over loopback TCP; the synthetic scene itself; the real OSNet model through the runtime."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.annotations import read_mot_file
from edge.config import (
    DetectorConfig,
    NodeConfig,
    OutputConfig,
    SourceConfig,
    SyntheticConfig,
    load_node_config,
)
from edge.detect.boxes import box_iou, xywh_to_xyxy
from edge.messages import EndOfStream, Heartbeat, SightingBatch
from edge.node import build_node
from edge.scene import SceneSettings, SyntheticScene, write_scene
from edge.tracking import TrackerSettings
from edge.transport import Publisher, Subscriber, TransportSettings
from engines.runtime.base import Embedder
from engines.sidecar import EngineSidecar, Preprocessing

REPO = Path(__file__).resolve().parents[1]


class ColourLayoutEmbedder(Embedder):
    """A tiny deterministic embedder: mean colour of a 4 x 2 grid of the preprocessed crop (24-D)."""

    backend = "test"

    def __init__(self) -> None:
        sidecar = EngineSidecar(
            format="onnx",
            artifact="colour-layout.onnx",
            artifact_sha256="0" * 64,
            preprocessing=Preprocessing(height=32, width=16),
            output_dim=24,
            precision="fp32",
        )
        super().__init__(sidecar, "colour-layout.onnx")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        cells = batch.reshape(n, 3, 4, 8, 2, 8).mean(axis=(3, 5))
        return cells.reshape(n, 24) + 3.0  # positive offset: ImageNet-normalised values centre on 0


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    write_scene(SceneSettings(seed=7, duration_s=4.0, fps=10.0, width=320, height=240, num_people=4), out)
    return out


def test_scene_is_deterministic_for_a_seed_and_its_ground_truth_is_consistent(scene_dir: Path) -> None:
    description = json.loads((scene_dir / "scene.json").read_text())
    assert [c["camera_id"] for c in description["cameras"]] == ["cam-rgb", "cam-ir"]
    assert description["num_frames"] == 40
    settings = SceneSettings(**description["settings"])
    a, b = SyntheticScene(settings), SyntheticScene(settings)
    image_a, truth_a = a.render(1, 17)
    image_b, truth_b = b.render(1, 17)
    assert np.array_equal(image_a, image_b) and truth_a == truth_b
    other, _ = SyntheticScene(SceneSettings(**{**description["settings"], "seed": 8})).render(1, 17)
    assert not np.array_equal(image_a, other)
    for camera in description["cameras"]:
        table = read_mot_file(scene_dir / camera["ground_truth"])
        assert len(table) > 0 and set(table.ids.tolist()) == set(camera["global_ids"])
        assert ((table.visibility > 0) & (table.visibility <= 1)).all()
        assert (table.xywh[:, 2:] > 0).all() and (table.xywh[:, :2] >= 0).all()
        assert (table.xywh[:, 0] + table.xywh[:, 2] <= 320).all() and (
            table.xywh[:, 1] + table.xywh[:, 3] <= 240
        ).all()
        assert ((table.frames >= 1) & (table.frames <= 40)).all()
        capture = cv2.VideoCapture(str(scene_dir / camera["video"]))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
        capture.release()
    # Written frame = rendered frame (up to MJPG compression).
    capture = cv2.VideoCapture(str(scene_dir / "cam-ir.avi"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 17)
    ok, decoded = capture.read()
    assert ok and np.abs(decoded.astype(int) - image_a.astype(int)).mean() < 4


def _replay_config(scene_dir: Path, endpoint: str, **outputs: str) -> NodeConfig:
    sources = [
        SourceConfig(
            camera_id=camera,
            modality=modality,
            kind="file",
            path=str(scene_dir / f"{camera}.avi"),
            detector=DetectorConfig(
                "mot", {"path": str(scene_dir / camera / "gt" / "gt.txt"), "keep_ids": False}
            ),
        )
        for camera, modality in (("cam-rgb", "rgb"), ("cam-ir", "thermal"))
    ]
    config = NodeConfig(
        producer_id="edge-test", mode="replay", sources=sources, tracker=TrackerSettings(kind="bytetrack")
    )
    config.transport.endpoint = endpoint
    config.crops.min_height_px = 24
    config.outputs = OutputConfig(**outputs)
    return config


def _collect(subscriber: Subscriber, producer: str) -> list:
    messages = []
    while True:
        decoded = subscriber.receive(timeout_ms=20000)
        assert decoded is not None, "timed out waiting for the node"
        messages.append(decoded)
        m = decoded.message
        if isinstance(m, EndOfStream) and m.camera_id == "" and m.producer_id == producer:
            return messages


def test_node_replays_a_scene_over_tcp_and_every_ground_truth_person_appears(
    scene_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ultralytics")
    publisher = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*"))
    config = _replay_config(
        scene_dir,
        publisher.endpoint,
        annotated_video_dir=str(tmp_path / "videos"),
        sightings_jsonl=str(tmp_path / "sightings.jsonl"),
    )
    node = build_node(config, embedder=ColourLayoutEmbedder(), publisher=publisher)
    subscriber = Subscriber(TransportSettings(mode="replay", endpoint=publisher.endpoint))
    runner = threading.Thread(target=node.run)
    runner.start()
    try:
        messages = _collect(subscriber, "edge-test")
    finally:
        runner.join(timeout=60)
        subscriber.close()
        publisher.close()
    assert not runner.is_alive()
    receiver = subscriber.receiver
    assert receiver.malformed == 0 and receiver.sequences.total_missed == 0  # replay loses nothing
    batches = [d for d in messages if isinstance(d.message, SightingBatch)]
    ends = [d.message for d in messages if isinstance(d.message, EndOfStream)]
    assert [(e.camera_id, e.reason) for e in ends] == [
        ("cam-rgb", "source_ended"),
        ("cam-ir", "source_ended"),
        ("", "source_ended"),
    ]
    assert all(e.frames_read == 40 and e.messages_sent == 40 for e in ends[:2])
    assert any(isinstance(d.message, Heartbeat) for d in messages)
    for camera, modality in (("cam-rgb", "visible"), ("cam-ir", "infrared")):
        mine = [d for d in batches if d.message.camera_id == camera]
        assert [d.message.frame_index for d in mine] == list(range(40))
        assert [d.message.seq for d in mine] == list(range(40))
        assert all(d.message.modality == modality for d in mine)
        assert mine[10].message.capture_ts == pytest.approx(1.0)
        # Every ground-truth person appears among the sightings (a box at IoU >= 0.5 in some frame).
        table = read_mot_file(scene_dir / camera / "gt" / "gt.txt")
        found = set()
        for d in mine:
            rows = table.frames == d.message.frame_index + 1
            if rows.any() and d.message.num_sightings:
                ious = box_iou(xywh_to_xyxy(table.xywh[rows]), d.message.xyxy())
                found |= set(table.ids[rows][ious.max(axis=1) >= 0.5].tolist())
        assert found == set(table.ids.tolist()), camera
        with_embeddings = [d for d in mine if d.embeddings is not None]
        assert with_embeddings, camera
        for d in with_embeddings:
            assert d.message.engine_id == node.engine_id and d.embeddings.dtype == np.float16
            np.testing.assert_allclose(
                np.linalg.norm(d.embeddings.astype(np.float32), axis=1), 1.0, atol=2e-3
            )
    lines = (tmp_path / "sightings.jsonl").read_text().splitlines()
    assert len(lines) == 80 and json.loads(lines[0])["camera_id"] == "cam-rgb"
    for camera in ("cam-rgb", "cam-ir"):
        capture = cv2.VideoCapture(str(tmp_path / "videos" / f"{camera}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
        capture.release()


def test_live_node_on_a_synthetic_source_publishes_heartbeats_and_stops_with_end_of_stream() -> None:
    source = SourceConfig(
        camera_id="cam-ir",
        modality="infrared",
        kind="synthetic",
        synthetic=SyntheticConfig(
            seed=1, duration_s=60.0, fps=20.0, width=160, height=120, num_people=2, camera=1
        ),
        detector=DetectorConfig("thermal"),
    )
    config = NodeConfig(producer_id="edge-live", mode="live", sources=[source], heartbeat_interval_s=0.1)
    config.tracker.kind = "bytetrack"
    config.transport.endpoint = "tcp://127.0.0.1:*"
    pytest.importorskip("ultralytics")
    node = build_node(config)
    subscriber = Subscriber(TransportSettings(mode="live", endpoint=node.publisher.endpoint))
    threading.Timer(1.5, node.stop).start()
    runner = threading.Thread(target=node.run)
    runner.start()
    try:
        messages = _collect(subscriber, "edge-live")
    finally:
        runner.join(timeout=30)
        subscriber.close()
        node.publisher.close()
    heartbeats = [d.message for d in messages if isinstance(d.message, Heartbeat)]
    assert len(heartbeats) >= 3
    last = heartbeats[-1]
    assert last.mode == "live" and last.camera_ids == ["cam-ir"] and "frames/cam-ir" in last.drop_counts
    assert any("detect/cam-ir" in h.stage_rates_hz for h in heartbeats)
    ends = [d.message for d in messages if isinstance(d.message, EndOfStream)]
    assert [(e.camera_id, e.reason) for e in ends] == [("cam-ir", "stopped"), ("", "stopped")]
    assert any(isinstance(d.message, SightingBatch) for d in messages)


def test_live_publisher_counts_drops_at_its_high_water_mark() -> None:
    from edge.messages import Heartbeat as HB

    publisher = Publisher(TransportSettings(mode="live", endpoint="tcp://127.0.0.1:*", send_hwm=5))
    subscriber = Subscriber(TransportSettings(mode="live", endpoint=publisher.endpoint, receive_hwm=5))
    try:
        big = {f"stage-{i}": float(i) for i in range(2000)}  # large messages fill the TCP buffers quickly
        import time

        time.sleep(0.2)  # let the subscription arrive
        for seq in range(3000):
            publisher.send(
                HB(
                    producer_id="p",
                    camera_id="",
                    seq=seq,
                    capture_ts=0,
                    send_ts=0,
                    mode="live",
                    uptime_s=0,
                    stage_rates_hz=big,
                )
            )
        assert publisher.dropped > 0 and publisher.sent + publisher.dropped == 3000
        received = 0
        while subscriber.receive(timeout_ms=300) is not None:
            received += 1
        assert received <= publisher.sent
        assert subscriber.receiver.sequences.total_missed > 0  # the receiver sees the holes
    finally:
        subscriber.close()
        publisher.close()


def test_replay_publisher_never_drops_it_times_out_loudly() -> None:
    from edge.transport import TransportError

    publisher = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", send_timeout_ms=200))
    try:
        message = Heartbeat(
            producer_id="p", camera_id="", seq=0, capture_ts=0, send_ts=0, mode="replay", uptime_s=0
        )
        with pytest.raises(TransportError, match="nothing was dropped"):
            publisher.send(message)  # nobody is connected: the send blocks, then fails loudly
    finally:
        publisher.close()


def test_example_configs_load() -> None:
    for name in (
        "node-video.yaml",
        "node-thermal-folder.yaml",
        "node-rtsp.yaml",
        "node-synthetic.yaml",
        "node-thermal-fixed.yaml",
    ):
        config = load_node_config([REPO / "configs" / name])
        assert config.sources, name


def test_osnet_embeds_mot17_crops_and_tracks_match_themselves(shared_data: Path, tmp_path: Path) -> None:
    model = shared_data / "real" / "models" / "osnet_x0_25_msmt17.onnx"
    if not model.is_file() or not (shared_data / "real" / "mot17").is_dir():
        pytest.skip("OSNet model or MOT17 frames not in ../shared/data/real")
    pytest.importorskip("onnxruntime")
    from common.files import sha256_file
    from edge.crops import cut_crops
    from engines.runtime import load_embedder
    from engines.sidecar import save_sidecar

    artifact = tmp_path / "osnet.onnx"
    artifact.symlink_to(model)  # the sidecar sits beside the artifact; shared data stays read-only
    save_sidecar(
        EngineSidecar(
            format="onnx",
            artifact=artifact.name,
            artifact_sha256=sha256_file(model),
            preprocessing=Preprocessing(height=256, width=128),
            output_dim=512,
            precision="fp32",
            input_name="images",
            output_name="output",
        ),
        artifact,
    )
    embedder = load_embedder(artifact)
    crops, ids = [], []
    for sequence in sorted((shared_data / "real" / "mot17").iterdir()):  # MOT17-02 and -09: 13 tracks
        table = read_mot_file(sequence / "gt" / "gt.txt")
        keep = (table.conf > 0) & (table.classes == 1) & (table.visibility >= 0.5) & (table.xywh[:, 3] >= 100)
        for frame_number in (1, 4):  # the first and last frame: 0.1 s apart
            image = cv2.imread(str(sequence / "img1" / f"{frame_number:06d}.jpg"))
            rows = keep & (table.frames == frame_number)
            crops += cut_crops(image, xywh_to_xyxy(table.xywh[rows]))
            ids += [f"{sequence.name}/{i}" for i in table.ids[rows].tolist()]
    embeddings = embedder.embed_crops(crops, input_order="BGR")
    assert embeddings.shape == (len(crops), 512) and embeddings.dtype == np.float32
    ids = np.asarray(ids)
    similarity = embeddings @ embeddings.T
    same = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
    other = ids[:, None] != ids[None, :]
    assert len(set(ids.tolist())) == 13 and same.any()
    # Every track's crops match each other better than any other track's crops.
    for i in range(len(ids)):
        assert similarity[i][same[i]].min() > similarity[i][other[i]].max(), ids[i]


def test_replay_node_with_an_unreadable_video_fails_clearly_and_still_ends_its_streams(
    tmp_path: Path,
) -> None:
    from edge.sources import SourceError

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
    publisher = Publisher(
        TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*", send_timeout_ms=5000)
    )
    subscriber = Subscriber(TransportSettings(mode="replay", endpoint=publisher.endpoint))
    source = SourceConfig(camera_id="cam0", kind="file", path=str(broken), detector=DetectorConfig("hog"))
    node = build_node(
        NodeConfig(producer_id="edge-err", mode="replay", sources=[source]), publisher=publisher
    )
    try:
        with pytest.raises(SourceError, match="broken.mp4"):
            node.run()
        messages = _collect(subscriber, "edge-err")
    finally:
        subscriber.close()
        publisher.close()
    ends = [d.message for d in messages if isinstance(d.message, EndOfStream)]
    assert [(e.camera_id, e.reason) for e in ends] == [("cam0", "error"), ("", "error")]
    assert "broken.mp4" in ends[-1].detail
    assert node.report.reason == "error"


def test_replay_node_stops_on_request_with_stopped_end_of_stream(scene_dir: Path) -> None:
    pytest.importorskip("ultralytics")
    publisher = Publisher(TransportSettings(mode="replay", endpoint="tcp://127.0.0.1:*"))
    config = _replay_config(scene_dir, publisher.endpoint)
    config.sources = config.sources[:1]
    config.sources[0].pace = True  # 10 fps in real time: 4 s of video, stopped after ~0.5 s
    node = build_node(config, publisher=publisher)
    subscriber = Subscriber(TransportSettings(mode="replay", endpoint=publisher.endpoint))
    threading.Timer(0.5, node.stop).start()
    try:
        report = node.run()
        messages = _collect(subscriber, "edge-test")
    finally:
        subscriber.close()
        publisher.close()
    assert report.reason == "stopped" and 0 < report.frames["cam-rgb"] < 40
    ends = [d.message for d in messages if isinstance(d.message, EndOfStream)]
    assert [(e.camera_id, e.reason) for e in ends] == [("cam-rgb", "stopped"), ("", "stopped")]
    assert ends[0].frames_read == report.frames["cam-rgb"] and subscriber.receiver.sequences.total_missed == 0
