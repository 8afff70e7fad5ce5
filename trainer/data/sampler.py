"""The cross-modality identity sampler of MPANet (spec section 3, "Sampler details").

One *step* (= one global batch) is P distinct identities x K images, each identity's K images
contiguous and interleaved infrared, visible, infrared, ... (K/2 of each). An epoch is one full pass:

1. per identity, the infrared and visible index lists; a list shorter than K/2 is resampled with
   replacement to K/2; the longer list is randomly truncated to the shorter's length;
2. both are shuffled, interleaved IR, RGB, IR, RGB, ... and cut into chunks of K (the incomplete
   last chunk is dropped);
3. each step draws P distinct identities that still have chunks (without replacement) and takes one
   chunk of each; an identity leaves the pool when its chunks run out; the pass ends when fewer than P
   identities remain.

``epoch_convention="estimate"`` keeps only the first ``estimate // (P*K)`` steps of the pass, where
``estimate`` is the official sampler's ``__len__`` (infrared counts only, about half a pass): the
shorter epoch of training loops that take the epoch length from ``len(dataloader)``.

Determinism: the epoch's order is a function of (seed, epoch) only (own ``numpy`` Generator seeded
with ``[seed, epoch]``), so a resumed run reproduces it; :meth:`set_start_batch` skips batches for a
mid-epoch resume. Distributed: every rank builds the same global steps; rank r takes identity
blocks ``r*P/W .. (r+1)*P/W - 1`` of each step, so the union over ranks is the single-process epoch.

Deviation from the official code: the official sampler resamples only when *both* lists are shorter
than K/2 (and then crashes on an identity with one short list, which yields no chunk); here each
short list is resampled on its own. Identities with no image of one modality cannot form a block and
are left out (listed in :attr:`CrossModalitySampler.excluded_labels`, with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from torch.utils.data import Sampler

from common import Modality

__all__ = ["CrossModalitySampler", "EpochConvention"]

EpochConvention = Literal["full_pass", "estimate"]
_LOG = logging.getLogger(__name__)


class CrossModalitySampler(Sampler[int]):
    """P identities x K images per step, K/2 infrared + K/2 visible, each identity's K contiguous.

    Args:
        source: the training samples (objects with ``label`` and ``modality``), or their int labels
            (then ``modalities`` is required).
        modalities: per-index :class:`Modality` or flag (0 visible, 1 infrared) when ``source`` is labels.
        num_ids_per_batch: P, identities per global batch (divisible by ``world_size``).
        images_per_id: K, images per identity per batch (even).
        seed: non-negative int; with the epoch it fixes the order.
        epoch_convention: ``"full_pass"`` (default) or ``"estimate"`` (see module doc).
        rank, world_size: distributed sharding (defaults: single process).

    Use with ``DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True)``;
    ``sampler.batch_size == P * K // world_size``.
    """

    def __init__(
        self,
        source: Sequence[object] | Sequence[int] | np.ndarray,
        modalities: Sequence[Modality | int] | np.ndarray | None = None,
        *,
        num_ids_per_batch: int,
        images_per_id: int,
        seed: int = 0,
        epoch_convention: EpochConvention = "full_pass",
        rank: int = 0,
        world_size: int = 1,
    ):
        labels, flags = _labels_and_flags(source, modalities)
        if images_per_id < 2 or images_per_id % 2:
            raise ValueError(
                f"images_per_id (K) must be even and >= 2 (K/2 per modality), got {images_per_id}"
            )
        if num_ids_per_batch < 1:
            raise ValueError(f"num_ids_per_batch (P) must be >= 1, got {num_ids_per_batch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if num_ids_per_batch % world_size:
            raise ValueError(
                f"num_ids_per_batch (P={num_ids_per_batch}) must be divisible by world_size ({world_size}): "
                "each rank takes P/world_size identity blocks of every step"
            )
        if epoch_convention not in ("full_pass", "estimate"):
            raise ValueError(f"epoch_convention must be 'full_pass' or 'estimate', got {epoch_convention!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.num_ids_per_batch = int(num_ids_per_batch)
        self.images_per_id = int(images_per_id)
        self.seed = int(seed)
        self.epoch_convention: EpochConvention = epoch_convention
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.start_batch = 0

        self._infrared: dict[int, np.ndarray] = {}
        self._visible: dict[int, np.ndarray] = {}
        excluded = []
        for label in np.unique(labels).tolist():
            members = np.flatnonzero(labels == label)
            ir, rgb = members[flags[members] == 1], members[flags[members] == 0]
            if ir.size == 0 or rgb.size == 0:
                excluded.append(int(label))
                continue
            self._infrared[int(label)], self._visible[int(label)] = ir, rgb
        self.excluded_labels: tuple[int, ...] = tuple(excluded)
        if excluded:
            _LOG.warning(
                "CrossModalitySampler: %d identities have images of one modality only and are left out "
                "(labels %s%s)",
                len(excluded),
                excluded[:10],
                "..." if len(excluded) > 10 else "",
            )
        if len(self._infrared) < self.num_ids_per_batch:
            raise ValueError(
                f"only {len(self._infrared)} identities have both visible and infrared images; "
                f"need at least num_ids_per_batch={self.num_ids_per_batch}"
            )
        self._plan_cache: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------------------------ control

    @property
    def batch_size(self) -> int:
        """Indices per batch on this rank: P * K / world_size."""
        return self.num_ids_per_batch * self.images_per_id // self.world_size

    @property
    def labels(self) -> list[int]:
        """Identity labels the sampler draws from (sorted)."""
        return sorted(self._infrared)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields; resets :meth:`set_start_batch`."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self.start_batch = 0

    def set_start_batch(self, batch: int) -> None:
        """Skip the first ``batch`` batches of the current epoch (mid-epoch resume)."""
        steps = self.batches_per_epoch()
        if not 0 <= batch <= steps:
            raise ValueError(
                f"start batch must be in 0..{steps} (batches in epoch {self.epoch}), got {batch}"
            )
        self.start_batch = int(batch)

    def batches_per_epoch(self) -> int:
        """Steps (batches per rank) in the current epoch, before any start-batch skip."""
        return int(self.epoch_plan().shape[0])

    def estimate_length(self) -> int:
        """The official sampler's ``__len__``: sum over ids of max(n_IR, K) rounded down to K."""
        k = self.images_per_id
        return int(sum(max(ir.size, k) - max(ir.size, k) % k for ir in self._infrared.values()))

    # ------------------------------------------------------------------------------------- order

    def epoch_plan(self, epoch: int | None = None) -> np.ndarray:
        """The global steps of ``epoch`` (default: current) as an int64 array (steps, P, K) of indices."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        plan = self._build_plan(epoch)
        self._plan_cache = (epoch, plan)
        return plan

    def _build_plan(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        k, half, p = self.images_per_id, self.images_per_id // 2, self.num_ids_per_batch
        chunks: dict[int, list[np.ndarray]] = {}
        for label in self.labels:
            ir, rgb = self._infrared[label], self._visible[label]
            if ir.size < half:
                ir = rng.choice(ir, size=half, replace=True)
            if rgb.size < half:
                rgb = rng.choice(rgb, size=half, replace=True)
            n = min(ir.size, rgb.size)
            ir = rng.permutation(ir)[:n] if ir.size > n else rng.permutation(ir)
            rgb = rng.permutation(rgb)[:n] if rgb.size > n else rng.permutation(rgb)
            pairs = np.empty(2 * n, dtype=np.int64)
            pairs[0::2], pairs[1::2] = ir, rgb
            usable = (2 * n // k) * k
            chunks[label] = list(pairs[:usable].reshape(-1, k))
        available = [label for label in self.labels if chunks[label]]
        steps: list[np.ndarray] = []
        while len(available) >= p:
            picked = rng.choice(len(available), size=p, replace=False)
            chosen = [available[i] for i in picked]
            steps.append(np.stack([chunks[label].pop(0) for label in chosen]))
            available = [label for label in available if chunks[label]]
        plan = np.stack(steps) if steps else np.empty((0, p, k), dtype=np.int64)
        if self.epoch_convention == "estimate":
            plan = plan[: self.estimate_length() // (p * k)]
        return plan

    def __iter__(self) -> Iterator[int]:
        plan = self.epoch_plan()
        per_rank = self.num_ids_per_batch // self.world_size
        mine = plan[self.start_batch :, self.rank * per_rank : (self.rank + 1) * per_rank, :]
        return iter(mine.reshape(-1).tolist())

    def __len__(self) -> int:
        """Indices this rank yields in the current epoch (after any start-batch skip)."""
        return (self.batches_per_epoch() - self.start_batch) * self.batch_size


def _labels_and_flags(
    source: Sequence[object] | Sequence[int] | np.ndarray,
    modalities: Sequence[Modality | int] | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    items = list(source)
    if not items:
        raise ValueError("CrossModalitySampler needs at least one sample")
    if modalities is None:
        if not all(hasattr(s, "label") and hasattr(s, "modality") for s in items):
            raise TypeError("pass samples with .label and .modality, or labels plus modalities=")
        labels = np.asarray([int(s.label) for s in items], dtype=np.int64)  # type: ignore[attr-defined]
        flags = np.asarray([Modality.parse(s.modality).flag for s in items], dtype=np.int64)  # type: ignore[attr-defined]
    else:
        labels = np.asarray([int(x) for x in items], dtype=np.int64)
        flags = np.asarray(
            [m.flag if isinstance(m, Modality) else int(m) for m in list(modalities)], dtype=np.int64
        )
        if flags.shape != labels.shape:
            raise ValueError(f"{labels.size} labels but {flags.size} modalities")
    if np.any((flags != 0) & (flags != 1)):
        raise ValueError("modality flags must be 0 (visible) or 1 (infrared)")
    if np.any(labels < 0):
        raise ValueError("labels must be >= 0 (relabelled identities)")
    return labels, flags
