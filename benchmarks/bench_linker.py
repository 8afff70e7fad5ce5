"""Linker throughput, latency, memory and search recall with 1k .. 1M identities in the gallery.

For each (embedding dim, gallery size, storage dtype, search) a fresh subprocess builds a gallery of
unit identities (one prototype each, half visible, half infrared) and then streams sighting batches
through :class:`edge.linking.linker.IdentityLinker` -- the full decision path: evidence update,
prototype refresh, search of both modality stores (``--searches``: ``exact``, today's full scan, and
``two_stage``, compact index + exact re-rank, see :mod:`edge.linking.index`), rules, events.

Identities are not i.i.d. random vectors (whose cosines are all ~1/sqrt(D), which makes any
approximate index look perfect): half of each vector's energy lies in a shared 32-d latent space
with a decaying spectrum, so different identities have cosines spread like a real embedding's
(std ~0.1), and the nearest wrong identity is much closer than chance. Four cameras (two
visible, two infrared) send one batch per frame with ``--tracks`` sightings; each sighting is a
noisy view of a gallery identity (so decisions are real matches); tracks live 10 frames. A track
is searched at its first decision and then every ``reevaluate_every_sightings`` sightings
(``--reevaluate-every``; 0 keeps the default). Reported per configuration:

- ``sightings_per_s`` (and batch latency mean / p50 / p95 in ms: the time ``observe`` takes for one
  camera frame, i.e. how late its decisions come out) of the decision loop,
- ``recall_at_1``: for ``--recall-queries`` noisy views of identities drawn from the whole gallery
  (cosine ~0.7 with their identity, like a single sighting), how often the search's best identity
  (over both stores) is the exhaustive search's best; ``recall_top5``: the share of the exhaustive
  top-5 identities found; ``max_cosine_error``: the largest difference of a reported cosine from
  the exact one (0 when re-ranking is exact),
- ``search_ms_nq1`` / ``search_ms_nq16``: one ``match_many`` call with 1 and 16 queries,
- ``gallery_mb`` (vector storage held by faiss), ``rss_mb`` after building, ``peak_rss_mb``,
- ``build_s``: filling the gallery,
- with ``--snapshot-dir``: ``snapshot_s`` / ``snapshot_mb`` (writing the state file) and ``recover_s``
  (rebuilding the linker from it).

Index: exact inner product on L2-normalised vectors (faiss ``IndexFlatIP`` for float32,
``IndexScalarQuantizer(QT_fp16)`` for float16), slots updated in place (see docs/linker.md).

    python benchmarks/bench_linker.py [--dims 14336 2048 256] [--sizes 1000 10000 100000]
        [--dtypes float32 float16] [--searches exact two_stage] [--max-gb 12]
        [--out benchmarks/results/linker.json]
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


def estimated_gb(dim: int, size: int, dtype: str, search: str = "exact", compact_dim: int = 256) -> float:
    """Peak bytes in GB: the stores (plus one block being grown), the generation chunk, Python, and
    for ``two_stage`` the compact vectors (float32 master + float16 IVF codes) and the projection."""
    per_vector = dim * (4 if dtype == "float32" else 2)
    compact = 0.0
    if search == "two_stage":
        d = min(dim, compact_dim)
        compact = size * d * 6 + dim * d * 4 * 2
    return (size * per_vector + compact + 2 * 64 * 2**20 + 1024 * dim * 4) / 1e9 + 0.3


LATENT = 32  # the shared latent space of the synthetic identities


def make_identities(rng: np.random.Generator, basis: np.ndarray, n: int) -> np.ndarray:
    """(n, D) float32 unit vectors: half their energy in ``basis`` ((LATENT, D), spectrum decaying
    as 1/sqrt(rank)), half i.i.d. (cosines between identities spread like a learned embedding's)."""
    dim = basis.shape[1]
    z = rng.standard_normal((n, LATENT), dtype=np.float32) / np.sqrt(
        np.arange(1, LATENT + 1, dtype=np.float32)
    )
    shared = z @ basis
    shared /= np.linalg.norm(shared, axis=1, keepdims=True)
    own = rng.standard_normal((n, dim), dtype=np.float32)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    out = shared + own  # equal energy
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def noisy_views(rng: np.random.Generator, vectors: np.ndarray, noise: float) -> np.ndarray:
    """Unit vectors at cosine ~1/sqrt(1 + noise^2) from ``vectors`` (one sighting of the identity)."""
    dim = vectors.shape[1]
    out = vectors + noise * rng.standard_normal(vectors.shape, dtype=np.float32) / np.sqrt(dim)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def best_identities(matches: dict, count: int) -> list[int]:
    """Global ids of ``match_many``'s result for one query, best cosine (same or cross) first."""
    ranked = sorted(matches.values(), key=lambda m: (-max(m.cosine_same, m.cosine_cross), m.global_id))
    return [m.global_id for m in ranked[:count]]


def measure_recall(gallery, rng: np.random.Generator, count: int, noise: float) -> dict:
    """Two-stage vs exhaustive search on ``count`` noisy views of identities across the gallery."""
    from common.modality import Modality

    if gallery.indexes is None or count <= 0:
        return {}
    gids = sorted(gallery.identities)
    picked = rng.choice(len(gids), size=min(count, len(gids)), replace=False)
    queries, modalities = [], []
    for i in picked.tolist():
        identity = gallery.identities[gids[i]]
        queries.append(gallery.prototype_vectors(identity)[0])
        modalities.append(identity.prototypes[0].modality)
    queries = noisy_views(rng, np.stack(queries), noise)
    top1 = top5 = 0.0
    error = 0.0
    timings = {"two_stage": 0.0, "exact": 0.0}
    for modality in Modality:
        rows = [i for i, m in enumerate(modalities) if m is modality]
        if not rows:
            continue
        q = queries[rows]
        t = time.perf_counter()
        fast = gallery.match_many(q, modality, [None] * len(rows), top_k=5)
        timings["two_stage"] += time.perf_counter() - t
        t = time.perf_counter()
        slow = gallery.match_many(q, modality, [None] * len(rows), top_k=5, exact=True)
        timings["exact"] += time.perf_counter() - t
        for got, want in zip(fast, slow):
            best_got, best_want = best_identities(got, 5), best_identities(want, 5)
            top1 += float(best_got[:1] == best_want[:1])
            top5 += len(set(best_got) & set(best_want)) / max(len(best_want), 1)
            for gid in set(got) & set(want):
                for name in ("cosine_same", "cosine_cross"):
                    a, b = getattr(got[gid], name), getattr(want[gid], name)
                    if np.isfinite(a) and np.isfinite(b):
                        error = max(error, abs(a - b))
    n = len(queries)
    return {
        "recall_queries": n,
        "recall_at_1": top1 / n,
        "recall_top5": top5 / n,
        "max_cosine_error": error,
        "recall_search_ms_per_query": {k: 1000 * v / n for k, v in timings.items()},
    }


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
    search: str = "exact",
    recall_queries: int = 1000,
    query_noise: float = 1.0,
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
    gallery_config = GalleryConfig(
        storage_dtype=dtype, ttl_s=1e9, max_identities=4 * size, max_memory_mb=1e7, search=search
    )
    rules = MatchingRules()
    if reevaluate_every:
        rules = dataclasses.replace(rules, reevaluate_every_sightings=reevaluate_every)
    linker = IdentityLinker(rules, gallery_config)
    linker.apply(EngineAdopted(1, "benchmark0000000", dim))
    gallery = linker.gallery
    basis = rng.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(dim)
    started = time.perf_counter()
    chunk = 1024
    anchors = np.zeros((0, dim), np.float32)  # a few identities the stream will look like
    from tqdm import tqdm

    for start in tqdm(
        range(0, size, chunk), desc=f"build {size}x{dim} {dtype} {search}", disable=size < 50_000
    ):
        n = min(chunk, size - start)
        block = make_identities(rng, basis, n)
        if len(anchors) < 256:
            anchors = np.concatenate([anchors, block[: 256 - len(anchors)]])
        for i in range(n):
            gid = gallery.create_identity(0.0).global_id
            modality = Modality.VISIBLE if gid % 2 == 0 else Modality.INFRARED
            gallery.restore_prototype(gid, modality, "enrol", None, 1.0, 0.0, block[i])
    if gallery.indexes is not None:
        for index in gallery.indexes.values():
            index.flush()  # train / write what the build left pending (counted in build_s)
    build_s = time.perf_counter() - started
    built_rss = rss_mb()
    recall = measure_recall(gallery, np.random.default_rng(seed + 1), recall_queries, query_noise)

    # Search alone: nq = 1 and 16.
    queries = noisy_views(rng, anchors[:16], query_noise)
    search_ms = {}
    for nq in (1, 16):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            gallery.match_many(queries[:nq], Modality.VISIBLE, [None] * nq, top_k=5)
            times.append(time.perf_counter() - t)
        search_ms[nq] = 1000 * min(times)

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
            emb = noisy_views(rng, anchors[[a for _, a, _ in tracks]], query_noise)
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
    index_kinds, index_mb = _index_kinds(gallery), gallery.index_nbytes / 2**20
    loop_rss = rss_mb()
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
        "search": search,
        "index": index_kinds,
        "tracks_per_batch": tracks_per_batch,
        "reevaluate_every_sightings": rules.reevaluate_every_sightings,
        "batches": len(latencies),
        "sightings": sightings,
        "sightings_per_s": sightings / sum(latencies),
        "sightings_per_cpu_s": sightings / max(sum(cpu), 1e-9),
        "batch_ms_mean": 1000 * statistics.fmean(latencies),
        "batch_ms_p50": 1000 * float(np.percentile(latencies, 50)),
        "batch_ms_p95": 1000 * float(np.percentile(latencies, 95)),
        "search_ms_nq1": search_ms[1],
        "search_ms_nq16": search_ms[16],
        "decisions": counters.decisions_new + counters.decisions_matched + counters.decisions_revised,
        "gallery_mb": gallery_mb,
        "index_mb": index_mb,
        **recall,
        "rss_mb_after_build": built_rss,
        "rss_mb_after_loop": loop_rss,
        "peak_rss_mb": peak_rss_mb(),
        "build_s": build_s,
        "faiss_threads": faiss.omp_get_max_threads(),
        **snapshot,
    }


