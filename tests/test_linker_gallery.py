"""The linker's faiss gallery: slot store, search, prototypes, TTL, memory bound, engine check."""

from __future__ import annotations

import numpy as np
import pytest

from common.modality import Modality
from edge.linking.gallery import Gallery, GalleryConfig, PrototypeStore

VIS, IR = Modality.VISIBLE, Modality.INFRARED


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(("dtype", "atol"), [("float32", 1e-5), ("float16", 2e-3)])
def test_store_search_is_exact_inner_product(dtype, atol):
    store = PrototypeStore(32, dtype)
    vectors = unit_rows(200, 32)
    slots = [store.allocate(1000) for _ in range(200)]
    for slot, v in zip(slots, vectors):
        store.write(slot, v)
    queries = unit_rows(5, 32, seed=1)
    cosines, found = store.search(queries, 10)
    expected = queries @ vectors.T
    for q in range(5):
        top = np.argsort(-expected[q])[:10]
        assert list(found[q][:3]) == [slots[i] for i in top[:3]]
        np.testing.assert_allclose(cosines[q], expected[q][[slots.index(s) for s in found[q]]], atol=atol)
    np.testing.assert_allclose(store.read(slots[:4]), vectors[:4], atol=atol)
    assert store.nbytes == store.capacity * 32 * (4 if dtype == "float32" else 2)


def test_store_reuses_released_slots_and_never_returns_them():
    store = PrototypeStore(8, "float32")
    a, b, c = store.allocate(3), store.allocate(3), store.allocate(3)
    assert store.allocate(3) is None  # bound reached
    for slot in (a, b, c):
        store.write(slot, np.eye(8, dtype=np.float32)[slot])
    store.release(b)
    cosines, found = store.search(np.eye(8, dtype=np.float32)[[b]], 3)
    assert b not in found[0].tolist()
    assert store.allocate(3) == b
    store.write(b, np.eye(8, dtype=np.float32)[b])
    assert store.capacity == 3
    store.release(a)
    assert store.compact() == {b: 1, c: 0}  # the last slot moved into the hole
    assert store.capacity == 2 and store.nbytes == 2 * 8 * 4
    np.testing.assert_allclose(store.read([0, 1]), np.eye(8, dtype=np.float32)[[c, b]])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_store_in_many_blocks_searches_grows_and_compacts_exactly(dtype):
    dim = 16
    store = PrototypeStore(dim, dtype, block_bytes=100 * dim * 4)  # blocks of 100 (float32) / 200 slots
    vectors = unit_rows(700, dim, seed=3)
    slots = [store.allocate(10_000) for _ in range(700)]
    assert slots == list(range(700))
    for slot, v in zip(slots, vectors):
        store.write(slot, v)
    assert len(store._blocks) > 2 and store.capacity >= 700
    assert store.nbytes == store.capacity * store.code_size  # exactly what the blocks hold
    queries = unit_rows(3, dim, seed=4)
    expected = queries @ vectors.T
    cosines, found = store.search(queries, 25)
    for q in range(3):
        best = np.sort(expected[q])[::-1][:25]
        np.testing.assert_allclose(expected[q][found[q]], best, atol=2e-3)  # float16 may swap near-ties
        np.testing.assert_allclose(cosines[q], best, atol=2e-3)
    for slot in range(0, 700, 2):
        store.release(slot)
    mapping = store.compact()
    assert sorted(mapping) == list(range(1, 700, 2)) and sorted(mapping.values()) == list(range(350))
    assert store.capacity == 350 and store.nbytes == 350 * store.code_size
    moved = [mapping[s] for s in range(1, 700, 2)]
    np.testing.assert_allclose(store.read(moved), vectors[1::2], atol=2e-3)
    cosines, found = store.search(vectors[[101]], 1)
    assert found[0, 0] == mapping[101]


def test_gallery_excludes_the_tracks_own_prototype():
    gallery = Gallery(16, GalleryConfig())
    a = gallery.create_identity(0.0).global_id
    v = unit_rows(1, 16)[0]
    assert gallery.set_track_prototype(a, ("n", "cam0", 1), VIS, "cam0", v, 3.0, 0.0)
    found = gallery.match_many(v[None], VIS, [("n", "cam0", 1)], top_k=5)
    assert found[0] == {}
    found = gallery.match_many(v[None], IR, [None], top_k=5)  # an infrared query sees it as cross
    assert found[0][a].cosine_cross == pytest.approx(1.0, abs=1e-5)
    assert gallery.match_identity(a, v, VIS, ("n", "cam0", 1)) is None
    assert gallery.match_identity(a, v, VIS, None).cosine_same == pytest.approx(1.0, abs=1e-5)


