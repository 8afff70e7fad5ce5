"""Linker throughput and memory with 1k, 10k and 100k identities in the gallery.

For each (embedding dim, gallery size, storage dtype) a fresh subprocess builds a gallery of random
unit identities (one prototype each, half visible, half infrared) and then streams sighting batches
through :class:`edge.linking.linker.IdentityLinker` -- the full decision path: evidence update,
prototype refresh, exact faiss search of both modality stores, rules, events. Four cameras (two
visible, two infrared) send one batch per frame with ``--tracks`` sightings; each sighting is a
noisy view of a gallery identity (so decisions are real matches); tracks live 10 frames. A track
is searched at its first decision and then every ``reevaluate_every_sightings`` sightings
(``--reevaluate-every``; 0 keeps the default). Reported per configuration:

- ``sightings_per_s`` (and batch latency mean / p95 in ms) of the decision loop,
- ``search_ms_nq1`` / ``search_ms_nq16``: one ``match_many`` call with 1 and 16 queries,
- ``gallery_mb`` (vector storage held by faiss), ``rss_mb`` after building, ``peak_rss_mb``,
- ``build_s``: filling the gallery,
- with ``--snapshot-dir``: ``snapshot_s`` / ``snapshot_mb`` (writing the state file) and ``recover_s``
  (rebuilding the linker from it).

Index: exact inner product on L2-normalised vectors (faiss ``IndexFlatIP`` for float32,
``IndexScalarQuantizer(QT_fp16)`` for float16), slots updated in place (see docs/linker.md).

    python benchmarks/bench_linker.py [--dims 14336 2048 256] [--sizes 1000 10000 100000]
        [--dtypes float32 float16] [--max-gb 12] [--out benchmarks/results/linker.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report_file import machine_info, write_report  # noqa: E402
from common.memory import peak_rss_mb  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def estimated_gb(dim: int, size: int, dtype: str) -> float:
    """Peak bytes in GB: the stores (plus one block being grown), the generation chunk, Python."""
    per_vector = dim * (4 if dtype == "float32" else 2)
    return (size * per_vector + 2 * 64 * 2**20 + 1024 * dim * 4) / 1e9 + 0.3


def run_one(
    dim: int,
    size: int,
    dtype: str,
    tracks_per_batch: int,
    min_seconds: float,
    threads: int,
    snapshot_dir: str = "",
    reevaluate_every: int = 0,
    seed: int = 0,
) -> dict:
    import faiss

    faiss.omp_set_num_threads(threads)

    from common.modality import Modality
    from edge.linking.assignment import MatchingRules
    from edge.linking.events import EngineAdopted
    from edge.linking.gallery import GalleryConfig
    from edge.linking.linker import IdentityLinker
    from edge.messages import SightingBatch

    rng = np.random.default_rng(seed)
    gallery_config = GalleryConfig(storage_dtype=dtype, ttl_s=1e9, max_identities=4 * size, max_memory_mb=1e7)
    rules = MatchingRules()
    if reevaluate_every:
        rules = dataclasses.replace(rules, reevaluate_every_sightings=reevaluate_every)
    linker = IdentityLinker(rules, gallery_config)
    linker.apply(EngineAdopted(1, "benchmark0000000", dim))
    gallery = linker.gallery
    started = time.perf_counter()
    chunk = 1024
    anchors = np.zeros((0, dim), np.float32)  # a few identities the stream will look like
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        block = rng.standard_normal((n, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        if len(anchors) < 256:
            anchors = np.concatenate([anchors, block[: 256 - len(anchors)]])
        for i in range(n):
            gid = gallery.create_identity(0.0).global_id
            modality = Modality.VISIBLE if gid % 2 == 0 else Modality.INFRARED
            gallery.restore_prototype(gid, modality, "enrol", None, 1.0, 0.0, block[i])
    build_s = time.perf_counter() - started
    built_rss = rss_mb()

    # Search alone: nq = 1 and 16.
    queries = anchors[:16] + 0.3 * rng.standard_normal((16, dim), dtype=np.float32) / np.sqrt(dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    search = {}
    for nq in (1, 16):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            gallery.match_many(queries[:nq], Modality.VISIBLE, [None] * nq, top_k=5)
            times.append(time.perf_counter() - t)
        search[nq] = 1000 * min(times)

    # The decision loop.
    cameras = [
        ("rgb0", Modality.VISIBLE),
        ("rgb1", Modality.VISIBLE),
        ("ir0", Modality.INFRARED),
        ("ir1", Modality.INFRARED),
    ]
    seqs = {c: 0 for c, _ in cameras}
    latencies = []
    cpu = []
    sightings = 0
    frame = 0
    next_track = 0
    live: dict[str, list[tuple[int, int, int]]] = {c: [] for c, _ in cameras}  # (track, anchor, frames left)
    loop_started = time.perf_counter()
    while True:
        for camera, modality in cameras:
            tracks = live[camera]
            tracks[:] = [(t, a, left - 1) for t, a, left in tracks if left > 1]
            while len(tracks) < tracks_per_batch:
                tracks.append((next_track, int(rng.integers(len(anchors))), 10))
                next_track += 1
            ids = [t for t, _, _ in tracks]
            emb = anchors[[a for _, a, _ in tracks]] + 0.5 * rng.standard_normal(
                (len(tracks), dim), dtype=np.float32
            ) / np.sqrt(dim)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            batch = SightingBatch(
                producer_id="bench",
                camera_id=camera,
                seq=seqs[camera],
                capture_ts=frame / 25.0,
                send_ts=0.0,
                engine_id="benchmark0000000",
                modality=modality,
                frame_index=frame,
                frame_width=1920,
                frame_height=1080,
                boxes=[(0.0, 0.0, 10.0, 20.0)] * len(ids),
                track_ids=ids,
                scores=[0.9] * len(ids),
                quality=[1.0] * len(ids),
                embedding_rows=list(range(len(ids))),
                embedding_dtype="float16",
                embedding_shape=(len(ids), dim),
            )
            seqs[camera] += 1
            rows = emb.astype(np.float16)
            t, c = time.perf_counter(), time.process_time()
            linker.observe(batch, rows)
            latencies.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            sightings += len(ids)
        frame += 1
        elapsed = time.perf_counter() - loop_started
        if (elapsed >= min_seconds and len(latencies) >= 8) or len(latencies) >= 2000:
            break
    counters = linker.counters
    gallery_mb = gallery.nbytes / 2**20
    snapshot = {}
    if snapshot_dir:
        from edge.linking.persistence import SNAPSHOT_NAME, recover, save_snapshot

        t = time.perf_counter()
        path = save_snapshot(snapshot_dir, linker)
        snapshot["snapshot_s"] = time.perf_counter() - t
        snapshot["snapshot_mb"] = path.stat().st_size / 2**20
        peak_before = peak_rss_mb()
        del gallery
        linker = None
        t = time.perf_counter()
        recovered = recover(snapshot_dir, MatchingRules(), gallery_config)
        snapshot["recover_s"] = time.perf_counter() - t
        snapshot["recovered_identities"] = len(recovered.linker.gallery.identities)
        snapshot["peak_rss_mb_before_recover"] = peak_before
        (Path(snapshot_dir) / SNAPSHOT_NAME).unlink()
    return {
        "dim": dim,
        "identities": size,
        "storage_dtype": dtype,
        "tracks_per_batch": tracks_per_batch,
        "reevaluate_every_sightings": rules.reevaluate_every_sightings,
        "batches": len(latencies),
        "sightings": sightings,
        "sightings_per_s": sightings / sum(latencies),
        "sightings_per_cpu_s": sightings / max(sum(cpu), 1e-9),
        "batch_ms_mean": 1000 * statistics.fmean(latencies),
        "batch_ms_p95": 1000 * float(np.percentile(latencies, 95)),
        "search_ms_nq1": search[1],
        "search_ms_nq16": search[16],
        "decisions": counters.decisions_new + counters.decisions_matched + counters.decisions_revised,
        "gallery_mb": gallery_mb,
        "rss_mb_after_build": built_rss,
        "peak_rss_mb": peak_rss_mb(),
        "build_s": build_s,
        "faiss_threads": faiss.omp_get_max_threads(),
        **snapshot,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[14336, 2048, 256])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=["float32", "float16"])
    parser.add_argument("--tracks", type=int, default=4, help="sightings per batch (per camera frame)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="least time per decision loop")
    parser.add_argument("--max-gb", type=float, default=12.0, help="skip configurations estimated above this")
    parser.add_argument(
        "--threads", type=int, default=1, help="faiss OpenMP threads (the service's default: 1)"
    )
    parser.add_argument(
        "--snapshot-dir", default="", help="also time a snapshot + recovery in this directory"
    )
    parser.add_argument(
        "--reevaluate-every", type=int, default=0, help="matching.reevaluate_every_sightings (0: the default)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "linker.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # dim,size,dtype: run one configuration here
    args = parser.parse_args(argv)
    if args.one:
        dim, size, dtype = args.one.split(",")
        result = run_one(
            int(dim),
            int(size),
            dtype,
            args.tracks,
            args.min_seconds,
            args.threads,
            args.snapshot_dir,
            args.reevaluate_every,
        )
        print(json.dumps(result))
        return 0
    results = []
    for dim in args.dims:
        for size in args.sizes:
            for dtype in args.dtypes:
                need = estimated_gb(dim, size, dtype)
                if need > args.max_gb:
                    results.append(
                        {
                            "dim": dim,
                            "identities": size,
                            "storage_dtype": dtype,
                            "skipped": f"needs about {need:.1f} GB > --max-gb {args.max_gb}",
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
                    continue
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{dim},{size},{dtype}",
                    "--tracks",
                    str(args.tracks),
                    "--min-seconds",
                    str(args.min_seconds),
                    "--threads",
                    str(args.threads),
                    "--snapshot-dir",
                    args.snapshot_dir,
                    "--reevaluate-every",
                    str(args.reevaluate_every),
                ]
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    results.append(
                        {
                            "dim": dim,
                            "identities": size,
                            "storage_dtype": dtype,
                            "failed": done.stderr[-2000:],
                        }
                    )
                else:
                    results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "linker decision loop (edge.linking.linker.IdentityLinker) over a prefilled gallery",
        "command": "python benchmarks/bench_linker.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "index": "exact inner product: faiss IndexFlatIP (float32) / IndexScalarQuantizer QT_fp16 (float16)",
        "machine": machine_info(),
        "results": results,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
