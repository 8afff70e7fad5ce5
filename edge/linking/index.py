"""Stage one of the gallery's two-stage search: a compact faiss index over a store's prototype slots.

The full prototypes (e.g. 14336-d, 28-56 KiB each) make an exhaustive scan cost gallery bytes per
query: 100k identities took ~0.5 s per search. Stage one searches *compact* vectors (a projection of
each prototype to ``d`` = 256 .. 2048 values, unit length) for the ``k`` most promising slots; stage
two (:meth:`edge.linking.gallery.Gallery.match_many`) re-ranks those slots exactly on the full
prototypes, so every cosine the linker sees is exact and only the *candidate set* is approximate.

Projections (:func:`make_projection`, ``gallery.compact``):

* ``global:C`` - the last C values of the embedding: MPANet's global average-pooled part (the
  ``global`` compression of ``mpanet-compress``, C = 2048 for ResNet-50);
* ``pca:PATH`` - the PCA written by ``mpanet-compress --kind pca`` (``<variant>.pca.npz``:
  ``mean`` (D,), ``components`` (k, D)), fitted on training embeddings of this engine;
* ``random:K`` - a fixed random (near-)orthonormal projection to K values (seeded: every linker and
  every restart gets the same one). Needs no file and works with any engine; Johnson-Lindenstrauss: a
  cosine is kept within about 1/sqrt(K);
* ``identity`` - the embedding itself (an engine that is already compact);
* ``auto`` - ``identity`` when D <= ``compact_dim``, else ``random:<compact_dim>``.

Index by size (per store): below ``flat_below`` slots an exhaustive scan of the compact vectors
(faiss ``knn``, float32); from there an IVF with scalar-quantised storage (``IndexIVFScalarQuantizer``,
QT_fp16 or QT_8bit, inner product) trained on the compact vectors then present, retrained when the
store has grown ``retrain_growth`` times. IVF rather than HNSW because prototypes change with every
sighting and are evicted: with a hash-table direct map an IVF entry is removed and re-added in
~0.06 ms, whereas faiss' HNSW cannot remove or update a vector (stale entries would stay in the
graph until a rebuild).

Updates are lazy and batched: :meth:`CompactIndex.update` records the new full vector of a slot and
:meth:`CompactIndex.remove` forgets a slot at once; pending updates are projected in one matrix
product and written before the next search (or when ``max_pending`` accumulate), so a search never
sees an old version of a prototype, and a removed slot is never a candidate.

Training is inline (in the decision loop), not in a background thread: a replay must give the same
decisions whatever the scheduling, and a background build would make the switch-over point depend
on timing. Its cost is measured by ``benchmarks/bench_linker.py`` (``build_s``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COMPACT_STORAGE = ("float16", "int8")
_RANDOM_SEED = 20240601  # fixed: every linker, every restart projects the same way


class CompactIndexError(ValueError):
    """A compact projection that cannot be built (bad spec, PCA file of another size, non-finite)."""


@dataclass(frozen=True)
class Projection:
    """Full embedding (D,) -> compact vector (d,), both unit length.

    Attributes:
        kind: ``identity``, ``global``, ``random`` or ``pca``.
        dim_in: D; dim_out: d.
        matrix: (d, D) float32 rows for ``random`` / ``pca`` (None otherwise): ``x @ matrix.T``
            (rows contiguous: a product with one query reads each row once, ~3x faster than (D, d)).
        mean: (D,) float32 subtracted first (``pca`` only).
    """

    kind: str
    dim_in: int
    dim_out: int
    matrix: np.ndarray | None = None
    mean: np.ndarray | None = None

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) float32 -> (N, d) float32 unit rows (a zero row stays zero)."""
        x = np.asarray(vectors, dtype=np.float32)
        if self.kind == "global":
            out = x[:, self.dim_in - self.dim_out :]
        elif self.kind == "identity":
            out = x
        else:
            assert self.matrix is not None
            out = (x - self.mean) @ self.matrix.T if self.mean is not None else x @ self.matrix.T
        out = np.array(out, dtype=np.float32, copy=True, order="C")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def make_projection(spec: str, dim: int, compact_dim: int) -> Projection:
    """The projection named by ``spec`` (see the module docstring) for D = ``dim`` embeddings.

    Raises:
        CompactIndexError: an unknown spec, a size that does not fit D, an unreadable PCA file.
    """
    kind, _, arg = spec.partition(":")
    if kind == "auto":
        return make_projection(
            "identity" if dim <= compact_dim else f"random:{compact_dim}", dim, compact_dim
        )
    if kind == "identity":
        return Projection("identity", dim, dim)
    if kind in ("global", "random"):
        try:
            size = int(arg)
        except ValueError:
            raise CompactIndexError(f"gallery.compact {spec!r}: expected {kind}:<size>") from None
        if not 0 < size <= dim:
            raise CompactIndexError(
                f"gallery.compact {spec!r}: size must be in 1..{dim} (the embedding size)"
            )
        if kind == "global":
            return Projection("global", dim, size)
        rng = np.random.default_rng(_RANDOM_SEED + dim * 7919 + size)
        rows = rng.standard_normal((size, dim), dtype=np.float32)
        if dim * size <= 2**20:
            # Small: orthonormal rows (QR), no direction stretched. Large (14336 x 256): Gaussian rows
            # in high dimension are orthogonal within ~1/sqrt(D) already, and QR's workspace would
            # triple the transient memory (+45 MiB at the first batch of a 14336-d engine).
            rows = np.linalg.qr(rows.T)[0].T
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return Projection("random", dim, size, np.ascontiguousarray(rows, dtype=np.float32))
    if kind == "pca":
        return _pca_projection(Path(arg), dim)
    raise CompactIndexError(
        f"gallery.compact must be auto, identity, global:<C>, random:<K> or pca:<file.npz>, got {spec!r}"
    )