def test_gallery_merges_ended_track_prototypes_beyond_the_bound():
    gallery = Gallery(16, GalleryConfig(prototypes_per_modality=2))
    gid = gallery.create_identity(0.0).global_id
    vectors = unit_rows(4, 16)
    for t in range(4):
        gallery.set_track_prototype(gid, ("n", "c", t), VIS, "c", vectors[t], 1.0, float(t))
    identity = gallery.identities[gid]
    assert len(identity.prototypes_of(VIS)) == 2
    assert sum(p.weight for p in identity.prototypes) == 4.0
    assert gallery.num_slots_used == 2
    # Live tracks keep their own prototypes: with both live the bound is exceeded rather than merged.
    gallery2 = Gallery(16, GalleryConfig(prototypes_per_modality=2))
    gid2 = gallery2.create_identity(0.0).global_id
    gallery2.identities[gid2].live_tracks = {("n", "c", t) for t in range(3)}
    for t in range(3):
        gallery2.set_track_prototype(gid2, ("n", "c", t), VIS, "c", vectors[t], 1.0, float(t))
    assert len(gallery2.identities[gid2].prototypes) == 3


def test_gallery_ttl_evicts_only_identities_without_live_tracks():
    gallery = Gallery(8, GalleryConfig(ttl_s=10.0))
    old = gallery.create_identity(0.0).global_id
    live = gallery.create_identity(0.0).global_id
    recent = gallery.create_identity(0.0).global_id
    gallery.touch(recent, 5.0)
    gallery.identities[live].live_tracks.add(("n", "c", 1))
    assert gallery.expired(9.0) == []
    assert gallery.expired(10.5) == [old]
    assert gallery.expired(20.0) == [old, recent]


def test_gallery_capacity_candidates_are_least_recently_seen():
    gallery = Gallery(8, GalleryConfig(max_identities=3))
    ids = [gallery.create_identity(float(t)).global_id for t in range(3)]
    gallery.touch(ids[0], 10.0)  # seen again: now the most recent
    assert gallery.eviction_candidates(1, 0) == [ids[1]]
    assert gallery.eviction_candidates(1, 0, protect=[ids[1]]) == [ids[2]]
    for gid in ids:
        gallery.identities[gid].live_tracks.add(("n", "c", gid))
    assert gallery.eviction_candidates(1, 0) is None  # everyone is live: nothing may go
    assert gallery.eviction_candidates(0, 0) == []


def test_gallery_memory_bound_limits_slots_and_bytes():
    dim = 64
    config = GalleryConfig(max_memory_mb=10 * dim * 4 / 2**20)  # room for 10 float32 vectors
    gallery = Gallery(dim, config)
    assert gallery.max_slots == 10
    vectors = unit_rows(12, dim)
    stored = []
    for t in range(12):
        gid = gallery.create_identity(float(t)).global_id
        stored.append(gallery.set_track_prototype(gid, ("n", "c", t), VIS, "c", vectors[t], 1.0, float(t)))
    assert stored == [True] * 10 + [False] * 2
    assert gallery.nbytes <= 10 * dim * 4  # both stores together
    assert gallery.num_slots_used == 10
    assert gallery.eviction_candidates(0, 1) == [0]
    # Free the visible store and fill the infrared one: the budget moves over (by compaction).
    for gid in range(10):
        gallery.remove_identity(gid)
    for t in range(10):
        gid = gallery.create_identity(20.0 + t).global_id
        assert gallery.set_track_prototype(gid, ("n", "d", t), IR, "d", vectors[t], 1.0, 20.0 + t)
    assert gallery.nbytes <= 10 * dim * 4
    assert gallery.stores[IR].num_occupied == 10
    found = gallery.match_many(vectors[3][None], IR, [None], top_k=1)[0]
    assert max(found.values(), key=lambda m: m.cosine_same).cosine_same == pytest.approx(1.0, abs=1e-5)


def test_gallery_engine_check_adopts_then_refuses():
    gallery = Gallery(8, GalleryConfig())
    assert not gallery.check_engine("")  # embeddings without an engine id are never accepted
    assert gallery.check_engine("aaaa")
    assert gallery.check_engine("aaaa")
    assert not gallery.check_engine("bbbb")
    fixed = Gallery(8, GalleryConfig(engine_id="cccc"))
    assert not fixed.check_engine("aaaa") and fixed.check_engine("cccc")


def test_gallery_numbers_only_go_up():
    gallery = Gallery(8, GalleryConfig())
    a = gallery.create_identity(0.0).global_id
    gallery.remove_identity(a)
    assert gallery.create_identity(1.0).global_id == a + 1
    with pytest.raises(ValueError):
        gallery.create_identity(2.0, global_id=a + 1)
