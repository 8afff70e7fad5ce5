"""ZeroMQ transport throughput: sighting batches per second with full-size embeddings over loopback.

A sender process plays the edge node (:class:`edge.transport.Publisher`, bound, as the node does)
and sends ``--batches`` SightingBatch messages of ``B`` sightings, each with a 14336-d float16
embedding (28 KiB; MPANet's default embedding), as fast as it can; this process receives them with
:class:`edge.transport.Subscriber` and decodes every one (``decode_message``: header validation,
zero-copy embedding view) -- what the linker does before its decision loop. Reported per
(mode, B, security): batches/s and MiB/s at the receiver, and in live mode how many the sender
dropped at its high-water mark (replay drops nothing by design: the sender waits). ``--security
plain curve`` measures both plaintext and CurveZMQ (keys from :mod:`edge.keys` in a temporary
folder; the sender binds as the CURVE server with the receiver's key on its allow-list), so the
report shows the cost of encryption side by side (``curve_overhead`` per mode and B).

    python benchmarks/bench_transport.py [--dim 14336] [--sightings 1 4 16] [--batches 3000]
        [--security plain curve] [--out benchmarks/results/transport.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report_file import machine_info, write_report  # noqa: E402


def make_frames(dim: int, sightings: int, seq: int) -> list[bytes]:
    from edge.messages import SightingBatch, encode_message

    rng = np.random.default_rng(seq)
    emb = rng.standard_normal((sightings, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    batch = SightingBatch(
        producer_id="bench",
        camera_id="cam0",
        seq=seq,
        capture_ts=seq / 25.0,
        send_ts=time.time(),
        engine_id="benchmark0000000",
        modality="visible",
        frame_index=seq,
        frame_width=1920,
        frame_height=1080,
        boxes=[(10.0, 20.0, 110.0, 320.0)] * sightings,
        track_ids=list(range(sightings)),
        scores=[0.9] * sightings,
        quality=[1.0] * sightings,
        embedding_rows=list(range(sightings)),
        embedding_dtype="float16",
        embedding_shape=(sightings, dim),
    )
    return [bytes(f) for f in encode_message(batch, emb.astype(np.float16))]


def sender(
    mode: str, endpoint_queue, dim: int, sightings: int, batches: int, result_queue, curve: dict
) -> None:
    from edge.transport import Publisher, TransportSettings

    publisher = Publisher(TransportSettings(mode=mode, endpoint="tcp://127.0.0.1:*", **curve))
    endpoint_queue.put(publisher.endpoint)
    # Pre-encode a few distinct messages: the benchmark measures the wire, not numpy.
    frames = [make_frames(dim, sightings, k) for k in range(8)]
    endpoint_queue.get()  # the receiver is connected
    time.sleep(0.2)
    started = time.perf_counter()
    for k in range(batches):
        publisher.send_frames(frames[k % 8])
    elapsed = time.perf_counter() - started
    result_queue.put({"sent": publisher.sent, "dropped": publisher.dropped, "send_s": elapsed})
    publisher.close()
    # close() does not wait for the queue to drain: terminating the context does (up to the
    # linger). A process that exits without it loses what is still queued, replay or not.
    import zmq

    zmq.Context.instance().term()


def curve_settings(security: str, keys: Path | None) -> tuple[dict, dict]:
    """(sender, receiver) TransportSettings keyword arguments for ``security``."""
    if security == "plain" or keys is None:
        return {}, {}
    server = {
        "curve_secret_key_file": str(keys / "node.key_secret"),
        "curve_allowed_clients": (str(keys / "linker.key"),),
    }
    client = {
        "curve_secret_key_file": str(keys / "linker.key_secret"),
        "curve_server_key_file": str(keys / "node.key"),
    }
    return server, client


def run_one(
    mode: str, dim: int, sightings: int, batches: int, security: str = "plain", keys: Path | None = None
) -> dict:
    from edge.transport import Subscriber, TransportSettings

    server, client = curve_settings(security, keys)
    ctx = multiprocessing.get_context("spawn")
    endpoints, results = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=sender, args=(mode, endpoints, dim, sightings, batches, results, server))
    process.start()
    endpoint = endpoints.get(timeout=30)
    subscriber = Subscriber(TransportSettings(mode=mode, endpoint=endpoint, **client))
    endpoints.put("connected")
    received = 0
    nbytes = 0
    first = last = None
    while received < batches:
        decoded = subscriber.receive(timeout_ms=2000)
        if decoded is None:
            break  # live: the rest was dropped
        now = time.perf_counter()
        first = first if first is not None else now
        last = now
        received += 1
        nbytes += decoded.embeddings.nbytes if decoded.embeddings is not None else 0
    sent = results.get(timeout=60)
    process.join(30)
    subscriber.close()
    elapsed = (last - first) if received > 1 else float("nan")
    return {
        "mode": mode,
        "security": security,
        "dim": dim,
        "sightings_per_batch": sightings,
        "batch_mib": nbytes / max(received, 1) / 2**20,
        "batches_sent": sent["sent"],
        "dropped_by_sender": sent["dropped"],
        "batches_received": received,
        "malformed": subscriber.receiver.malformed,
        "batches_per_s": (received - 1) / elapsed,
        "sightings_per_s": (received - 1) * sightings / elapsed,
        "mib_per_s": nbytes / 2**20 / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=14336)
    parser.add_argument("--sightings", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--modes", nargs="+", default=["replay", "live"], choices=["replay", "live"])
    parser.add_argument("--security", nargs="+", default=["plain", "curve"], choices=["plain", "curve"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transport.json"))
    args = parser.parse_args(argv)
    import tempfile

    from edge.keys import write_key_pair

    results = []
    with tempfile.TemporaryDirectory() as folder:
        keys = Path(folder)
        write_key_pair(keys, "node")
        write_key_pair(keys, "linker")
        for mode in args.modes:
            for sightings in args.sightings:
                for security in args.security:
                    results.append(run_one(mode, args.dim, sightings, args.batches, security, keys))
                    print(json.dumps(results[-1]), flush=True)
    overhead = {}
    for row in results:
        if row["security"] != "curve":
            continue
        plain = [r for r in results if r["security"] == "plain" and r["mode"] == row["mode"]]
        plain = [r for r in plain if r["sightings_per_batch"] == row["sightings_per_batch"]]
        if plain and row["mode"] == "replay":  # live rates include the sender's drops: not comparable
            overhead[f"{row['mode']}/B={row['sightings_per_batch']}"] = {
                "plain_batches_per_s": plain[0]["batches_per_s"],
                "curve_batches_per_s": row["batches_per_s"],
                "curve_throughput_ratio": row["batches_per_s"] / plain[0]["batches_per_s"],
            }
    report = {
        "benchmark": "edge.transport Publisher -> Subscriber over loopback, receiver decodes every batch",
        "curve_overhead": overhead,
        "command": "python benchmarks/bench_transport.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "results": results,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
