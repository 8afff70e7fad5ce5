"""The two-stage search: compact projections, the compact index (flat and IVF), exact re-ranking,
and that eviction, revision, compaction and snapshots keep the index in step with the gallery."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.modality import Modality
from edge.linking.gallery import Gallery, GalleryConfig, PrototypeStore
from edge.linking.index import CompactIndex, CompactIndexConfig, CompactIndexError, make_projection

DIM = 512


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def correlated(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """Identities sharing an 8-d latent space (cosines between them spread, as in a real embedding)."""
    basis = rng.standard_normal((8, dim)).astype(np.float32)
    x = rng.standard_normal((n, 8)).astype(np.float32) @ basis / np.sqrt(dim) + unit(rng, n, dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy(rng: np.random.Generator, x: np.ndarray, noise: float = 1.0) -> np.ndarray:
    y = x + noise * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(x.shape[1])
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def filled(config: GalleryConfig, vectors: np.ndarray, modality: Modality = Modality.VISIBLE) -> Gallery:
    gallery = Gallery(vectors.shape[1], config)
    for v in vectors:
        gid = gallery.create_identity(0.0).global_id
        assert gallery.restore_prototype(gid, modality, "cam", None, 1.0, 0.0, v)
    return gallery


def best(matches: dict) -> int:
    return max(matches.values(), key=lambda m: (m.cosine_same, -m.global_id)).global_id


# ------------------------------------------------------------------------------------ projections


def test_projections_are_unit_and_named_specs_work(tmp_path):
    rng = np.random.default_rng(0)
    x = unit(rng, 5)
    glob = make_projection("global:128", DIM, 256)
    np.testing.assert_allclose(
        glob(x), x[:, -128:] / np.linalg.norm(x[:, -128:], axis=1, keepdims=True), rtol=1e-5
    )
    assert make_projection("auto", 128, 256).kind == "identity"
    rand = make_projection("auto", DIM, 64)
    assert (rand.kind, rand.dim_out) == ("random", 64)
    # Orthonormal rows, and the same projection every time (every linker, every restart).
    np.testing.assert_allclose(rand.matrix @ rand.matrix.T, np.eye(64), atol=1e-4)
    np.testing.assert_array_equal(rand.matrix, make_projection("random:64", DIM, 256).matrix)
    np.testing.assert_allclose(np.linalg.norm(rand(x), axis=1), 1.0, rtol=1e-5)
    # A PCA file of mpanet-compress's layout.
    components = np.linalg.qr(rng.standard_normal((DIM, 32)))[0].T.astype(np.float32)
    np.savez(tmp_path / "p.npz", mean=np.zeros(DIM, np.float32), components=components)
    pca = make_projection(f"pca:{tmp_path / 'p.npz'}", DIM, 256)
    np.testing.assert_allclose(
        pca(x), (x @ components.T) / np.linalg.norm(x @ components.T, axis=1, keepdims=True), rtol=1e-4
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("global:0", "size must be in"),
        ("random:x", "expected random"),
        ("hnsw", "must be auto"),
        ("global:9999", "1..512"),
    ],
)
def test_bad_projection_specs_are_refused(spec, message):
    with pytest.raises(CompactIndexError, match=message):
        make_projection(spec, DIM, 256)


def test_pca_file_of_another_engine_is_refused(tmp_path):
    np.savez(tmp_path / "p.npz", mean=np.zeros(100, np.float32), components=np.ones((8, 100), np.float32))
    with pytest.raises(CompactIndexError, match=r"components \(k, 512\)"):
        make_projection(f"pca:{tmp_path / 'p.npz'}", DIM, 256)
    with pytest.raises(CompactIndexError, match="cannot read"):
        make_projection(f"pca:{tmp_path / 'missing.npz'}", DIM, 256)


def test_config_rejects_bad_index_fields():
    with pytest.raises(ValueError, match="gallery.search"):
        GalleryConfig(search="hnsw")
    with pytest.raises(ValueError, match="compact_storage"):
        GalleryConfig(compact_storage="int4")
    with pytest.raises(ValueError, match="global_id_base"):
        GalleryConfig(global_id_base=5)


# ------------------------------------------------------------------------------------- the index


def test_ivf_is_trained_when_the_store_grows_and_retrained_later():
    rng = np.random.default_rng(1)
    index = CompactIndex(
        make_projection("random:64", DIM, 64), CompactIndexConfig(flat_below=500, retrain_growth=2.0)
    )
    x = unit(rng, 2100)
    for slot in range(499):
        index.update(slot, x[slot])
    index.flush()
    assert index.kind == "flat"
    for slot in range(499, 1000):
        index.update(slot, x[slot])
    index.flush()
    assert index.kind.startswith("ivf") and index.trainings == 1
    for slot in range(1000, 2100):
        index.update(slot, x[slot])
    index.flush()
    assert index.trainings == 2 and index.trained_with >= 1500  # (updates flush every 256)
    found = index.candidates(index.projection(x[:50]), 8)
    assert (found[:, 0] == np.arange(50)).mean() >= 0.98


@pytest.mark.parametrize("flat_below", [100_000, 300])  # flat compact scan / IVF
@pytest.mark.parametrize("storage_dtype", ["float32", "float16"])
def test_two_stage_finds_the_exact_best_match(flat_below, storage_dtype):
    rng = np.random.default_rng(2)
    vectors = correlated(rng, 3000)
    config = GalleryConfig(
        storage_dtype=storage_dtype, compact="random:64", compact_flat_below=flat_below, max_memory_mb=1e4
    )
    gallery = filled(config, vectors)
    queries = noisy(rng, vectors[rng.choice(3000, 300, replace=False)])
    fast = gallery.match_many(queries, Modality.VISIBLE, [None] * 300, top_k=5)
    slow = gallery.match_many(queries, Modality.VISIBLE, [None] * 300, top_k=5, exact=True)
    if flat_below < 3000:
        assert gallery.indexes[Modality.VISIBLE].kind.startswith("ivf")
    recall = np.mean([best(f) == best(s) for f, s in zip(fast, slow)])
    assert recall >= 0.99
    for f, s in zip(fast, slow):  # re-ranked cosines are the exact ones
        gid = best(s)
        if gid in f:
            assert f[gid].cosine_same == pytest.approx(s[gid].cosine_same, abs=1e-5)


def two_stage_gallery(n: int = 2000, **overrides) -> tuple[Gallery, np.ndarray]:
    rng = np.random.default_rng(3)
    vectors = unit(rng, n)
    config = GalleryConfig(compact="random:64", compact_flat_below=300, max_memory_mb=1e4, **overrides)
    return filled(config, vectors), vectors


def test_a_removed_identity_never_comes_back():
    gallery, vectors = two_stage_gallery()
    for gid in range(0, 2000, 7):
        gallery.remove_identity(gid)
    found = gallery.match_many(vectors[0:2000:7], Modality.VISIBLE, [None] * 286, top_k=5)
    for matches in found:
        assert not any(gid % 7 == 0 for gid in matches)
    # Their slots are reused by new identities: a query for the new vector finds the new identity.
    rng = np.random.default_rng(4)
    fresh = unit(rng, 10)
    for v in fresh:
        gid = gallery.create_identity(1.0).global_id
        gallery.restore_prototype(gid, Modality.VISIBLE, "cam", None, 1.0, 1.0, v)
    found = gallery.match_many(fresh, Modality.VISIBLE, [None] * 10, top_k=5)
    assert [best(m) for m in found] == list(range(2000, 2010))


def test_a_changed_prototype_is_searched_with_its_new_vector():
    gallery, vectors = two_stage_gallery()
    track = ("p", "cam", 1)
    gallery.identities[5].live_tracks.add(track)
    assert gallery.set_track_prototype(5, track, Modality.VISIBLE, "cam", vectors[900], 1.0, 1.0)
    old = gallery.identities[5].prototypes[0]
    gallery.remove_track_prototype(5, track)  # revision: the track's evidence leaves identity 5
    assert gallery.identities[5].prototypes == [old]
    found = gallery.match_many(vectors[900:901], Modality.VISIBLE, [None], top_k=5)[0]
    assert best(found) == 900
    assert 5 not in found or found[5].cosine_same < 0.5
    # An in-place update (a live track's evidence) moves the prototype in the compact index too.
    track2 = ("p", "cam", 2)
    gallery.identities[7].live_tracks.add(track2)
    gallery.set_track_prototype(7, track2, Modality.VISIBLE, "cam", vectors[1500], 1.0, 1.0)
    gallery.set_track_prototype(7, track2, Modality.VISIBLE, "cam", vectors[1600], 1.0, 2.0)
    found = gallery.match_many(vectors[1500:1501], Modality.VISIBLE, [None], top_k=5)[0]
    assert best(found) == 1500 and (7 not in found or found[7].cosine_same < 0.5)
    found = gallery.match_many(vectors[1600:1601], Modality.VISIBLE, [None], top_k=5)[0]
    assert {1600, 7} <= set(found) and found[7].cosine_same == pytest.approx(1.0, abs=1e-4)


def test_compaction_remaps_the_index():
    rng = np.random.default_rng(5)
    store = PrototypeStore(DIM, "float32")
    index = CompactIndex(make_projection("random:64", DIM, 64), CompactIndexConfig(flat_below=100))
    x = unit(rng, 400)
    for i in range(400):
        slot = store.allocate(10_000)
        store.write(slot, x[i])
        index.update(slot, x[i])
    index.flush()
    for slot in range(0, 400, 2):
        store.release(slot)
        index.remove(slot)
    mapping = store.compact()
    index.remap(mapping)
    inverse = {new: old for old, new in mapping.items()}
    found = index.candidates(index.projection(x[1:400:2]), 1)[:, 0]
    assert [inverse[int(s)] for s in found] == list(range(1, 400, 2))


def test_snapshot_round_trip_rebuilds_the_index(tmp_path):
    from edge.linking.assignment import MatchingRules
    from edge.linking.events import EngineAdopted
    from edge.linking.linker import IdentityLinker
    from edge.linking.persistence import recover, save_snapshot

    rng = np.random.default_rng(6)
    config = GalleryConfig(compact="random:64", compact_flat_below=300, max_memory_mb=1e4)
    linker = IdentityLinker(MatchingRules(), config)
    linker.apply(EngineAdopted(1, "engine0000000000", DIM))
    vectors = unit(rng, 1000)
    for v in vectors:
        gid = linker.gallery.create_identity(0.0).global_id
        linker.gallery.restore_prototype(gid, Modality.INFRARED, "ir", None, 1.0, 0.0, v)
    save_snapshot(tmp_path, linker)
    restored = recover(tmp_path, MatchingRules(), config).linker
    queries = noisy(rng, vectors[:100])
    a = restored.gallery.match_many(queries, Modality.VISIBLE, [None] * 100, top_k=5)
    b = linker.gallery.match_many(queries, Modality.VISIBLE, [None] * 100, top_k=5)
    assert [best_cross(m) for m in a] == [best_cross(m) for m in b] == list(range(100))
    assert restored.gallery.indexes[Modality.INFRARED].kind.startswith("ivf")


def best_cross(matches: dict) -> int:
    return max(matches.values(), key=lambda m: (m.cosine_cross, -m.global_id)).global_id


def test_exact_search_mode_has_no_index():
    gallery, _ = two_stage_gallery(n=10, search="exact")
    assert gallery.indexes is None and gallery.index_nbytes == 0


def test_global_ids_stay_in_the_gallery_block():
    config = dataclasses.replace(GalleryConfig(), global_id_base=3 * 2**40)
    gallery = Gallery(8, config)
    assert gallery.create_identity(0.0).global_id == 3 * 2**40
    gallery.create_identity(0.0, global_id=7 * 2**40 + 5)  # imported from another linker's block
    assert gallery.next_global_id == 3 * 2**40 + 1
    assert gallery.owns_global_id(3 * 2**40 + 9) and not gallery.owns_global_id(7 * 2**40 + 5)
