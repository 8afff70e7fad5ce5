"""Identities shared by several linkers through Milvus: one identity store, N linker processes.

The embedded default is one linker with its faiss gallery in process and nothing else. With
``shared.uri`` set, each linker (one per site or camera group) still decides from its own faiss
gallery, its *hot working set*, and additionally:

* **asks the shared store** when a track's first decision finds no local match: the best remote
  identities of both modalities (Milvus search in the ``visible`` / ``infrared`` partitions) are
  ranked by the same rules (:func:`~edge.linking.assignment.rank_candidates`, thresholds, margin);
  an unambiguous match is *imported* (its remote prototypes join the local gallery, marked with
  their origin) and the track is ``matched`` to that global id;
* **publishes** its identities: after decisions, the prototypes of every identity it changed are
  upserted (one row per prototype, primary key ``<global_id>:<linker_index>:<modality>:<n>``) and
  the rows it no longer has are deleted by expression; identities it retired are deleted. Rows are
  per linker, so two linkers holding the same identity never overwrite each other's evidence.
  Imported prototypes are not published again (they are the other linker's rows);
* **never collides on global ids**: a linker numbers new identities inside its own block
  ``[linker_index * 2**40, (linker_index + 1) * 2**40)`` (``gallery.global_id_base``), so no
  allocation round trip is needed and ids stay unique while Milvus is down. The block is claimed in
  the ``<collection>_linkers`` registry at start: a second linker that claims a taken index with
  another ``linker_id`` is refused. (Milvus has no compare-and-swap: two linkers started at the
  same instant with the same index could both pass; the index is configuration, keep it unique.)

Failure behaviour: every Milvus call has a timeout; the first failure marks the store down for
``retry_after_s`` (no call is attempted meanwhile, so a dead store costs the decision loop nothing).
While down, lookups answer "no remote match" (the track becomes a new local identity, counted in
``lookups_skipped``) and identities to publish accumulate (a set of global ids, bounded by the
gallery); when the store answers again everything pending is published: the linker catches up.

Every row read back is untrusted (another process wrote it): ids, modality, sizes, finiteness and
lengths are checked, and a bad row is dropped and counted, never imported.

Milvus specifics: one collection per engine (``<collection>_<engine_id>``: embeddings of two
engines are not comparable, and the dimension is fixed per collection; Milvus allows at most
32,768), ``FLOAT_VECTOR`` with inner product (milvus-lite has no ``FLOAT16_VECTOR``), index
``FLAT`` by default (``HNSW`` / ``IVF_FLAT`` / ``AUTOINDEX`` on a Milvus cluster), strong
consistency (a row written by one linker is searchable by the next call of another).
pymilvus is imported only when a store is opened.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from common.modality import Modality
from edge.linking.assignment import Candidate, choose_initial, rank_candidates
from edge.linking.events import Event, IdentityDecision
from edge.linking.gallery import GLOBAL_ID_BLOCK, Gallery, IdentityMatch

if TYPE_CHECKING:
    from edge.linking.linker import IdentityLinker, TrackState

LOG = logging.getLogger("edge.linking.shared")
MAX_MILVUS_DIM = 32_768
MAX_LINKERS = 4096  # global_id_base = linker_index * 2**40 < 2**52 (exact in a float, JSON-safe)
PARTITIONS = {Modality.VISIBLE: "visible", Modality.INFRARED: "infrared"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_MAX_TEXT = 128


class SharedStoreError(RuntimeError):
    """The shared store refused this linker (a taken linker index, an engine it cannot hold)."""


@dataclass
class SharedStoreConfig:
    """The shared identity store (config section ``shared``; empty ``uri``: none, the default).

    Attributes:
        uri: Milvus endpoint (``http://milvus:19530``); ``""``: this linker works alone.
        token: Milvus credentials (``user:password`` or an API key); ``""``: none.
        linker_index: this linker's block of global ids (``linker_index * 2**40`` ..), unique per
            deployment, 0 .. 4095.
        collection: name prefix of the collections (``<collection>_<engine_id>``, ``<collection>_linkers``).
        index_type: Milvus index of the shared vectors (``FLAT``: exact; ``HNSW`` etc. on a cluster).
        timeout_s: per Milvus call.
        retry_after_s: after a failed call, no call for this long (wall-clock seconds).
        publish_interval_s: pending identities are published at most this often (wall clock).
        lookup_limit: nearest rows fetched per partition and lookup.
    """

    uri: str = ""
    token: str = ""
    linker_index: int = 0
    collection: str = "mpanet_identities"
    index_type: str = "FLAT"
    timeout_s: float = 2.0
    retry_after_s: float = 5.0
    publish_interval_s: float = 0.5
    lookup_limit: int = 16

    def __post_init__(self) -> None:
        if not 0 <= self.linker_index < MAX_LINKERS:
            raise ValueError(f"shared.linker_index must be in 0..{MAX_LINKERS - 1}, got {self.linker_index}")
        if not _NAME.match(self.collection):
            raise ValueError(
                f"shared.collection must be a Milvus name ([A-Za-z_][A-Za-z0-9_]*), got {self.collection!r}"
            )
        for name in ("timeout_s", "retry_after_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"shared.{name} must be > 0, got {getattr(self, name)}")
        if self.publish_interval_s < 0:
            raise ValueError(f"shared.publish_interval_s must be >= 0, got {self.publish_interval_s}")
        if not 1 <= self.lookup_limit <= 1024:
            raise ValueError(f"shared.lookup_limit must be in 1..1024, got {self.lookup_limit}")

    @property
    def global_id_base(self) -> int:
        return self.linker_index * GLOBAL_ID_BLOCK


@dataclass(frozen=True)
class RemotePrototype:
    """One prototype row of the shared store (validated)."""

    global_id: int
    linker_id: str
    modality: Modality
    camera_id: str
    weight: float
    updated_ts: float
    vector: np.ndarray  # (D,) float32, unit length


@dataclass
class SharedCounters:
    """What the linker's stats report about the shared store (ints)."""

    lookups: int = 0
    lookup_hits: int = 0
    lookups_skipped: int = 0  # the store was down: decided locally
    published_identities: int = 0
    retired_identities: int = 0
    failures: int = 0
    bad_rows: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class SharedStore:
    """A thin pymilvus client for the shared identity rows (see the module docstring).

    Args:
        config: the ``shared`` section.
        linker_id: this linker's ``service.linker_id`` (owner of the rows it writes).
    """

    def __init__(self, config: SharedStoreConfig, linker_id: str) -> None:
        if not config.uri:
            raise ValueError("a SharedStore needs shared.uri")
        self.config = config
        self.linker_id = linker_id
        self._client: Any = None
        self.collection = ""
        self.dim = 0

    def open(self, engine_id: str, dim: int) -> None:
        """Connect, create (or check) this engine's collection and claim ``linker_index``."""
        if not _NAME.match(f"c_{engine_id}"):
            raise SharedStoreError(f"engine_id {engine_id!r} cannot name a Milvus collection")
        if not 1 <= dim <= MAX_MILVUS_DIM:
            raise SharedStoreError(
                f"Milvus holds vectors of at most {MAX_MILVUS_DIM} values; this engine's are {dim}"
            )
        from pymilvus import DataType, MilvusClient

        cfg = self.config
        client = MilvusClient(uri=cfg.uri, token=cfg.token, timeout=cfg.timeout_s)
        self._claim_index(client, DataType)
        name = f"{cfg.collection}_{engine_id}"
        if not client.has_collection(name, timeout=cfg.timeout_s):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=96)
            schema.add_field("global_id", DataType.INT64)
            schema.add_field("linker_id", DataType.VARCHAR, max_length=_MAX_TEXT)
            schema.add_field("camera_id", DataType.VARCHAR, max_length=_MAX_TEXT)
            schema.add_field("weight", DataType.FLOAT)
            schema.add_field("updated_ts", DataType.DOUBLE)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            params = client.prepare_index_params()
            params.add_index("vector", index_type=cfg.index_type, metric_type="IP")
            client.create_collection(name, schema=schema, index_params=params, timeout=cfg.timeout_s)
        else:
            described = client.describe_collection(name, timeout=cfg.timeout_s)
            dims = [
                int(f.get("params", {}).get("dim", 0)) for f in described["fields"] if f["name"] == "vector"
            ]
            if dims != [dim]:
                raise SharedStoreError(
                    f"collection {name} holds vectors of size {dims}, this engine's are {dim}"
                )
        existing = set(client.list_partitions(name, timeout=cfg.timeout_s))
        for partition in PARTITIONS.values():
            if partition not in existing:
                client.create_partition(name, partition, timeout=cfg.timeout_s)
        client.load_collection(name, timeout=cfg.timeout_s)
        self._client, self.collection, self.dim = client, name, dim

    def _claim_index(self, client: Any, data_type: Any) -> None:
        cfg = self.config
        registry = f"{cfg.collection}_linkers"
        if not client.has_collection(registry, timeout=cfg.timeout_s):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("linker_index", data_type.INT64, is_primary=True)
            schema.add_field("linker_id", data_type.VARCHAR, max_length=_MAX_TEXT)
            schema.add_field("claimed_ts", data_type.DOUBLE)
            schema.add_field("unused", data_type.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field
            params = client.prepare_index_params()
            params.add_index("unused", index_type="FLAT", metric_type="L2")
            client.create_collection(registry, schema=schema, index_params=params, timeout=cfg.timeout_s)
        client.load_collection(registry, timeout=cfg.timeout_s)
        rows = client.get(
            registry, ids=[cfg.linker_index], output_fields=["linker_id"], timeout=cfg.timeout_s
        )
        owners = {str(r.get("linker_id")) for r in rows}
        if owners and owners != {self.linker_id}:
            raise SharedStoreError(
                f"shared.linker_index {cfg.linker_index} is claimed by linker {sorted(owners)[0]!r} in "
                f"{cfg.uri}; give linker {self.linker_id!r} another index (global ids would collide)"
            )
        row = {
            "linker_index": cfg.linker_index,
            "linker_id": self.linker_id,
            "claimed_ts": time.time(),
            "unused": [0.0, 0.0],
        }
        client.upsert(registry, [row], timeout=cfg.timeout_s)

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    # ------------------------------------------------------------------------------ writes

    def publish(
        self, global_id: int, prototypes: list[tuple[Modality, str, float, float, np.ndarray]]
    ) -> None:
        """Make this linker's rows of ``global_id`` exactly ``prototypes`` ((modality, camera_id,
        weight, updated_ts, (D,) float32) each): upsert them, delete the rest by expression."""
        cfg = self.config
        keep: list[str] = []
        by_partition: dict[str, list[dict[str, Any]]] = {}
        counts = {m: 0 for m in Modality}
        for modality, camera, weight, ts, vector in prototypes:
            pk = f"{global_id}:{cfg.linker_index}:{modality}:{counts[modality]}"
            counts[modality] += 1
            keep.append(pk)
            by_partition.setdefault(PARTITIONS[modality], []).append(
                {
                    "pk": pk,
                    "global_id": int(global_id),
                    "linker_id": self.linker_id[:_MAX_TEXT],
                    "camera_id": camera[:_MAX_TEXT],
                    "weight": float(weight),
                    "updated_ts": float(ts),
                    "vector": np.asarray(vector, dtype=np.float32).tolist(),
                }
            )
        for partition, rows in by_partition.items():
            self._client.upsert(self.collection, rows, partition_name=partition, timeout=cfg.timeout_s)
        stale = f"global_id == {int(global_id)} and linker_id == {_quote(self.linker_id)}"
        if keep:
            stale += f" and pk not in [{', '.join(_quote(k) for k in keep)}]"
        self._client.delete(self.collection, filter=stale, timeout=cfg.timeout_s)

    def retire(self, global_ids: Iterable[int]) -> None:
        """Delete every row of these identities (whoever wrote them): they no longer exist."""
        ids = sorted({int(g) for g in global_ids})
        if ids:
            filt = f"global_id in [{', '.join(map(str, ids))}]"
            self._client.delete(self.collection, filter=filt, timeout=self.config.timeout_s)

    # ------------------------------------------------------------------------------- reads

    def nearest(self, query: np.ndarray) -> list[tuple[float, RemotePrototype]]:
        """The ``lookup_limit`` nearest rows of each partition: (cosine, row), unsorted.

        Raises whatever pymilvus raises when the store is unreachable; bad rows are skipped (see
        :attr:`bad_rows`)."""
        cfg = self.config
        out: list[tuple[float, RemotePrototype]] = []
        self.bad_rows = 0
        q = np.asarray(query, dtype=np.float32).reshape(-1).tolist()
        for modality, partition in PARTITIONS.items():
            hits = self._client.search(
                self.collection,
                data=[q],
                anns_field="vector",
                limit=cfg.lookup_limit,
                partition_names=[partition],
                output_fields=["global_id", "linker_id", "camera_id", "weight", "updated_ts", "vector"],
                search_params={"metric_type": "IP"},
                timeout=cfg.timeout_s,
            )
            for hit in hits[0] if hits else ():
                row = self._validated(hit, modality)
                if row is None:
                    self.bad_rows += 1
                    continue
                out.append((float(np.dot(row.vector, np.asarray(q, dtype=np.float32))), row))
        return out

    def _validated(self, hit: Any, modality: Modality) -> RemotePrototype | None:
        try:
            entity = hit.get("entity", hit)
            gid = entity["global_id"]
            if (
                not isinstance(gid, int)
                or isinstance(gid, bool)
                or not 0 <= gid < MAX_LINKERS * GLOBAL_ID_BLOCK
            ):
                return None
            vector = np.asarray(entity["vector"], dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(vector))
            if vector.shape != (self.dim,) or not math.isfinite(norm) or norm < 1e-6:
                return None
            weight, ts = float(entity["weight"]), float(entity["updated_ts"])
            if not (math.isfinite(weight) and weight > 0 and math.isfinite(ts)):
                return None
            camera, linker = entity["camera_id"], entity["linker_id"]
            if not (isinstance(camera, str) and isinstance(linker, str)) or len(camera) > _MAX_TEXT:
                return None
            return RemotePrototype(gid, linker[:_MAX_TEXT], modality, camera, weight, ts, vector / norm)
        except (KeyError, TypeError, ValueError):
            return None


def _quote(text: str) -> str:
    """A Milvus string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class SharedIdentities:
    """The linker's side of the shared store: remote lookups, publishing, catching up.

    Attach it with ``linker.shared = SharedIdentities(...)`` (the linker calls :meth:`find` when a
    first decision has no local match); hand it the events of every ``observe`` / ``end_camera``
    (:meth:`note`) and call :meth:`flush` from the loop.

    Args:
        config: the ``shared`` section.
        linker_id: the owner name of this linker's rows.
        store: the client (default: a :class:`SharedStore` for ``config``).
        clock: wall-clock seconds (for retry and publish intervals; tests pass their own).
    """

    config: SharedStoreConfig
    linker_id: str
    store: SharedStore | None = None
    clock: Callable[[], float] = time.monotonic
    counters: SharedCounters = field(default_factory=SharedCounters)
    _pending: set[int] = field(default_factory=set)
    _retired: set[int] = field(default_factory=set)
    _down_until: float = -math.inf
    _last_flush: float = -math.inf

    def __post_init__(self) -> None:
        if self.store is None:
            self.store = SharedStore(self.config, self.linker_id)

    # --------------------------------------------------------------------------- availability

    @property
    def available(self) -> bool:
        return self.clock() >= self._down_until

    def _ensure_open(self, gallery: Gallery) -> bool:
        assert self.store is not None
        if self.store.is_open:
            return True
        if not self.available:
            return False
        try:
            self.store.open(gallery.engine_id, gallery.dim)
            return True
        except SharedStoreError:
            raise
        except Exception as error:  # noqa: BLE001 - any pymilvus / gRPC failure means "down"
            self._failed("open", error)
            return False

    def _failed(self, what: str, error: Exception) -> None:
        self.counters.failures += 1
        self._down_until = self.clock() + self.config.retry_after_s
        LOG.warning("shared store %s failed (%s); retrying in %.1f s", what, error, self.config.retry_after_s)
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail too
                pass

    # -------------------------------------------------------------------------------- lookups

    def find(self, linker: IdentityLinker, state: TrackState, excluded: set[int]) -> Candidate | None:
        """A remote identity for a track without a local match, imported into ``linker.gallery``.

        Remote rows of identities the gallery already holds (they were considered locally) and of
        ``excluded`` identities (co-occurring with the track) are ignored; the rest are grouped by
        global id and ranked with the linker's rules; only an unambiguous eligible match counts.
        """
        gallery = linker.gallery
        if gallery is None or state.evidence is None:
            return None
        if not self._ensure_open(gallery):
            self.counters.lookups_skipped += 1
            return None
        assert self.store is not None
        self.counters.lookups += 1
        try:
            rows = self.store.nearest(state.evidence)
        except Exception as error:  # noqa: BLE001 - the store went away: decide locally
            self._failed("lookup", error)
            self.counters.lookups_skipped += 1
            return None
        self.counters.bad_rows += self.store.bad_rows
        matches: dict[int, IdentityMatch] = {}
        for cosine, row in rows:
            if row.global_id in gallery.identities or row.global_id in excluded:
                continue
            current = matches.get(row.global_id, IdentityMatch(row.global_id))
            if row.modality is state.modality and cosine > current.cosine_same:
                current = IdentityMatch(
                    row.global_id, cosine, row.camera_id, current.cosine_cross, current.camera_cross
                )
            elif row.modality is not state.modality and cosine > current.cosine_cross:
                current = IdentityMatch(
                    row.global_id, current.cosine_same, current.camera_same, cosine, row.camera_id
                )
            matches[row.global_id] = current
        choice = choose_initial(rank_candidates(matches.values(), state.modality, linker.rules), linker.rules)
        if choice.action != "match" or choice.candidate is None:
            return None
        gid = choice.candidate.global_id
        identity = gallery.create_identity(state.last_seen_ts, gid)
        for _, row in sorted((r for r in rows if r[1].global_id == gid), key=lambda r: -r[1].weight):
            gallery.restore_prototype(
                identity.global_id,
                row.modality,
                row.camera_id,
                None,
                row.weight,
                row.updated_ts,
                row.vector,
                origin=row.linker_id,
            )
        self.counters.lookup_hits += 1
        return choice.candidate

    # ----------------------------------------------------------------------------- publishing

    def note(self, events: Iterable[Event], gallery: Gallery | None) -> None:
        """Remember the identities that ``events`` changed (published at the next :meth:`flush`)."""
        for event in events:
            if not isinstance(event, IdentityDecision):
                continue
            self._pending.add(event.global_id)
            previous = event.previous_global_id
            if previous is not None:
                if gallery is not None and previous in gallery.identities:
                    self._pending.add(previous)
                elif gallery is not None and gallery.owns_global_id(previous):
                    self._retired.add(previous)  # its only evidence moved away: the number retired
        self.counters.pending = len(self._pending) + len(self._retired)

    def flush(self, gallery: Gallery | None, force: bool = False) -> bool:
        """Publish the pending identities (at most every ``publish_interval_s`` unless ``force``).

        Returns True when nothing is left pending. Identities evicted locally meanwhile are not
        deleted from the store (it is the long memory of every linker); retired ones are.
        """
        now = self.clock()
        if gallery is None or not (self._pending or self._retired):
            return not (self._pending or self._retired)
        if not force and now - self._last_flush < self.config.publish_interval_s:
            return False
        if not self._ensure_open(gallery):
            return False
        assert self.store is not None
        self._last_flush = now
        try:
            if self._retired:
                self.store.retire(self._retired)
                self.counters.retired_identities += len(self._retired)
                self._retired.clear()
            for gid in sorted(self._pending):
                identity = gallery.identities.get(gid)
                if identity is not None:
                    vectors = gallery.prototype_vectors(identity)
                    rows = [
                        (p.modality, p.camera_id, p.weight, p.updated_ts, vectors[i])
                        for i, p in enumerate(identity.prototypes)
                        if not p.origin  # imported rows are the other linker's
                    ]
                    self.store.publish(gid, rows)
                    self.counters.published_identities += 1
                self._pending.discard(gid)
        except Exception as error:  # noqa: BLE001 - keep what is left pending, catch up later
            self._failed("publish", error)
        self.counters.pending = len(self._pending) + len(self._retired)
        return not (self._pending or self._retired)
