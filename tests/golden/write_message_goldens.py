"""Write the golden encoded messages of ``tests/test_messages.py`` (run only on a deliberate schema change).

    python tests/golden/write_message_goldens.py

Each message becomes ``messages_v<version>_<name>.frame<i>.bin`` (one file per ZeroMQ frame). The test
checks that today's encoder produces these bytes exactly and that the decoder reads them back; when
the schema changes, bump ``SCHEMA_VERSION``, write new goldens and keep the old ones for the
compatibility story in docs/messages.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.files import atomic_write_bytes  # noqa: E402
from edge.messages import (  # noqa: E402
    SCHEMA_VERSION,
    EndOfStream,
    Heartbeat,
    IdentityUpdate,
    Message,
    SightingBatch,
    encode_message,
)

GOLDEN_DIR = Path(__file__).resolve().parent


def golden_messages() -> dict[str, tuple[Message, np.ndarray | None]]:
    """The canonical messages (fixed values) that the golden files hold."""
    embeddings = np.array([[0.6, 0.8, 0.0], [0.0, -1.0, 0.0]], dtype=np.float16)
    common = {"producer_id": "edge-a", "send_ts": 1700000000.25, "engine_id": "0123456789abcdef"}
    return {
        "sightings": (
            SightingBatch(
                **common,
                camera_id="cam-rgb",
                seq=41,
                capture_ts=1700000000.125,
                modality="visible",
                frame_index=120,
                frame_width=640,
                frame_height=480,
                boxes=[(10.5, 20.0, 60.5, 180.0), (300.0, 100.0, 340.0, 220.0), (0.0, 0.0, 8.0, 20.0)],
                track_ids=[3, 7, 9],
                scores=[0.875, 0.5, 0.25],
                quality=[1.0, 0.75, 0.0],
                embedding_rows=[0, 1],
                embedding_dtype="float16",
                embedding_shape=(2, 3),
            ),
            embeddings,
        ),
        "sightings_empty": (
            SightingBatch(
                **common,
                camera_id="cam-ir",
                seq=0,
                capture_ts=4.0,
                modality="infrared",
                frame_index=0,
                frame_width=320,
                frame_height=240,
            ),
            None,
        ),
        "heartbeat": (
            Heartbeat(
                producer_id="edge-a",
                camera_id="",
                seq=5,
                capture_ts=1700000000.25,
                send_ts=1700000000.25,
                engine_id="0123456789abcdef",
                mode="live",
                uptime_s=12.5,
                camera_ids=["cam-rgb", "cam-ir"],
                stage_rates_hz={"capture/cam-rgb": 25.0, "detect/cam-rgb": 24.5, "embed": 30.0},
                stage_latency_ms={"detect/cam-rgb": 12.25, "embed": 4.5},
                queue_depths={"frames/cam-rgb": 1, "frames/cam-ir": 0},
                drop_counts={"frames/cam-rgb": 17, "publish": 0},
                reconnects={"cam-rgb": 1},
            ),
            None,
        ),
        "end_of_stream": (
            EndOfStream(
                **common,
                camera_id="cam-rgb",
                seq=42,
                capture_ts=1700000000.25,
                reason="source_ended",
                frames_read=121,
                frames_dropped=0,
                messages_sent=42,
            ),
            None,
        ),
        "identity": (
            IdentityUpdate(
                producer_id="linker",
                camera_id="cam-ir",
                seq=3,
                capture_ts=4.0,
                send_ts=1700000000.5,
                engine_id="0123456789abcdef",
                global_id=12,
                track_id=7,
                source_producer_id="edge-a",
                source_seq=40,
                frame_index=100,
                modality="infrared",
                event="revised",
                score=0.625,
                matched_modality="visible",
                matched_camera_id="cam-rgb",
                previous_global_id=15,
            ),
            None,
        ),
    }


def golden_path(name: str, frame: int, version: int = SCHEMA_VERSION) -> Path:
    return GOLDEN_DIR / f"messages_v{version}_{name}.frame{frame}.bin"


def main() -> None:
    for name, (message, embeddings) in golden_messages().items():
        for index, frame in enumerate(encode_message(message, embeddings)):
            atomic_write_bytes(golden_path(name, index), bytes(frame))
            print(golden_path(name, index))


if __name__ == "__main__":
    main()
