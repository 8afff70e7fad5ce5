"""The linker's gallery: global identities, each with per-modality prototypes, searched with faiss.

Every identity keeps up to ``prototypes_per_modality`` prototypes per modality (visible, infrared):
unit-length vectors, one per contributing camera track while that track is alive (its current
aggregated embedding) and, once tracks have ended, weighted means of several ended tracks. The
prototypes of one modality live in one :class:`PrototypeStore`; a query is compared with both
stores, so a visible track can be matched with an identity's visible and infrared evidence and the
caller applies different thresholds to same- and cross-modality similarities.

Why per-track prototypes: a track must be comparable with everything *except its own evidence*
(else an assigned track would always re-match itself and early decisions could never be revised),
and revising a track means moving exactly its contribution from one identity to another.

Gallery hygiene: identities not seen for ``ttl_s`` are evicted (:meth:`Gallery.expired`), the number
of identities and the bytes of vector storage are bounded (:meth:`Gallery.eviction_candidates`),
and embeddings from another engine are refused (:meth:`Gallery.check_engine`).

faiss is imported when the first store is built, so importing this module stays light.
"""

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.modality import Modality
from edge.linking.index import CompactIndex, CompactIndexConfig, make_projection

STORAGE_DTYPES = ("float32", "float16")
SEARCH_MODES = ("two_stage", "exact")

GLOBAL_ID_BLOCK = 2**40
"""Identity numbers per linker: a gallery numbers within [global_id_base, global_id_base + 2**40)."""

TrackKey = tuple[str, str, int]
"""A camera track: (source producer_id, camera_id, track_id); track ids are local to the first two."""


@dataclass
class GalleryConfig:
    """Gallery bounds and storage.

    Attributes:
        engine_id: the only engine whose embeddings are accepted. The linker service fills it from
            ``calibration.engine`` (the engine artifact or its .linking.json) when it is ``""``.
        adopt_engine: with ``engine_id`` ``""``: ``true`` adopts the engine of the first sighting
            batch with embeddings (and keeps it: it is persisted with the gallery); ``false``
            refuses every embedding until an engine is configured -- otherwise whoever sends first
            pins the engine and every legitimate batch is refused as foreign. The linker service's
            config (``LinkerConfig``) defaults to ``false``; a bare ``GalleryConfig()`` to ``true``.
        storage_dtype: ``float32`` (faiss ``IndexFlatIP``, exact) or ``float16`` (faiss
            ``IndexScalarQuantizer`` QT_fp16 with inner product: half the memory, cosine error ~1e-3).
        prototypes_per_modality: prototypes kept per identity and modality; more contributing tracks
            are merged (weighted mean) once they have ended. Tracks still alive keep their own.
        ttl_s: an identity not seen for this many seconds of capture time is evicted.
        max_identities: at most this many identities; the least recently seen without a live track
            is evicted to make room.
        max_memory_mb: bound on the vector storage of both stores together (MiB, 2**20 bytes);
            the least recently seen identities without a live track are evicted to stay under it.
        search: ``two_stage`` (default): candidates from a compact index (:mod:`edge.linking.index`),
            re-ranked exactly on the full prototypes; ``exact``: every search scans the full stores.
        compact: the compact projection: ``auto``, ``identity``, ``global:<C>``, ``random:<K>`` or
            ``pca:<file.npz>`` (see :func:`edge.linking.index.make_projection`).
        compact_dim: K of ``auto`` (embeddings larger than this are projected to it).
        compact_flat_below: exhaustive compact scan below this many prototypes per store, IVF above.
        compact_storage: the IVF's codes: ``float16`` or ``int8`` (scalar quantisation).
        compact_nprobe: IVF lists visited per query, at least (and at least 1/32 of the lists).
        rerank_candidates: at least this many slots per query and store are re-ranked exactly
            (more when the search needs more neighbours: 2 x top_k x prototypes_per_modality + extra).
        global_id_base: identity numbers this gallery gives out start here and stay below
            ``global_id_base + 2**40`` (linker-prefixed ids: see :mod:`edge.linking.shared_store`);
            identities with numbers outside the block may be held (imported from another linker)
            but never move the counter.
    """

    engine_id: str = ""
    adopt_engine: bool = True
    storage_dtype: str = "float32"
    prototypes_per_modality: int = 4
    ttl_s: float = 3600.0
    max_identities: int = 100_000
    max_memory_mb: float = 8192.0
    search: str = "two_stage"
    compact: str = "auto"
    compact_dim: int = 256
    compact_flat_below: int = 20_000
    compact_storage: str = "float16"
    compact_nprobe: int = 32
    rerank_candidates: int = 64
    global_id_base: int = 0

    def __post_init__(self) -> None:
        if self.search not in SEARCH_MODES:
            raise ValueError(f"gallery.search must be one of {SEARCH_MODES}, got {self.search!r}")
        if self.compact_dim < 1 or self.compact_flat_below < 1 or self.compact_nprobe < 1:
            raise ValueError(
                "gallery.compact_dim, compact_flat_below and compact_nprobe must be >= 1, got "
                f"{self.compact_dim}, {self.compact_flat_below}, {self.compact_nprobe}"
            )
        if self.compact_storage not in ("float16", "int8"):
            raise ValueError(f"gallery.compact_storage must be float16 or int8, got {self.compact_storage!r}")
        if self.rerank_candidates < 1:
            raise ValueError(f"gallery.rerank_candidates must be >= 1, got {self.rerank_candidates}")
        if not 0 <= self.global_id_base < 2**62 or self.global_id_base % GLOBAL_ID_BLOCK:
            raise ValueError(
                f"gallery.global_id_base must be a multiple of 2**40 in [0, 2**62), got {self.global_id_base}"
            )
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(
                f"gallery.storage_dtype must be one of {STORAGE_DTYPES}, got {self.storage_dtype!r}"
            )
        if self.prototypes_per_modality < 2:
            raise ValueError(
                f"gallery.prototypes_per_modality must be >= 2 (one live track + merged history), "
                f"got {self.prototypes_per_modality}"
            )
        if not self.ttl_s > 0:
            raise ValueError(f"gallery.ttl_s must be > 0 seconds, got {self.ttl_s}")
        if self.max_identities < 1:
            raise ValueError(f"gallery.max_identities must be >= 1, got {self.max_identities}")
        if not self.max_memory_mb > 0:
            raise ValueError(f"gallery.max_memory_mb must be > 0 MiB, got {self.max_memory_mb}")


