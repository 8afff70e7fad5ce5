"""The node config reaches every library setting; sources and videos fixed after a real run:
per-camera frame rates in annotated videos, folder cameras in the side-by-side video, a single
image as ``kind: file``."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from common.configuring import ConfigError
from edge.config import (
    DetectorConfig,
    LiveConfig,
    NodeConfig,
    OutputConfig,
    SourceConfig,
    SyntheticConfig,
    ThermalConfig,
    TransportConfig,
    load_node_config,
)
from edge.crops import CropGate
from edge.evaluation.scoring import Sighting
from edge.node import build_node, build_source
from edge.scene import SceneSettings
from edge.side_by_side import CameraVideo, write_side_by_side
from edge.sources.streams import LiveSource, ReplaySource
from edge.sources.thermal import ThermalNormalizer
from edge.tracking import TrackerSettings
from edge.transport import TransportSettings


class _NullPublisher:
    dropped = 0

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send(self, message: Any, embeddings: Any = None) -> bool:
        self.messages.append(message)
        return True


def _init_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _keyword_parameters(function: Any) -> set[str]:
    return {
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


# What the node supplies itself instead of reading from YAML (each with its reason).
_NODE_SUPPLIED = {
    TransportSettings: {"mode", "receive_hwm"},  # the node's mode; a publisher receives nothing
    LiveSource: {"thermal", "clock"},  # built from the thermal section; wall clock
}


@pytest.mark.parametrize(
    ("library", "section", "names"),
    [
        (TrackerSettings, NodeConfig, lambda: _init_fields(TrackerSettings)),
        (CropGate, NodeConfig, lambda: _init_fields(CropGate)),
        (ThermalNormalizer, ThermalConfig, lambda: _init_fields(ThermalNormalizer)),
        (SceneSettings, SyntheticConfig, lambda: _init_fields(SceneSettings)),
        (TransportSettings, TransportConfig, lambda: _init_fields(TransportSettings)),
        (LiveSource, LiveConfig, lambda: _keyword_parameters(LiveSource.__init__)),
    ],
    ids=["tracker", "crops", "thermal", "synthetic", "transport", "live"],
)
def test_every_library_setting_has_a_yaml_key(library: type, section: type, names: Any) -> None:
    wanted = names() - _NODE_SUPPLIED.get(library, set())
    if section is NodeConfig:  # nested directly: the section *is* the library class
        field = {TrackerSettings: "tracker", CropGate: "crops"}[library]
        assert {f.name: f.type for f in dataclasses.fields(NodeConfig)}[field] == library.__name__
        return
    missing = wanted - _init_fields(section)
    assert not missing, f"{library.__name__} settings not reachable from YAML ({section.__name__}): {missing}"


def _changed(value: Any) -> Any:
    """A valid value different from a field's default."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return {"bytetrack": "botsort", "none": "sparseOptFlow"}[value]
    return value * 2 + 1 if isinstance(value, int) else round(value * 1.5 + 0.25, 4)


def test_every_tracker_and_crop_setting_set_in_yaml_arrives_in_the_built_node(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "000.png"), np.zeros((64, 64, 3), np.uint8))
    lines = ["sources:", f"  - {{camera_id: c0, kind: folder, path: {frames}, fps: 5}}", "tracker:"]
    tracker = {f.name: _changed(f.default) for f in dataclasses.fields(TrackerSettings)}
    lines += [f"  {k}: {v}" for k, v in tracker.items()]
    crops = {f.name: _changed(f.default) for f in dataclasses.fields(CropGate)}
    crops["aspect_max"] = max(crops["aspect_max"], crops["aspect_min"])
    lines += ["crops:"] + [f"  {k}: {v}" for k, v in crops.items()]
    config_file = tmp_path / "node.yaml"
    config_file.write_text("\n".join(lines) + "\n")
    node = build_node(load_node_config([config_file]), publisher=_NullPublisher())
    assert dataclasses.asdict(node.cameras[0].tracker_settings) == tracker
    assert dataclasses.asdict(node.crop_gate) == crops
    with pytest.raises(ConfigError, match="aspect_min <= aspect_max"):
        load_node_config([config_file], ["crops.aspect_min=9", "crops.aspect_max=2"])


