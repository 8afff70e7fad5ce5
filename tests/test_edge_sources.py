"""Edge sources: every source's contract (frames, modality, timestamps, end of stream), live drops and
reconnects, corrupt input, and the thermal 16-bit stretch against a hand-made frame."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.modality import Modality
from edge.sources import Frame, SourceError, StreamEnd, ThermalNormalizer, infrared_to_3ch
from edge.sources.readers import FolderReader, UrlReader, UsbReader, VideoFileReader
from edge.sources.streams import LiveSource, ReplaySource


def _write_video(path: Path, frames: int = 6, fps: float = 10.0, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((size[1], size[0], 3), (20 + 30 * i) % 256, np.uint8)  # brightness = index (< 8)
        writer.write(image)
    writer.release()
    return path


def _brightness_index(frame: Frame) -> int:
    return int(round((float(frame.image.mean()) - 20) / 30))


def test_video_file_replay_yields_every_frame_in_order_with_stream_timestamps(tmp_path: Path) -> None:
    source = ReplaySource(VideoFileReader(_write_video(tmp_path / "v.avi")), "cam0", "rgb")
    frames = list(source)
    assert [f.index for f in frames] == list(range(6))
    assert [_brightness_index(f) for f in frames] == list(range(6))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(6)])
    assert all(f.modality is Modality.VISIBLE and f.camera_id == "cam0" for f in frames)
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    end = source.next_frame()
    assert isinstance(end, StreamEnd) and end.reason == "source_ended"
    assert source.next_frame() == end  # the end is sticky
    assert source.stats().frames_delivered == 6 and source.stats().state == "ended"


def test_replay_max_frames_pacing_and_fps_override(tmp_path: Path) -> None:
    source = ReplaySource(
        VideoFileReader(_write_video(tmp_path / "v.avi")), "c", "visible", fps=20.0, pace=True, max_frames=3
    )
    start = time.monotonic()
    frames = list(source)
    assert len(frames) == 3 and frames[-1].timestamp == pytest.approx(0.1)
    assert time.monotonic() - start >= 0.09  # paced: frame 2 is due 0.1 s after frame 0


def test_corrupt_and_missing_videos_are_clear_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(SourceError, match="garbage.mp4"):
        ReplaySource(VideoFileReader(garbage), "c", "visible").start()
    truncated = tmp_path / "truncated.avi"
    data = _write_video(tmp_path / "full.avi").read_bytes()
    truncated.write_bytes(data[: len(data) // 4])
    with pytest.raises(SourceError, match="truncated.avi"):
        list(ReplaySource(VideoFileReader(truncated), "c", "visible"))
    with pytest.raises(SourceError, match="does not exist"):
        VideoFileReader(tmp_path / "nope.mp4").open()


def test_folder_replay_is_sorted_and_needs_a_frame_rate(tmp_path: Path) -> None:
    for name, value in (("b_002.png", 2), ("a_001.png", 1), ("c_010.png", 10)):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8), value, np.uint8))
    (tmp_path / "notes.txt").write_text("not a frame")
    with pytest.raises(SourceError, match="no frame rate"):
        ReplaySource(FolderReader(tmp_path), "ir", "thermal").start()
    frames = list(ReplaySource(FolderReader(tmp_path), "ir", "thermal", fps=4.0))
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 10]  # 8-bit passes through unchanged
    assert [f.timestamp for f in frames] == [0.0, 0.25, 0.5]
    assert frames[0].modality is Modality.INFRARED and frames[0].image.shape == (8, 8, 3)
    with pytest.raises(SourceError, match="no images"):
        FolderReader(tmp_path, pattern="*.tiff").open()
    with pytest.raises(SourceError, match="does not exist"):
        FolderReader(tmp_path / "missing").open()


def test_unreadable_frame_in_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "000.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "001.png").write_bytes(b"not a png")
    source = ReplaySource(FolderReader(tmp_path), "c", "visible", fps=1.0)
    with pytest.raises(SourceError, match="001.png"):
        list(source)


def test_sixteen_bit_thermal_folder_is_stretched_to_eight_bits(tmp_path: Path) -> None:
    frame = np.full((40, 40), 3000, np.uint16)
    frame[10:30, 15:25] = 3400  # a warm person
    cv2.imwrite(str(tmp_path / "0.png"), frame)
    (out,) = list(ReplaySource(FolderReader(tmp_path), "ir", "infrared", fps=1.0))
    assert out.image.dtype == np.uint8
    assert out.image[20, 20, 0] == 255 and out.image[0, 0, 0] == 0
    assert (out.image[..., 0] == out.image[..., 2]).all()


def test_thermal_percentile_stretch_matches_a_hand_made_frame() -> None:
    # 100 x 100 frame: background 1000, a 20 x 20 person at 2000, one dead pixel (0) and one hot
    # pixel (65535). With the 1st / 99th percentiles over all pixels (sample_step 1) the range is
    # [1000, 2000]: the outliers do not stretch it, they are clipped.
    frame = np.full((100, 100), 1000, np.uint16)
    frame[40:60, 40:60] = 2000
    frame[0, 0] = 0
    frame[99, 99] = 65535
    frame[5, 5] = 1500  # exactly half way
    normalizer = ThermalNormalizer(low_percentile=1, high_percentile=99, sample_step=1)
    out = normalizer(frame)
    assert out.dtype == np.uint8 and out.shape == (100, 100)
    assert out[10, 10] == 0 and out[50, 50] == 255
    assert out[0, 0] == 0 and out[99, 99] == 255
    assert out[5, 5] == 128  # (1500 - 1000) / 1000 * 255 = 127.5, rounded half up
    # A min/max stretch would have been ruled by the outliers:
    assert ThermalNormalizer(0, 100, sample_step=1)(frame)[50, 50] == round(2000 / 65535 * 255)


def test_thermal_smoothing_damps_range_jumps_and_8bit_passthrough() -> None:
    base = np.zeros((50, 50), np.uint16)
    base[:, 25:] = 1000
    bright = base + 1000
    smooth = ThermalNormalizer(low_percentile=0, high_percentile=100, smoothing=0.5, sample_step=1)
    smooth(base)  # range [0, 1000]
    second = smooth(bright)  # raw range [1000, 2000], smoothed to [500, 1500]
    assert second[0, 0] == round((1000 - 500) / 1000 * 255)
    eight = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert (ThermalNormalizer()(eight) == eight).all()
    assert (ThermalNormalizer()(cv2.merge((eight, eight, eight))) == eight).all()
    with pytest.raises(ValueError, match="percentiles"):
        ThermalNormalizer(low_percentile=50, high_percentile=10)
    assert infrared_to_3ch(eight).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="replicate"):
        infrared_to_3ch(eight, "colormap")


def test_live_source_drops_the_oldest_frames_when_the_pipeline_is_behind(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "v.avi", frames=30, fps=200.0)
    clock_start = time.time()
    source = LiveSource(lambda: VideoFileReader(video), "cam0", "visible", queue_size=2, reconnect=False)
    source.start()
    deadline = time.monotonic() + 5
    while source.stats().state != "ended" and time.monotonic() < deadline:
        time.sleep(0.02)  # a slow pipeline: take nothing while the camera delivers 30 frames
    frames = []
    while True:
        item = source.next_frame(timeout_s=1.0)
        if isinstance(item, StreamEnd):
            break
        frames.append(item)
    stats = source.stats()
    assert item.reason == "source_ended"
    assert stats.frames_read == 30 and stats.frames_dropped == 28
    assert [f.index for f in frames] == [28, 29]  # latest-frame semantics: the newest survive
    assert all(clock_start <= f.timestamp <= time.time() for f in frames)  # wall-clock timestamps
    source.close()


def test_live_source_reconnects_with_backoff_when_its_file_disappears(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "camera.avi", frames=5, fps=50.0)
    backup = tmp_path / "backup.avi"
    shutil.copy(video, backup)
    source = LiveSource(
        lambda: VideoFileReader(video),
        "cam0",
        "visible",
        queue_size=100,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    source.start()
    first = [source.next_frame(timeout_s=2.0) for _ in range(5)]
    assert all(isinstance(f, Frame) for f in first)
    video.unlink()  # the camera goes away: the stream ends, re-opening fails
    deadline = time.monotonic() + 5
    while source.stats().state != "reconnecting" or "does not exist" not in source.stats().last_error:
        assert time.monotonic() < deadline, source.stats()
        time.sleep(0.02)
    assert source.next_frame(timeout_s=0.1) is None  # no frames while the camera is away
    shutil.copy(backup, video)  # it comes back
    item = source.next_frame(timeout_s=5.0)
    assert isinstance(item, Frame) and item.index == 5  # indices continue across reconnects
    stats = source.stats()
    assert stats.reconnects >= 1 and stats.disconnects >= 1
    source.close()
    assert source.next_frame(timeout_s=0) == StreamEnd("cam0", "stopped")


def test_live_source_gives_up_after_max_attempts_with_an_error_end(tmp_path: Path) -> None:
    source = LiveSource(
        lambda: VideoFileReader(tmp_path / "never.avi"),
        "cam0",
        "visible",
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        max_reconnect_attempts=2,
    )
    source.start()
    end = source.next_frame(timeout_s=5.0)
    assert isinstance(end, StreamEnd) and end.reason == "error"
    assert "3 failed attempt(s)" in end.detail and "never.avi" in end.detail
    with pytest.raises(SourceError, match="never.avi"):
        list(source)


def test_live_source_close_ends_the_stream_and_stops_the_grabber(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "v.avi", frames=5, fps=10.0)
    source = LiveSource(lambda: VideoFileReader(video), "cam0", "visible")
    source.start()
    assert isinstance(source.next_frame(timeout_s=2.0), Frame)
    closer = threading.Timer(0.1, source.close)
    closer.start()
    items = [source.next_frame(timeout_s=3.0) for _ in range(10)]
    assert StreamEnd("cam0", "stopped") in items
    closer.join()
    assert not source._thread.is_alive()


def test_url_and_usb_readers_fail_clearly_without_a_camera() -> None:
    with pytest.raises(SourceError, match="must start with"):
        UrlReader("camera.local/stream")
    reader = UrlReader("rtsp://user:secret@127.0.0.1:9/stream", open_timeout_ms=500, read_timeout_ms=500)
    assert "secret" not in reader.name
    with pytest.raises(SourceError, match=r"rtsp://user:\*\*\*@127.0.0.1:9/stream"):
        reader.open()
    with pytest.raises(SourceError, match="usb:97"):
        UsbReader(97).open()


def test_url_source_reads_an_http_stream(tmp_path: Path) -> None:
    import functools
    import http.server

    _write_video(tmp_path / "stream.avi", frames=4, fps=10.0)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stream.avi"
        frames = list(ReplaySource(UrlReader(url, 3000, 3000), "web", "visible", fps=10.0))
        assert [_brightness_index(f) for f in frames] == [0, 1, 2, 3]
    finally:
        server.shutdown()
        server.server_close()


def test_synthetic_scene_reader_is_a_source(tmp_path: Path) -> None:
    from edge.scene import SceneSettings, SyntheticSceneReader

    settings = SceneSettings(seed=3, duration_s=0.5, fps=10.0, width=160, height=120, num_people=2)
    frames = list(ReplaySource(SyntheticSceneReader(settings, camera=1), "cam-ir", "infrared"))
    assert len(frames) == 5 and frames[1].timestamp == pytest.approx(0.1)
    assert frames[0].image.shape == (120, 160, 3)
    assert (frames[0].image[..., 0] == frames[0].image[..., 1]).all()  # grey replicated


def test_importing_edge_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, edge, edge.messages, edge.sources.streams, edge.detect, edge.crops, edge.aggregation, "
        "edge.config, edge.scene, edge.sinks, edge.node\n"
        "heavy = sorted(m for m in ('torch', 'zmq', 'ultralytics', 'faiss', 'tensorrt') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
