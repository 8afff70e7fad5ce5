"""The long fuzz run of the wire decoder (CI runs the short one: tests/test_messages_fuzz.py).

Mutates the golden messages of tests/golden (every kind) with a seeded generator -- byte edits
(flips, overwrites, insertions, deletions, truncations), one header field replaced by a hostile
value (integers up to 2**64-1 and below 0, NaN / inf / 1e300, deep nesting up to 20,000 arrays,
strings, maps), an unknown field added, embedding frames of any size -- and feeds every result to
``decode_message``. Whatever decodes goes on through an :class:`IdentityLinker` (sightings) and the
service's journal gate (:func:`edge.linking.service.check_journalable`). Counts per mutator:
decoded, refused with ``MessageError``, and **anything else** (must be 0: an exception that is not
``MessageError`` would stop the linker), plus the slowest single decode.

    python benchmarks/bench_fuzz.py [--cases 200000] [--seed 12] [--out benchmarks/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import msgspec
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "golden"))

from benchmarks.report_file import machine_info, write_report  # noqa: E402

HOSTILE_INTS = [-1, -(2**63), 2**31, 2**48 + 1, 2**62 + 1, 2**63 - 1, 2**64 - 1, 0]
HOSTILE_FLOATS = [float("nan"), float("inf"), -float("inf"), 1e300, -1e300, -0.0, 1.5, 1e10 + 1]


def hostile_value(rng: np.random.Generator, depth: int = 0):
    """One MessagePack-encodable hostile value."""
    kind = rng.integers(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return HOSTILE_INTS[rng.integers(len(HOSTILE_INTS))]
    if kind == 2:
        return HOSTILE_FLOATS[rng.integers(len(HOSTILE_FLOATS))]
    if kind == 3:
        return "".join(chr(c) for c in rng.integers(32, 0x2FF, size=rng.integers(0, 300)))
    if kind == 4:
        return bytes(rng.integers(0, 256, size=rng.integers(0, 32), dtype=np.uint8))
    if kind == 5:
        return msgspec.Raw(b"\x91" * int(rng.integers(1, 20_000)) + b"\xc0")  # deep nesting
    if kind == 6:
        return [hostile_value(rng, depth + 1) for _ in range(rng.integers(0, 5))]
    if kind == 7:
        return {str(rng.integers(100)): hostile_value(rng, depth + 1) for _ in range(rng.integers(0, 4))}
    return bool(rng.integers(2))


def mutate_bytes(rng: np.random.Generator, frames: list[bytes]) -> list[bytes]:
    out = [bytearray(f) for f in frames]
    target = out[rng.integers(len(out))]
    for _ in range(rng.integers(1, 8)):
        op = rng.integers(5)
        at = int(rng.integers(0, len(target) + 1))
        if op == 0 and target:
            target[at % len(target)] ^= 1 << int(rng.integers(8))
        elif op == 1 and target:
            target[at % len(target)] = int(rng.integers(256))
        elif op == 2:
            target[at:at] = bytes(rng.integers(0, 256, size=rng.integers(1, 16), dtype=np.uint8))
        elif op == 3 and target:
            del target[at % len(target)]
        elif op == 4:
            del target[at:]
    return [bytes(f) for f in out]


def mutate_field(rng: np.random.Generator, frames: list[bytes]) -> list[bytes]:
    header = msgspec.msgpack.decode(frames[0])
    names = sorted(header)
    for _ in range(rng.integers(1, 3)):
        key = names[rng.integers(len(names))] if rng.random() < 0.85 else f"unknown_{rng.integers(9)}"
        header[key] = hostile_value(rng)
    return [msgspec.msgpack.encode(header), *frames[1:]]


def mutate_embeddings(
    rng: np.random.Generator, frames: list[bytes], golden_sightings: list[bytes]
) -> list[bytes]:
    header = msgspec.msgpack.decode(golden_sightings[0])
    rows = int(rng.integers(0, 4))
    dim = int(rng.integers(0, 9))
    header["embedding_rows"] = list(range(min(rows, len(header["boxes"]))))
    header["embedding_shape"] = [rows, dim]
    header["embedding_dtype"] = ["float16", "float32", "float64", "int8"][rng.integers(4)]
    values = rng.standard_normal(rows * dim).astype(np.float32)
    if values.size and rng.random() < 0.3:
        values[rng.integers(values.size)] = [np.nan, np.inf, 0.0][rng.integers(3)]
    raw = (
        values.tobytes()
        if rng.random() < 0.7
        else bytes(rng.integers(0, 256, size=rng.integers(0, 64), dtype=np.uint8))
    )
    return [msgspec.msgpack.encode(header), raw]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz.json"))
    args = parser.parse_args(argv)

    from write_message_goldens import golden_messages, golden_path

    from edge.linking.assignment import MatchingRules
    from edge.linking.gallery import GalleryConfig
    from edge.linking.linker import IdentityLinker
    from edge.linking.service import check_journalable
    from edge.messages import MessageError, SightingBatch, decode_message

    golden = {
        name: [golden_path(name, i).read_bytes() for i in range(2) if golden_path(name, i).is_file()]
        for name in sorted(golden_messages())
    }
    kinds = sorted(golden)
    rng = np.random.default_rng(args.seed)
    mutators = ("bytes", "field", "embeddings")
    counts = {m: {"cases": 0, "decoded": 0, "refused": 0, "other_exception": 0} for m in mutators}
    reasons: dict[str, int] = {}
    failures: list[str] = []
    slowest = 0.0
    linked = 0
    started = time.perf_counter()
    linker = IdentityLinker(MatchingRules(min_sightings=1), GalleryConfig(adopt_engine=True))
    for _ in tqdm(range(args.cases), desc="fuzz", unit="msg", mininterval=2.0):
        mutator = mutators[rng.integers(3)]
        kind = kinds[rng.integers(len(kinds))]
        if mutator == "bytes":
            frames = mutate_bytes(rng, golden[kind])
        elif mutator == "field":
            frames = mutate_field(rng, golden[kind])
        else:
            frames = mutate_embeddings(rng, golden[kind], golden["sightings"])
        row = counts[mutator]
        row["cases"] += 1
        t0 = time.perf_counter()
        try:
            decoded = decode_message(frames)
        except MessageError as exc:
            row["refused"] += 1
            reason = str(exc).split(":")[0][:60]
            reasons[reason] = reasons.get(reason, 0) + 1
            slowest = max(slowest, time.perf_counter() - t0)
            continue
        except Exception:  # the bug this benchmark looks for
            row["other_exception"] += 1
            failures.append(traceback.format_exc(limit=3))
            continue
        slowest = max(slowest, time.perf_counter() - t0)
        row["decoded"] += 1
        try:
            if isinstance(decoded.message, SightingBatch):
                for event in linker.observe(decoded.message, decoded.embeddings):
                    check_journalable(event, "linker")
                linked += 1
        except Exception:
            row["other_exception"] += 1
            failures.append(traceback.format_exc(limit=3))
    elapsed = time.perf_counter() - started
    total_other = sum(r["other_exception"] for r in counts.values())
    report = {
        "benchmark": "wire decoder fuzz: mutated golden messages -> decode_message -> linker + journal gate",
        "command": "python benchmarks/bench_fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "cases": args.cases,
        "seed": args.seed,
        "per_mutator": counts,
        "other_exceptions": total_other,
        "sighting_batches_through_the_linker": linked,
        "linker_identities_at_end": linker.num_identities,
        # The linker here has no capture-time window (the service's receiver does): hostile but
        # in-range capture times move its clock and the TTL evicts, which is what it should do.
        "linker_counters": linker.counters.as_dict(),
        "slowest_decode_ms": 1000 * slowest,
        "messages_per_s": args.cases / elapsed,
        "top_refusal_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:15]),
        "first_failures": failures[:5],
    }
    write_report(args.out, report)
    print(
        {
            k: report[k]
            for k in ("cases", "per_mutator", "other_exceptions", "slowest_decode_ms", "messages_per_s")
        }
    )
    return 1 if total_other else 0


if __name__ == "__main__":
    sys.exit(main())
