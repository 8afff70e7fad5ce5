"""``run_pipeline.py all`` in live mode stops cleanly on SIGTERM: nodes end their streams, the linker
snapshots, the summary is written, every role exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO_ROOT

CONFIG = """
output_dir: {out}
mode: live
side_by_side: false
nodes:
  - producer_id: node-a
    sources:
      - camera_id: cam-rgb
        modality: rgb
        kind: synthetic
        synthetic: {{seed: 1, duration_s: 600, fps: 10, width: 320, height: 240, num_people: 3, camera: 0}}
        detector: {{name: thermal}}
      - camera_id: cam-ir
        modality: thermal
        kind: synthetic
        synthetic: {{seed: 1, duration_s: 600, fps: 10, width: 320, height: 240, num_people: 3, camera: 1}}
        detector: {{name: thermal}}
    transport: {{endpoint: auto}}
linker:
  persistence: {{state_dir: {out}/linker}}
  service: {{publish_endpoint: "tcp://127.0.0.1:auto"}}
"""


def test_sigterm_stops_a_live_pipeline_cleanly(tmp_path):
    out = tmp_path / "live"
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG.format(out=out))
    process = subprocess.Popen(
        [sys.executable, "run_pipeline.py", "all", "--no-progress", "--config", str(config)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sightings = out / "sightings" / "node-a.jsonl"
    deadline = time.monotonic() + 120
    # Frame records come from the first frame on; wait until one carries a tracked person.
    while not (sightings.exists() and b'"track_id"' in sightings.read_bytes()):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the pipeline produced no sightings"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_signal"] is True
    assert set(summary["exit_codes"].values()) == {0}, summary["exit_codes"]
    assert (out / "linker" / "snapshot.bin").is_file()  # the linker's final snapshot
    node_log = (out / "logs" / "node-node-a.log").read_text()
    assert '"reason": "stopped"' in node_log  # the node ended its streams on the signal
    assert summary["sightings"] > 0