def test_detector_weights_is_a_per_camera_key_passed_to_the_backend(tmp_path: Path) -> None:
    config = DetectorConfig(name="yolo", weights="models/thermal.pt", settings={"confidence_min": 0.3})
    assert config.arguments() == {"weights": "models/thermal.pt", "confidence_min": 0.3}
    with pytest.raises(ValueError, match="once"):
        DetectorConfig(name="yolo", weights="a.pt", settings={"weights": "b.pt"})


def test_thermal_and_live_sections_reach_their_sources(tmp_path: Path) -> None:
    frames = tmp_path / "f"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), np.zeros((8, 8), np.uint16))
    source = SourceConfig(
        camera_id="ir",
        modality="thermal",
        kind="folder",
        path=str(frames),
        fps=2.0,
        thermal=ThermalConfig(low_percentile=2, high_percentile=97, sample_step=2, min_range=8.0),
        live=LiveConfig(pace_finite=False, queue_size=3),
    )
    replay = build_source(source, "replay")
    assert isinstance(replay, ReplaySource)
    assert (replay.thermal.sample_step, replay.thermal.min_range, replay.thermal.low_percentile) == (
        2,
        8.0,
        2,
    )
    live = build_source(source, "live")
    assert isinstance(live, LiveSource)
    assert live.thermal.high_percentile == 97


# ------------------------------------------------------------------------------------- frame rates


def _write_video(path: Path, fps: float, frames: int, size: tuple[int, int] = (96, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i % 255, np.uint8))
    writer.release()


def _video_fps_and_count(path: Path) -> tuple[float, int]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return fps, count


def test_annotated_videos_use_each_sources_own_frame_rate(tmp_path: Path) -> None:
    slow, fast = tmp_path / "slow.avi", tmp_path / "fast.avi"
    _write_video(slow, 3.0, 4)
    _write_video(fast, 25.0, 6)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.zeros((64, 96, 3), np.uint8))
    sources = [
        SourceConfig(camera_id="slow", kind="file", path=str(slow)),
        SourceConfig(camera_id="fast", kind="file", path=str(fast)),
        SourceConfig(camera_id="dir", kind="folder", path=str(folder), fps=7.0),
    ]
    config = NodeConfig(
        sources=sources,
        tracker=TrackerSettings(kind="bytetrack"),
        outputs=OutputConfig(annotated_video_dir=str(tmp_path / "out"), video_fourcc="MJPG"),
    )
    build_node(config, publisher=_NullPublisher()).run()
    got = {c: _video_fps_and_count(tmp_path / "out" / f"{c}.avi") for c in ("slow", "fast", "dir")}
    assert got == {"slow": (3.0, 4), "fast": (25.0, 6), "dir": (7.0, 2)}


# ----------------------------------------------------------------------------- single image / folder


def test_a_single_image_as_kind_file_yields_its_frame(tmp_path: Path) -> None:
    image = np.zeros((40, 30), np.uint16)
    image[10:30, 10:20] = 30000
    path = tmp_path / "one.png"
    cv2.imwrite(str(path), image)
    source = build_source(
        SourceConfig(camera_id="ir", modality="thermal", kind="file", path=str(path)), "replay"
    )
    frames = list(source)
    assert len(frames) == 1
    assert frames[0].image.shape == (40, 30, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].image[20, 15, 0] == 255 and frames[0].timestamp == 0.0


def test_a_folder_given_as_kind_file_points_at_kind_folder(tmp_path: Path) -> None:
    from edge.sources import SourceError

    source = build_source(SourceConfig(camera_id="c", kind="file", path=str(tmp_path)), "replay")
    with pytest.raises(SourceError, match="kind 'folder'"):
        source.start()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(SourceError, match="kind 'folder'"):
        build_source(SourceConfig(camera_id="c", kind="file", path=str(broken)), "replay").start()


