"""CrossModalitySampler: batch layout, determinism, mid-epoch resume, DDP sharding, epoch conventions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from torch.utils.data import DataLoader

from common import Modality
from trainer.data.sampler import CrossModalitySampler
from trainer.data.samples import LabelledSample


def _dataset(seed: int = 0, num_ids: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Labels and modality flags with uneven counts, some identities below K/2 in one modality."""
    rng = np.random.default_rng(seed)
    labels, flags = [], []
    for label in range(num_ids):
        n_ir = int(rng.integers(1, 14))
        n_rgb = int(rng.integers(1, 20))
        labels += [label] * (n_ir + n_rgb)
        flags += [1] * n_ir + [0] * n_rgb
    order = rng.permutation(len(labels))  # interleave identities in the dataset order
    return np.asarray(labels)[order], np.asarray(flags)[order]


P, K = 4, 6


def test_batches_are_p_distinct_ids_of_contiguous_k_blocks_half_per_modality():
    labels, flags = _dataset()
    sampler = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, seed=3)
    order = np.fromiter(iter(sampler), dtype=np.int64)
    assert order.size == len(sampler) > 0 and order.size % (P * K) == 0
    for batch in order.reshape(-1, P * K):
        blocks = batch.reshape(P, K)
        block_labels = labels[blocks]
        assert (block_labels == block_labels[:, :1]).all()  # each block one identity, contiguous
        assert len(set(block_labels[:, 0].tolist())) == P  # P distinct identities
        np.testing.assert_array_equal(flags[blocks][:, 0::2], 1)  # interleaved IR, RGB, IR, ...
        np.testing.assert_array_equal(flags[blocks][:, 1::2], 0)


def test_works_with_samples_and_a_dataloader():
    labels, flags = _dataset(1)
    samples = [
        LabelledSample(f"img{i}.jpg", int(lab) + 100, 3 if f else 1, Modality.from_flag(int(f)), int(lab))
        for i, (lab, f) in enumerate(zip(labels, flags))
    ]
    sampler = CrossModalitySampler(samples, num_ids_per_batch=P, images_per_id=K, seed=0)
    loader = DataLoader(
        list(range(len(samples))), batch_size=sampler.batch_size, sampler=sampler, drop_last=True
    )
    batches = [b.numpy() for b in loader]
    assert len(batches) == sampler.batches_per_epoch()
    np.testing.assert_array_equal(np.concatenate(batches), sampler.epoch_plan().reshape(-1))


def test_epoch_order_is_a_function_of_seed_and_epoch():
    labels, flags = _dataset()
    a = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, seed=5)
    b = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, seed=5)
    np.random.seed(0)  # noqa: NPY002  (the global RNG must not matter)
    first = list(a)
    np.random.seed(99)  # noqa: NPY002
    assert list(b) == first
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    a.set_epoch(0)
    assert list(a) == first
    c = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, seed=6)
    assert list(c) != first


def test_set_start_batch_resumes_mid_epoch():
    labels, flags = _dataset()
    sampler = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_start_batch(3)
    assert list(sampler) == full[3 * P * K :]
    assert len(sampler) == len(full) - 3 * P * K
    sampler.set_epoch(3)  # a new epoch starts from its first batch again
    assert len(sampler) == sampler.batches_per_epoch() * P * K
    with pytest.raises(ValueError, match="start batch"):
        sampler.set_start_batch(sampler.batches_per_epoch() + 1)


def test_ddp_shards_union_to_the_single_process_epoch():
    labels, flags = _dataset(2, num_ids=16)
    single = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, seed=4)
    single.set_epoch(5)
    world = 2
    shards = []
    for rank in range(world):
        shard = CrossModalitySampler(
            labels, flags, num_ids_per_batch=P, images_per_id=K, seed=4, rank=rank, world_size=world
        )
        shard.set_epoch(5)
        assert shard.batch_size == P * K // world
        assert len(shard) == len(single) // world
        shards.append(np.fromiter(iter(shard), dtype=np.int64).reshape(-1, P * K // world))
    steps = np.fromiter(iter(single), dtype=np.int64).reshape(-1, P * K)
    np.testing.assert_array_equal(np.concatenate(shards, axis=1), steps)
    with pytest.raises(ValueError, match="divisible by world_size"):
        CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, rank=0, world_size=3)


def test_full_pass_uses_every_chunk_and_estimate_is_shorter():
    labels, flags = _dataset(3, num_ids=20)
    full = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K, seed=0)
    short = CrossModalitySampler(
        labels, flags, num_ids_per_batch=P, images_per_id=K, seed=0, epoch_convention="estimate"
    )
    assert 0 < len(short) < len(full)
    assert len(short) == (short.estimate_length() // (P * K)) * P * K
    np.testing.assert_array_equal(list(short), list(full)[: len(short)])
    # Full pass: chunks per identity = floor(2 * max(min(n_ir, n_rgb), K/2) / K); the pass ends when
    # fewer than P identities have chunks left, so at most P - 1 identities keep unused chunks.
    chunks = {}
    for label in np.unique(labels):
        n_ir = int(((labels == label) & (flags == 1)).sum())
        n_rgb = int(((labels == label) & (flags == 0)).sum())
        chunks[label] = (2 * max(min(n_ir, n_rgb), K // 2)) // K
    used = np.bincount(labels[full.epoch_plan()[:, :, 0].reshape(-1)], minlength=len(chunks))
    leftover = [chunks[label] - used[label] for label in chunks]
    assert all(x >= 0 for x in leftover)
    assert sum(1 for x in leftover if x > 0) < P


def test_identities_with_one_modality_are_left_out_with_a_warning(caplog: pytest.LogCaptureFixture):
    labels, flags = _dataset()
    labels = np.concatenate([labels, [50, 50, 50]])
    flags = np.concatenate([flags, [0, 0, 0]])
    with caplog.at_level(logging.WARNING):
        sampler = CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=K)
    assert sampler.excluded_labels == (50,)
    assert "one modality only" in caplog.text
    assert 50 not in set(labels[list(sampler)].tolist())


def test_invalid_arguments_are_rejected():
    labels, flags = _dataset()
    with pytest.raises(ValueError, match="even"):
        CrossModalitySampler(labels, flags, num_ids_per_batch=P, images_per_id=5)
    with pytest.raises(ValueError, match="at least num_ids_per_batch"):
        CrossModalitySampler(labels, flags, num_ids_per_batch=50, images_per_id=K)
    with pytest.raises(ValueError, match="modalities"):
        CrossModalitySampler(labels, flags[:-1], num_ids_per_batch=P, images_per_id=K)