@dataclass(frozen=True)
class ChunkedArray:
    """An array described by ``dtype`` and ``shape`` whose bytes ``chunks()`` yields in C order."""

    dtype: np.dtype
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[bytes]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @classmethod
    def of(cls, array: np.ndarray) -> ChunkedArray:
        data = np.ascontiguousarray(array)
        return cls(
            data.dtype.newbyteorder("<") if data.dtype.byteorder == ">" else data.dtype,
            data.shape,
            lambda: iter([data.tobytes()]),
        )


class PrototypeStore:
    """Fixed-width vector slots over faiss flat indexes (exact inner product search).

    faiss' ``IndexIDMap.remove_ids`` compacts the whole flat storage (O(N x D) bytes moved per
    removal), far too slow for a gallery whose prototypes change with every sighting. Instead the
    store keeps the vectors in slots: a slot's code bytes are overwritten in place (a zero-copy view
    of faiss' storage), a released slot is zeroed (inner product 0 with anything) and reused, and
    ``slot -> prototype`` is mapped by the caller.

    Memory: the slots live in blocks of at most ``block_bytes`` (one faiss index each, searched one
    after the other, results merged). Only the last block grows, by building a new index of exactly
    the new size and copying the codes over, so the store holds exactly ``capacity x code_size``
    bytes (not a std::vector's doubled reserve) and growing never needs more than one extra block
    for a moment. :meth:`compact` moves slots from the end into free ones and gives the memory back.

    Args:
        dim: embedding size D.
        storage_dtype: ``float32`` (``IndexFlatIP``) or ``float16`` (``IndexScalarQuantizer`` QT_fp16).
        block_bytes: size of a full block.
    """

    def __init__(self, dim: int, storage_dtype: str, block_bytes: int = 64 * 2**20) -> None:
        import faiss  # heavy optional dependency: only where a gallery is built

        if dim < 1:
            raise ValueError(f"embedding dim must be >= 1, got {dim}")
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}")
        self._faiss = faiss
        self.dim = dim
        self.storage_dtype = storage_dtype
        self._codec = self._new_index()  # encodes / decodes; holds no vectors
        self.code_size = int(self._codec.code_size)
        self.block_slots = max(64, int(block_bytes) // self.code_size)
        self._blocks: list[Any] = []
        self._block_codes: list[np.ndarray] = []  # (rows, code_size) uint8 views of each block's storage
        self.occupied = np.zeros(0, dtype=bool)
        self._free: list[int] = []  # min-heap: the lowest free slot is reused first (deterministic)

    def _new_index(self) -> Any:
        faiss = self._faiss
        if self.storage_dtype == "float32":
            return faiss.IndexFlatIP(self.dim)
        return faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)

    @property
    def capacity(self) -> int:
        return len(self.occupied)

    @property
    def num_occupied(self) -> int:
        return self.capacity - len(self._free)

    @property
    def nbytes(self) -> int:
        """Bytes of vector storage held by the indexes (occupied and free slots)."""
        return self.capacity * self.code_size

    def allocate(self, max_capacity: int) -> int | None:
        """A free slot, growing the store (to at most ``max_capacity`` slots) if there is none;
        ``None`` when the store is full and may not grow."""
        if not self._free:
            if self.capacity >= max_capacity:
                return None
            room = max_capacity - self.capacity
            last = len(self._block_codes[-1]) if self._blocks else self.block_slots
            if last < self.block_slots:  # the last block grows (by half, at least 64 slots)
                self._resize_last(last + min(room, self.block_slots - last, max(64, last // 2)))
            else:  # a new block (small at first when it is the only one)
                first = min(64, self.block_slots) if not self._blocks else self.block_slots
                self._append_block(min(room, first))
        slot = heapq.heappop(self._free)
        self.occupied[slot] = True
        return slot

    def write(self, slot: int, vector: np.ndarray) -> None:
        """Store ``vector`` ((D,) float32, unit length) in ``slot`` (allocated)."""
        if not self.occupied[slot]:
            raise KeyError(f"slot {slot} is not allocated")
        codes = self._codec.sa_encode(np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim))
        block, row = divmod(slot, self.block_slots)
        self._block_codes[block][row] = codes[0]

    def read(self, slots: Sequence[int]) -> np.ndarray:
        """The vectors in ``slots`` as (len(slots), D) float32 (decoded from the storage dtype)."""
        if len(slots) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._codec.sa_decode(self._gather(np.asarray(slots, np.int64))), dtype=np.float32)

    def inner_products(self, query: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Exact inner products of one query ((D,) float32) with the vectors in ``slots`` ((S,) int64,
        allocated) as (S,) float32, computed by faiss on the stored codes.

        This is the re-rank of the two-stage search: faiss' distance computer reads each code in
        place (SIMD, float16 decoded on the fly), ~10x faster than decoding the rows into a float32
        copy and multiplying (64 x 14336 float16: 0.2 ms against 3 ms + the product).
        """
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        out = np.empty(len(slots), dtype=np.float32)
        blocks, rows = np.divmod(np.asarray(slots, dtype=np.int64), self.block_slots)
        for block in np.unique(blocks).tolist():
            computer = self._blocks[block].get_FlatCodesDistanceComputer()
            computer.set_query(self._faiss.swig_ptr(q))  # q outlives the computer (same scope)
            members = np.flatnonzero(blocks == block)
            for i, row in zip(members.tolist(), rows[members].tolist()):
                out[i] = computer(row)
        return out

    def export_codes(self, slots: Sequence[int], rows_per_chunk: int = 256) -> ChunkedArray:
        """The stored codes of ``slots`` as a (len(slots), D) array of the storage dtype, produced
        in chunks (a snapshot of a large gallery never holds a second copy of it in memory).

        The codes are the vectors themselves: float32, or IEEE float16 for QT_fp16.
        """
        order = np.asarray(slots, dtype=np.int64)

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(order), rows_per_chunk):
                yield self._gather(order[start : start + rows_per_chunk]).tobytes()

        dtype = np.dtype("<f4" if self.storage_dtype == "float32" else "<f2")
        return ChunkedArray(dtype, (len(order), self.dim), chunks)

    def release(self, slot: int) -> None:
        """Zero ``slot`` and return it to the free list."""
        if not self.occupied[slot]:
            raise KeyError(f"slot {slot} is not allocated")
        block, row = divmod(slot, self.block_slots)
        self._block_codes[block][row] = 0
        self.occupied[slot] = False
        heapq.heappush(self._free, slot)

    def compact(self) -> dict[int, int]:
        """Move the occupied slots to the front, drop the free capacity behind them (the memory
        goes back); returns ``{old slot: new slot}`` for every occupied slot."""
        count = self.num_occupied
        occupied = np.flatnonzero(self.occupied)
        mapping = {int(s): int(s) for s in occupied[occupied < count]}
        holes = np.flatnonzero(~self.occupied[:count])
        movers = occupied[occupied >= count]
        for hole, mover in zip(holes.tolist(), movers.tolist()):
            hb, hr = divmod(hole, self.block_slots)
            mb, mr = divmod(mover, self.block_slots)
            self._block_codes[hb][hr] = self._block_codes[mb][mr]
            mapping[mover] = hole
        keep_blocks = -(-count // self.block_slots)
        del self._blocks[keep_blocks:]
        del self._block_codes[keep_blocks:]
        self.occupied = np.ones(count, dtype=bool)
        self._free = []
        if self._blocks:
            self._resize_last(count - (keep_blocks - 1) * self.block_slots)
        return mapping

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` inner products.

        Args:
            queries: (Q, D) float32, unit rows.
            k: results per query.

        Returns:
            ``(cosines, slots)``, both (Q, k'), k' = min(k, capacity); float32 and int64, best
            first. Slots that are free are returned as -1 (their cosine is meaningless).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(int(k), self.capacity)
        if k <= 0 or q.shape[0] == 0:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        parts_d, parts_i = [], []
        for number, index in enumerate(self._blocks):
            found_d, found_i = index.search(q, min(k, int(index.ntotal)))
            parts_d.append(found_d)
            parts_i.append(np.where(found_i >= 0, found_i + number * self.block_slots, -1))
        cosines, slots = np.concatenate(parts_d, axis=1), np.concatenate(parts_i, axis=1)
        if len(self._blocks) > 1:
            order = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
            cosines, slots = np.take_along_axis(cosines, order, 1), np.take_along_axis(slots, order, 1)
        valid = slots >= 0
        valid[valid] = self.occupied[slots[valid]]
        return cosines, np.where(valid, slots, -1)

    def _gather(self, slots: np.ndarray) -> np.ndarray:
        out = np.empty((len(slots), self.code_size), dtype=np.uint8)
        blocks, rows = np.divmod(slots, self.block_slots)
        for block in np.unique(blocks).tolist():
            mask = blocks == block
            out[mask] = self._block_codes[block][rows[mask]]
        return out

    def _make_block(self, rows: int) -> tuple[Any, np.ndarray]:
        index = self._new_index()
        index.add(np.zeros((rows, self.dim), dtype=np.float32))  # one resize from empty: exact size
        codes = self._faiss.rev_swig_ptr(index.codes.data(), rows * self.code_size)
        return index, codes.reshape(rows, self.code_size)

    def _append_block(self, rows: int) -> None:
        start = self.capacity
        index, codes = self._make_block(rows)
        self._blocks.append(index)
        self._block_codes.append(codes)
        self._extend(start, rows)

    def _resize_last(self, rows: int) -> None:
        """Rebuild the last block with ``rows`` slots (its old codes copied over, up to ``rows``)."""
        old = self._block_codes[-1]
        start = (len(self._blocks) - 1) * self.block_slots
        index, codes = self._make_block(rows)
        keep = min(rows, len(old))
        codes[:keep] = old[:keep]
        self._blocks[-1] = index  # the old block (and its memory) goes away here
        self._block_codes[-1] = codes
        if start + rows > self.capacity:
            self._extend(self.capacity, start + rows - self.capacity)

    def _extend(self, start: int, rows: int) -> None:
        self.occupied = np.concatenate([self.occupied, np.zeros(rows, dtype=bool)])
        for slot in range(start, start + rows):
            heapq.heappush(self._free, slot)


@dataclass
class Prototype:
    """One stored vector of an identity.

    Attributes:
        slot: its slot in the store of its modality.
        modality: modality of the evidence.
        camera_id: camera of the evidence (of the heaviest part, for a merged prototype).
        track_key: the track whose current evidence this is; ``None`` for a merged prototype.
        weight: sightings behind it.
        updated_ts: capture time (s) of the last update.
        origin: ``""`` for this linker's evidence; the ``linker_id`` of another linker for a
            prototype imported from the shared store (:mod:`edge.linking.shared_store`), which this
            linker does not publish again.
    """

    slot: int
    modality: Modality
    camera_id: str
    track_key: TrackKey | None
    weight: float
    updated_ts: float
    origin: str = ""


@dataclass
class Identity:
    """A global identity.

    Attributes:
        global_id: its number (never reused).
        created_ts, last_seen_ts: capture times (s) of its creation and its latest sighting.
        prototypes: its stored vectors, both modalities.
        live_tracks: tracks assigned to it that have not ended (it is not evicted while it has any).
    """

    global_id: int
    created_ts: float
    last_seen_ts: float
    prototypes: list[Prototype] = field(default_factory=list)
    live_tracks: set[TrackKey] = field(default_factory=set)

    def prototypes_of(self, modality: Modality) -> list[Prototype]:
        return [p for p in self.prototypes if p.modality is modality]

    def prototype_of_track(self, track_key: TrackKey) -> Prototype | None:
        for prototype in self.prototypes:
            if prototype.track_key == track_key:
                return prototype
        return None


@dataclass(frozen=True)
class IdentityMatch:
    """How well a query matches one identity, split by the modality of the identity's evidence.

    ``cosine_same`` / ``cosine_cross``: best cosine with a prototype of the query's modality / of
    the other one (``-inf`` when there is none); ``camera_same`` / ``camera_cross``: their cameras.
    """

    global_id: int
    cosine_same: float = -math.inf
    camera_same: str = ""
    cosine_cross: float = -math.inf
    camera_cross: str = ""


class Gallery:
    """Global identities with per-modality prototypes (see the module docstring).

    Args:
        dim: embedding size D (all vectors are (D,) float32, unit length).
        config: bounds and storage.
    """

    def __init__(self, dim: int, config: GalleryConfig) -> None:
        self.dim = int(dim)
        self.config = config
        self.engine_id = config.engine_id
        bytes_per_vector = self.dim * (4 if config.storage_dtype == "float32" else 2)
        # Both modalities share one byte budget: the capacities of the two stores add up to at most
        # max_slots (a store that needs room takes back the other's free slots by compacting it).
        self.max_slots = int(config.max_memory_mb * 2**20) // bytes_per_vector
        self.stores = {modality: PrototypeStore(self.dim, config.storage_dtype) for modality in Modality}
        # Stage one of the two-stage search, one compact index per store (None: exact search only).
        self.indexes: dict[Modality, CompactIndex] | None = None
        if config.search == "two_stage":
            projection = make_projection(config.compact, self.dim, config.compact_dim)
            index_config = CompactIndexConfig(
                flat_below=config.compact_flat_below,
                storage=config.compact_storage,
                nprobe=config.compact_nprobe,
            )
            self.indexes = {m: CompactIndex(projection, index_config) for m in Modality}
        self.identities: dict[int, Identity] = {}
        self.next_global_id = config.global_id_base
        self._slot_owner: dict[Modality, dict[int, tuple[int, Prototype]]] = {m: {} for m in Modality}
        # slot -> global id (-1: free) per store, for vectorised grouping of search results
        self._slot_gid: dict[Modality, np.ndarray] = {m: np.full(0, -1, np.int64) for m in Modality}
        self._track_prototype: dict[TrackKey, Prototype] = {}
        self._recency: list[tuple[float, int]] = []  # lazy min-heap of (last_seen_ts, global_id)

    # ------------------------------------------------------------------------------ engine check

    def check_engine(self, engine_id: str) -> bool:
        """True if embeddings of ``engine_id`` may enter; the first one is adopted if none is set."""
        if not self.engine_id:
            if not engine_id:
                return False
            self.engine_id = engine_id
            return True
        return engine_id == self.engine_id

    # ------------------------------------------------------------------------------- bookkeeping

    @property
    def num_slots_used(self) -> int:
        return sum(store.num_occupied for store in self.stores.values())

    @property
    def nbytes(self) -> int:
        """Bytes of vector storage held by both stores."""
        return sum(store.nbytes for store in self.stores.values())

    @property
    def index_nbytes(self) -> int:
        """Bytes held by the compact indexes (0 with exact search); not part of ``max_memory_mb``."""
        return 0 if self.indexes is None else sum(index.nbytes for index in self.indexes.values())

    def owns_global_id(self, global_id: int) -> bool:
        """Whether ``global_id`` lies in this gallery's block of numbers."""
        return self.config.global_id_base <= global_id < self.config.global_id_base + GLOBAL_ID_BLOCK

    def create_identity(self, ts: float, global_id: int | None = None) -> Identity:
        """A new identity numbered ``global_id`` (default: the next number); numbers only go up."""
        gid = self.next_global_id if global_id is None else int(global_id)
        if gid in self.identities or gid < 0:
            raise ValueError(f"global_id {gid} already exists or is negative")
        if self.owns_global_id(gid):  # an imported identity (another linker's block) moves nothing
            self.next_global_id = max(self.next_global_id, gid + 1)
        identity = Identity(global_id=gid, created_ts=ts, last_seen_ts=ts)
        self.identities[gid] = identity
        heapq.heappush(self._recency, (ts, gid))
        return identity

    def remove_identity(self, global_id: int) -> None:
        """Drop an identity and free its slots (its number is never given out again)."""
        identity = self.identities.pop(global_id)
        for prototype in identity.prototypes:
            self._free_prototype(prototype)

    def touch(self, global_id: int, ts: float) -> None:
        """Record a sighting of ``global_id`` at capture time ``ts`` (for TTL and recency)."""
        identity = self.identities[global_id]
        if ts > identity.last_seen_ts:
            identity.last_seen_ts = ts
            heapq.heappush(self._recency, (ts, global_id))
            if len(self._recency) > 4 * len(self.identities) + 1024:
                self._recency = [(i.last_seen_ts, gid) for gid, i in self.identities.items()]
                heapq.heapify(self._recency)

    # -------------------------------------------------------------------------------- prototypes

    def needs_slot(self, global_id: int | None, modality: Modality, track_key: TrackKey) -> bool:
        """Whether giving ``track_key`` a prototype in ``global_id`` (None: a new identity) takes a slot."""
        if global_id is None:
            return True
        identity = self.identities[global_id]
        if identity.prototype_of_track(track_key) is not None:
            return False
        same = identity.prototypes_of(modality)
        return len(same) < self.config.prototypes_per_modality or len(self._mergeable(identity, same)) < 2

    def has_slot(self) -> bool:
        return self.num_slots_used < self.max_slots

    def set_track_prototype(
        self,
        global_id: int,
        track_key: TrackKey,
        modality: Modality,
        camera_id: str,
        vector: np.ndarray,
        weight: float,
        ts: float,
    ) -> bool:
        """Make ``vector`` the prototype of ``track_key`` inside ``global_id`` (update in place or add).

        Adding beyond ``prototypes_per_modality`` first merges the two most similar prototypes of
        ended tracks. Returns False (and stores nothing) when the memory bound leaves no slot.
        """
        identity = self.identities[global_id]
        prototype = identity.prototype_of_track(track_key)
        if prototype is None:
            if len(identity.prototypes_of(modality)) >= self.config.prototypes_per_modality:
                self._merge_closest(identity, modality)
            prototype = self._add_prototype(identity, modality, camera_id, track_key, weight, ts)
            if prototype is None:
                return False
        prototype.weight = float(weight)
        prototype.updated_ts = ts
        prototype.camera_id = camera_id
        self._write(modality, prototype.slot, vector)
        return True

    def restore_prototype(
        self,
        global_id: int,
        modality: Modality,
        camera_id: str,
        track_key: TrackKey | None,
        weight: float,
        ts: float,
        vector: np.ndarray,
        origin: str = "",
    ) -> bool:
        """Put back a prototype read from a snapshot or imported from the shared store (``origin``:
        the linker that published it), no merging; False if the bounds leave no slot."""
        prototype = self._add_prototype(
            self.identities[global_id], modality, camera_id, track_key, weight, ts
        )
        if prototype is None:
            return False
        prototype.origin = origin
        self._write(modality, prototype.slot, vector)
        return True

    def _add_prototype(
        self,
        identity: Identity,
        modality: Modality,
        camera_id: str,
        track_key: TrackKey | None,
        weight: float,
        ts: float,
    ) -> Prototype | None:
        slot = self._allocate(modality)
        if slot is None:
            return None
        prototype = Prototype(slot, modality, camera_id, track_key, float(weight), ts)
        identity.prototypes.append(prototype)
        self._slot_owner[modality][slot] = (identity.global_id, prototype)
        self._set_slot_gid(modality, slot, identity.global_id)
        if track_key is not None:
            self._track_prototype[track_key] = prototype
        return prototype

    def remove_track_prototype(self, global_id: int, track_key: TrackKey) -> None:
        """Take the prototype of ``track_key`` out of ``global_id`` (when the track is revised)."""
        identity = self.identities[global_id]
        prototype = identity.prototype_of_track(track_key)
        if prototype is not None:
            identity.prototypes.remove(prototype)
            self._free_prototype(prototype)

    def prototype_vectors(self, identity: Identity) -> np.ndarray:
        """(len(identity.prototypes), D) float32, in the order of ``identity.prototypes``."""
        out = np.zeros((len(identity.prototypes), self.dim), dtype=np.float32)
        for modality in Modality:
            rows = [i for i, p in enumerate(identity.prototypes) if p.modality is modality]
            if rows:
                out[rows] = self.stores[modality].read([identity.prototypes[i].slot for i in rows])
        return out

    def _mergeable(self, identity: Identity, prototypes: list[Prototype]) -> list[Prototype]:
        return [p for p in prototypes if p.track_key is None or p.track_key not in identity.live_tracks]

    def _merge_closest(self, identity: Identity, modality: Modality) -> None:
        candidates = self._mergeable(identity, identity.prototypes_of(modality))
        if len(candidates) < 2:
            return  # every prototype belongs to a live track: exceed the soft bound for now
        store = self.stores[modality]
        vectors = store.read([p.slot for p in candidates])
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        i, j = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        keep, drop = sorted((candidates[i], candidates[j]), key=lambda p: (-p.weight, p.slot))
        merged = keep.weight * vectors[candidates.index(keep)] + drop.weight * vectors[candidates.index(drop)]
        norm = float(np.linalg.norm(merged))
        if norm > 0:
            self._write(modality, keep.slot, merged / norm)
        keep.weight += drop.weight
        if keep.track_key is not None and self._track_prototype.get(keep.track_key) is keep:
            del self._track_prototype[keep.track_key]
        keep.track_key = None
        keep.updated_ts = max(keep.updated_ts, drop.updated_ts)
        identity.prototypes.remove(drop)
        self._free_prototype(drop)

    def _allocate(self, modality: Modality) -> int | None:
        """A slot in the store of ``modality`` within the shared byte budget (None: full)."""
        if not self.has_slot():
            return None
        store, other = self.stores[modality], self.stores[modality.other]
        slot = store.allocate(self.max_slots - other.capacity)
        if slot is None and other.capacity > other.num_occupied:
            # The other store holds free slots: give their memory back, then grow this one.
            mapping = other.compact()
            if self.indexes is not None:
                self.indexes[modality.other].remap(mapping)
            owners = self._slot_owner[modality.other]
            self._slot_owner[modality.other] = {}
            self._slot_gid[modality.other] = np.full(other.capacity, -1, np.int64)
            for old, (gid, prototype) in owners.items():
                prototype.slot = mapping[old]
                self._slot_owner[modality.other][prototype.slot] = (gid, prototype)
                self._slot_gid[modality.other][prototype.slot] = gid
            slot = store.allocate(self.max_slots - other.capacity)
        return slot

    def _write(self, modality: Modality, slot: int, vector: np.ndarray) -> None:
        """Store a prototype vector and tell the compact index (it re-projects before its next search)."""
        self.stores[modality].write(slot, vector)
        if self.indexes is not None:
            self.indexes[modality].update(slot, vector)

    def _free_prototype(self, prototype: Prototype) -> None:
        self.stores[prototype.modality].release(prototype.slot)
        if self.indexes is not None:
            self.indexes[prototype.modality].remove(prototype.slot)
        del self._slot_owner[prototype.modality][prototype.slot]
        self._slot_gid[prototype.modality][prototype.slot] = -1
        if prototype.track_key is not None and self._track_prototype.get(prototype.track_key) is prototype:
            del self._track_prototype[prototype.track_key]

    def _set_slot_gid(self, modality: Modality, slot: int, gid: int) -> None:
        table = self._slot_gid[modality]
        capacity = self.stores[modality].capacity
        if len(table) < capacity:  # the store grew
            table = np.concatenate([table, np.full(capacity - len(table), -1, np.int64)])
            self._slot_gid[modality] = table
        table[slot] = gid

    # ------------------------------------------------------------------------------------ search

    def match_many(
        self,
        queries: np.ndarray,
        modality: Modality,
        exclude_tracks: Sequence[TrackKey | None],
        top_k: int,
        extra: int = 0,
        exact: bool = False,
    ) -> list[dict[int, IdentityMatch]]:
        """The identities closest to each query, split into same- and cross-modality evidence.

        Args:
            queries: (Q, D) float32 unit rows, all of ``modality``.
            exclude_tracks: per query, a track whose own prototype must not count (or None).
            top_k: identities wanted per query (before the caller's exclusions).
            extra: more identities to return per store (to survive the caller's exclusions).
            exact: scan the full stores even when a compact index exists (the reference search).

        Returns:
            Per query, ``{global_id: IdentityMatch}`` for the best ``top_k + extra`` identities of
            each store among its nearest ``top_k * prototypes_per_modality + extra + 1`` prototypes.
        """
        k = top_k * self.config.prototypes_per_modality + extra + 1
        wanted = top_k + extra
        results: list[dict[int, IdentityMatch]] = [{} for _ in range(len(queries))]
        compact = None
        if self.indexes is not None and not exact:  # one projection serves both stores
            compact = self.indexes[modality].projection(queries)
        own = [self._track_prototype.get(key) if key is not None else None for key in exclude_tracks]
        for store_modality, store in self.stores.items():
            if store.num_occupied == 0:
                continue
            cosines, slots = self._search_store(store_modality, queries, compact, k)
            slot_gid = self._slot_gid[store_modality]
            owners = self._slot_owner[store_modality]
            same = store_modality is modality
            for q in range(len(queries)):
                row = slots[q]
                valid = row >= 0
                if own[q] is not None and own[q].modality is store_modality:
                    valid &= row != own[q].slot
                row = row[valid]
                gids = slot_gid[row]
                # Results come best first, so a global id's first occurrence is its best prototype;
                # keep the best `wanted` identities of this store.
                _, first = np.unique(gids, return_index=True)
                best = np.sort(first)[:wanted]
                row_cosines = cosines[q][valid]
                found = results[q]
                for i in best.tolist():
                    gid = int(gids[i])
                    camera = owners[int(row[i])][1].camera_id
                    found[gid] = _better(found.get(gid), gid, same, float(row_cosines[i]), camera)
        return results

    def _search_store(
        self, modality: Modality, queries: np.ndarray, compact: np.ndarray | None, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest prototypes of one store per query, like :meth:`PrototypeStore.search`.

        Two-stage: the compact index proposes ``max(rerank_candidates, 2 k)`` slots per query, each
        is scored exactly on its stored full prototype (the cosines returned are the full
        prototypes'), the best ``k`` per query are kept. A store no larger than
        the proposal count is scanned exactly (it would be read whole anyway).
        ``compact``: the queries through the index's projection, (Q, d) float32; None scans exactly.

        Returns:
            ``(cosines, slots)``, (Q, k') float32 / int64, best first, slot -1 where nothing is.
        """
        store = self.stores[modality]
        proposals = max(self.config.rerank_candidates, 2 * k)
        if compact is None or self.indexes is None or store.num_occupied <= proposals:
            return store.search(queries, k)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        candidates = self.indexes[modality].candidates(compact, proposals)
        cosines = np.full(candidates.shape, -np.inf, dtype=np.float32)
        for row in range(len(q)):  # exact cosines on the full prototypes
            valid = candidates[row] >= 0
            cosines[row, valid] = store.inner_products(q[row], candidates[row, valid])
        k = min(k, candidates.shape[1])
        order = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
        cosines = np.take_along_axis(cosines, order, 1)
        slots = np.take_along_axis(candidates, order, 1)
        return cosines, np.where(np.isfinite(cosines), slots, -1)

    def match_identity(
        self, global_id: int, query: np.ndarray, modality: Modality, exclude_track: TrackKey | None
    ) -> IdentityMatch | None:
        """Exact match of ``query`` ((D,) float32) with one identity, or None if it has no other evidence."""
        identity = self.identities.get(global_id)
        if identity is None:
            return None
        keep = [p.track_key is None or p.track_key != exclude_track for p in identity.prototypes]
        if not any(keep):
            return None
        match: IdentityMatch | None = None
        cosines = self.prototype_vectors(identity) @ np.asarray(query, dtype=np.float32)
        for prototype, cosine, kept in zip(identity.prototypes, cosines.tolist(), keep):
            if kept:
                match = _better(match, global_id, prototype.modality is modality, cosine, prototype.camera_id)
        return match

    # --------------------------------------------------------------------------- TTL and bounds

    def expired(self, now_ts: float) -> list[int]:
        """Identities without live tracks not seen since ``now_ts - ttl_s`` (least recent first)."""
        cutoff = now_ts - self.config.ttl_s
        out: list[int] = []
        with contextlib.closing(self._least_recent(protect=())) as walk:
            for ts, gid in walk:
                if ts >= cutoff:
                    break
                out.append(gid)
        return out

    def eviction_candidates(
        self, new_identities: int, new_slots: int, protect: Iterable[int] = ()
    ) -> list[int] | None:
        """The least recently seen identities to evict so that ``new_identities`` more identities and
        ``new_slots`` more prototypes fit the bounds; ``None`` if evicting every identity without a
        live track (and not in ``protect``) would not be enough."""
        over_ids = len(self.identities) + new_identities - self.config.max_identities
        over_slots = self.num_slots_used + new_slots - self.max_slots
        chosen: list[int] = []
        freed = 0
        if over_ids <= 0 and over_slots <= 0:
            return chosen
        with contextlib.closing(self._least_recent(protect=set(protect))) as walk:
            for _ts, gid in walk:
                chosen.append(gid)
                freed += len(self.identities[gid].prototypes)
                if len(chosen) >= over_ids and freed >= over_slots:
                    return chosen
        return None

    def _least_recent(self, protect: set[int] | tuple[()]) -> Iterator[tuple[float, int]]:
        """Yield ``(last_seen_ts, global_id)`` of evictable identities, least recently seen first.

        Identities with live tracks or in ``protect`` are skipped. Stale heap entries (the identity
        was seen again, or is gone) are dropped for good; the others are pushed back when the walk
        is closed, so the caller may stop early.
        """
        heap = self._recency
        popped: list[tuple[float, int]] = []
        seen: set[int] = set()
        try:
            while heap:
                ts, gid = heapq.heappop(heap)
                identity = self.identities.get(gid)
                if identity is None or identity.last_seen_ts != ts or gid in seen:
                    continue
                popped.append((ts, gid))
                seen.add(gid)
                if identity.live_tracks or gid in protect:
                    continue
                yield ts, gid
        finally:
            for entry in popped:
                heapq.heappush(heap, entry)


def _better(current: IdentityMatch | None, gid: int, same: bool, cosine: float, camera: str) -> IdentityMatch:
    current = current or IdentityMatch(gid)
    if same and cosine > current.cosine_same:
        return IdentityMatch(gid, cosine, camera, current.cosine_cross, current.camera_cross)
    if not same and cosine > current.cosine_cross:
        return IdentityMatch(gid, current.cosine_same, current.camera_same, cosine, camera)
    return current