def _pca_projection(path: Path, dim: int) -> Projection:
    try:
        with np.load(path) as data:
            mean = np.asarray(data["mean"], dtype=np.float32)
            components = np.asarray(data["components"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as error:
        raise CompactIndexError(
            f"gallery.compact pca:{path}: cannot read mean / components ({error})"
        ) from None
    if components.ndim != 2 or components.shape[1] != dim or mean.shape != (dim,):
        raise CompactIndexError(
            f"gallery.compact pca:{path}: expected mean ({dim},) and components (k, {dim}) for this "
            f"engine's {dim}-d embeddings, got {mean.shape} and {components.shape}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(components).all()) or len(components) < 1:
        raise CompactIndexError(f"gallery.compact pca:{path}: components must be finite and k >= 1")
    return Projection("pca", dim, len(components), np.ascontiguousarray(components), mean)


@dataclass(frozen=True)
class CompactIndexConfig:
    """How one store's compact index is built (fields of :class:`~edge.linking.gallery.GalleryConfig`).

    Attributes:
        flat_below: exhaustive compact scan below this many slots; IVF from there.
        storage: IVF code storage, ``float16`` (QT_fp16) or ``int8`` (QT_8bit, a quarter of float32).
        nprobe: IVF lists visited per query (at least; and at least 1/32 of the lists).
        retrain_growth: retrain (more lists) when the store holds this many times the slots it was
            trained with.
        max_pending: flush pending updates once this many accumulate (bounds their memory).
    """

    flat_below: int = 20_000
    storage: str = "float16"
    nprobe: int = 32
    retrain_growth: float = 4.0
    max_pending: int = 256


class CompactIndex:
    """Compact vectors of one :class:`~edge.linking.gallery.PrototypeStore`'s slots, searchable.

    Slots are the store's slot numbers (faiss ids). The compact vectors are kept in ``vectors``
    ((capacity, d) float32, row = slot; zero where no vector) as the master copy: the flat scan
    reads it and the IVF is (re)built from it.

    Args:
        projection: full -> compact.
        config: index choice and update batching.
    """

    def __init__(self, projection: Projection, config: CompactIndexConfig) -> None:
        import faiss  # heavy optional dependency: only where a gallery is built

        if config.storage not in COMPACT_STORAGE:
            raise CompactIndexError(
                f"gallery.compact_storage must be one of {COMPACT_STORAGE}, got {config.storage!r}"
            )
        self._faiss = faiss
        self.projection = projection
        self.config = config
        self.dim = projection.dim_out
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        self.present = np.zeros(0, dtype=bool)
        self._pending: dict[int, np.ndarray] = {}  # slot -> latest full vector (float32, unit)
        self._ivf: Any = None
        self._ivf_ids = np.zeros(0, dtype=bool)  # slots the IVF holds
        self.trained_with = 0
        self.trainings = 0

    # ----------------------------------------------------------------------------- bookkeeping

    @property
    def kind(self) -> str:
        """``flat`` or ``ivf<nlist>``."""
        return "flat" if self._ivf is None else f"ivf{self._ivf.nlist}"

    @property
    def num_present(self) -> int:
        return int(self.present.sum()) + sum(1 for s in self._pending if not self._present(s))

    @property
    def nbytes(self) -> int:
        """Bytes held: the master compact vectors plus the IVF's codes and coarse centroids."""
        total = self.vectors.nbytes
        if self._ivf is not None:
            total += int(self._ivf.ntotal) * int(self._ivf.code_size) + self._ivf.nlist * self.dim * 4
        return total

    def _present(self, slot: int) -> bool:
        return slot < len(self.present) and bool(self.present[slot])

    def _grow(self, capacity: int) -> None:
        if capacity <= len(self.present):
            return
        size = max(capacity, 2 * len(self.present), 64)  # amortised doubling
        vectors = np.zeros((size, self.dim), dtype=np.float32)
        vectors[: len(self.vectors)] = self.vectors
        present = np.zeros(size, dtype=bool)
        present[: len(self.present)] = self.present
        ivf_ids = np.zeros(size, dtype=bool)
        ivf_ids[: len(self._ivf_ids)] = self._ivf_ids
        self.vectors, self.present, self._ivf_ids = vectors, present, ivf_ids

    # --------------------------------------------------------------------------------- updates

    def update(self, slot: int, vector: np.ndarray) -> None:
        """Slot ``slot`` now holds ``vector`` ((D,) float32 full prototype, unit length)."""
        self._pending[int(slot)] = np.asarray(vector, dtype=np.float32).reshape(-1).copy()
        if len(self._pending) >= self.config.max_pending:
            self.flush()

    def remove(self, slot: int) -> None:
        """Slot ``slot`` was released: it is no candidate from now on."""
        slot = int(slot)
        self._pending.pop(slot, None)
        if self._present(slot):
            self.present[slot] = False
            self.vectors[slot] = 0.0
            if self._ivf_ids[slot]:
                self._ivf.remove_ids(self._faiss.IDSelectorArray(np.array([slot], dtype=np.int64)))
                self._ivf_ids[slot] = False

    def remap(self, mapping: Mapping[int, int]) -> None:
        """The store moved slots (``{old: new}`` for every occupied slot, after ``compact()``)."""
        self.flush()
        old = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
        new = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
        size = int(new.max()) + 1 if len(new) else 0
        had = np.zeros(len(old), dtype=bool)
        known = old < len(self.present)
        had[known] = self.present[old[known]]
        vectors = np.zeros((size, self.dim), dtype=np.float32)
        vectors[new[had]] = self.vectors[old[had]]
        present = np.zeros(size, dtype=bool)
        present[new[had]] = True
        self.vectors, self.present = vectors, present
        self._ivf_ids = np.zeros(size, dtype=bool)
        if self._ivf is not None:
            self._ivf.reset()  # same centroids, new ids
            self._add_to_ivf(np.flatnonzero(self.present))

    def flush(self) -> None:
        """Project and write the pending updates (one matrix product); train or retrain the IVF
        when the store crossed ``flat_below`` or grew ``retrain_growth`` times."""
        if self._pending:
            slots = np.fromiter(self._pending.keys(), dtype=np.int64, count=len(self._pending))
            full = np.stack(list(self._pending.values()))
            self._pending = {}
            self._grow(int(slots.max()) + 1)
            self.vectors[slots] = self.projection(full)
            self.present[slots] = True
            if self._ivf is not None:
                stale = slots[self._ivf_ids[slots]]
                if len(stale):
                    self._ivf.remove_ids(self._faiss.IDSelectorArray(stale))
                self._add_to_ivf(slots)
        count = int(self.present.sum())
        if self._ivf is None:
            if count >= self.config.flat_below:
                self._train(count)
        elif count >= self.config.retrain_growth * self.trained_with:
            self._train(count)

    # ---------------------------------------------------------------------------------- search

    def candidates(self, compact_queries: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` slots whose compact vectors are closest to each query's.

        Args:
            compact_queries: (Q, d) float32, the queries through :attr:`projection` (the caller
                projects once for both stores).
            k: candidates per query.

        Returns:
            (Q, k') int64 slots, best first, -1 where there are fewer (k' <= k).
        """
        self.flush()
        q = np.ascontiguousarray(compact_queries, dtype=np.float32)
        count = len(self.present)
        k = min(int(k), count)
        if k <= 0 or len(q) == 0:
            return np.full((len(q), 0), -1, dtype=np.int64)
        if self._ivf is None:
            _, slots = self._faiss.knn(q, self.vectors[:count], k, metric=self._faiss.METRIC_INNER_PRODUCT)
            slots = np.asarray(slots, dtype=np.int64)
        else:
            _, slots = self._ivf.search(q, k)
        valid = slots >= 0
        valid[valid] = self.present[slots[valid]]
        return np.where(valid, slots, -1)

    # ------------------------------------------------------------------------------------- IVF

    def _train(self, count: int) -> None:
        """(Re)build the IVF: nlist ~ 4 sqrt(N) (a power of two), trained with the k-means on at
        most 32 x nlist compact vectors (evenly spaced slots: deterministic), then every present
        vector added."""
        faiss = self._faiss
        nlist = max(16, 2 ** int(round(math.log2(4 * math.sqrt(count)))))
        while nlist > 16 and 8 * nlist > count:  # k-means wants >= 8 points per list
            nlist //= 2
        present = np.flatnonzero(self.present)
        sample = present[np.linspace(0, len(present) - 1, min(len(present), 32 * nlist)).astype(np.int64)]
        quantizer = faiss.IndexFlatIP(self.dim)
        qtype = (
            faiss.ScalarQuantizer.QT_fp16
            if self.config.storage == "float16"
            else faiss.ScalarQuantizer.QT_8bit
        )
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, qtype, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = 10
        ivf.cp.min_points_per_centroid = 8  # fewer than faiss' 39 per list is fine for candidates
        ivf.cp.max_points_per_centroid = 32
        ivf.cp.seed = 1234
        ivf.train(np.ascontiguousarray(self.vectors[sample]))
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids in O(1) per id
        # At least `nprobe` lists and at least 1/32 of them: a fixed count would visit a shrinking
        # share of the store as it grows (recall@1 0.985 at 500k prototypes with 32 of 2048 lists).
        ivf.nprobe = min(max(self.config.nprobe, nlist // 32), nlist)
        self._quantizer = quantizer  # the IVF does not own it: keep it alive
        self._ivf = ivf
        self._ivf_ids = np.zeros(len(self.present), dtype=bool)
        self._add_to_ivf(present)
        self.trained_with = count
        self.trainings += 1

    def _add_to_ivf(self, slots: np.ndarray) -> None:
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots):
            self._ivf.add_with_ids(np.ascontiguousarray(self.vectors[slots]), slots)
            self._ivf_ids[slots] = True