def _index_kinds(gallery) -> str:
    if gallery.indexes is None:
        return "exact"
    return "/".join(f"{m}:{index.kind}" for m, index in gallery.indexes.items())


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
    parser.add_argument(
        "--searches", nargs="+", default=["exact", "two_stage"], choices=["exact", "two_stage"]
    )
    parser.add_argument("--recall-queries", type=int, default=1000, help="queries for the recall measurement")
    parser.add_argument(
        "--query-noise", type=float, default=1.0, help="sighting noise (cosine 1/sqrt(1+n^2))"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "linker.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # dim,size,dtype: run one configuration here
    args = parser.parse_args(argv)
    if args.one:
        dim, size, dtype, search = args.one.split(",")
        result = run_one(
            int(dim),
            int(size),
            dtype,
            args.tracks,
            args.min_seconds,
            args.threads,
            args.snapshot_dir,
            args.reevaluate_every,
            search=search,
            recall_queries=args.recall_queries,
            query_noise=args.query_noise,
        )
        print(json.dumps(result))
        return 0
    results = []
    for dim in args.dims:
        for size in args.sizes:
            for dtype, search in [(d, m) for d in args.dtypes for m in args.searches]:
                need = estimated_gb(dim, size, dtype, search)
                if need > args.max_gb:
                    results.append(
                        {
                            "dim": dim,
                            "identities": size,
                            "storage_dtype": dtype,
                            "search": search,
                            "skipped": f"needs about {need:.1f} GB > --max-gb {args.max_gb}",
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
                    continue
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{dim},{size},{dtype},{search}",
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
                    "--recall-queries",
                    str(args.recall_queries),
                    "--query-noise",
                    str(args.query_noise),
                ]
                # numpy's BLAS gets the same thread count as faiss (OpenBLAS spinning 2 threads on a
                # shared 2-core machine made a (1, D) x (D, 256) product 10x slower).
                env = {
                    **os.environ,
                    "OPENBLAS_NUM_THREADS": str(args.threads),
                    "OMP_NUM_THREADS": str(args.threads),
                }
                done = subprocess.run(
                    command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
                )  # progress: stderr
                if done.returncode != 0:
                    results.append(
                        {
                            "dim": dim,
                            "identities": size,
                            "storage_dtype": dtype,
                            "search": search,
                            "failed": f"exit status {done.returncode} (its stderr is above)",
                        }
                    )
                else:
                    results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "linker decision loop (edge.linking.linker.IdentityLinker) over a prefilled gallery",
        "command": "python benchmarks/bench_linker.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "index": "exact: faiss IndexFlatIP (float32) / IndexScalarQuantizer QT_fp16 (float16) over the full "
        "prototypes; two_stage: compact index (flat below 20k prototypes per store, then IVF SQfp16) "
        "+ exact re-rank on the full prototypes (edge/linking/index.py)",
        "machine": machine_info(),
        "results": results,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