# ------------------------------------------------------------------------------------- side by side


def test_side_by_side_video_includes_folder_cameras(tmp_path: Path) -> None:
    rgb, ir = tmp_path / "rgb", tmp_path / "ir"
    rgb.mkdir()
    ir.mkdir()
    for i in range(3):
        cv2.imwrite(str(rgb / f"{i:03d}.jpg"), np.full((60, 80, 3), 90, np.uint8))
    for i in range(2):  # a 16-bit thermal folder, one frame shorter
        cv2.imwrite(str(ir / f"{i:03d}.png"), np.full((30, 40), 1000 + 100 * i, np.uint16))
    sightings = [Sighting("edge-0", "rgb", "visible", 0, 1, (10.0, 10.0, 30.0, 50.0))]
    out = write_side_by_side(
        [
            CameraVideo("rgb", "visible", rgb, kind="folder"),
            CameraVideo("ir", "infrared", ir, kind="folder", pattern="*.png"),
        ],
        sightings,
        np.array([4]),
        tmp_path / "sbs.avi",
        fps=5.0,
        fourcc="MJPG",
    )
    fps, count = _video_fps_and_count(out)
    assert (fps, count) == (5.0, 3)
    capture = cv2.VideoCapture(str(out))
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape[1] == 80 + 80  # the 40 x 30 thermal panel scaled to 60 px high
    with pytest.raises(ValueError, match="'file' or 'folder'"):
        CameraVideo("usb", "visible", tmp_path, kind="usb")


def test_example_thermal_configs_build_their_detectors() -> None:
    from edge.detect import build_detector

    repo = Path(__file__).resolve().parents[1]
    fixed = load_node_config([repo / "configs" / "node-thermal-fixed.yaml"])
    ir = fixed.sources[1].detector
    detector = build_detector(ir.name, **ir.arguments())
    assert detector.gate is not None and detector.height_prior is not None
    assert fixed.tracker.proximity_thresh == 0.5 and fixed.crops.aspect_min == 1.2
    folder = load_node_config([repo / "configs" / "node-thermal-folder.yaml"]).sources[0].detector
    assert build_detector(folder.name, **folder.arguments()).gate is None


def test_pipeline_writes_the_side_by_side_video_of_folder_cameras_or_says_why_not(tmp_path: Path) -> None:
    import json

    from edge.linking.config import LinkerConfig
    from edge.pipeline import PipelineConfig, _finish

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((60, 80, 3), 50, np.uint8))
    log = tmp_path / "sightings.jsonl"
    record = {"producer_id": "n0", "camera_id": "dir", "modality": "visible", "frame_index": 1}
    record["sightings"] = [{"track_id": 1, "box": [10, 10, 30, 50]}]
    log.write_text(json.dumps(record) + "\n")
    folder_node = NodeConfig(
        producer_id="n0",
        sources=[SourceConfig(camera_id="dir", kind="folder", path=str(frames), fps=4.0)],
        outputs=OutputConfig(sightings_jsonl=str(log)),
    )
    usb_node = NodeConfig(producer_id="n1", sources=[SourceConfig(camera_id="usb", kind="usb")])
    linker = LinkerConfig()
    linker.persistence.state_dir = str(tmp_path / "linker")

    def finish(nodes: list[NodeConfig]) -> Any:
        config = PipelineConfig(output_dir=str(tmp_path / "run"), nodes=nodes, video_fourcc="MJPG")
        return _finish(config, nodes, linker, {}, False)

    written = finish([folder_node, usb_node])
    assert written.side_by_side is not None and _video_fps_and_count(written.side_by_side) == (4.0, 3)
    assert finish([usb_node]).summary["side_by_side"] == "not written: no file or folder camera"
