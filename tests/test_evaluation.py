"""Feature extraction (any embedder, disk cache), protocol runners and reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common import Modality
from trainer.data import Sample, sysu_mm01
from trainer.evaluation.features import extract_features, feature_cache_key
from trainer.evaluation.protocols import (
    evaluate_regdb_embedder,
    evaluate_regdb_protocols,
    evaluate_sysu_embedder,
    evaluate_sysu_protocols,
    pairwise_distance,
)
from trainer.evaluation.reporting import results_table_markdown, write_report
from trainer.synthetic.datasets import write_regdb, write_sysu

H, W = 32, 16


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval") / "sysu"
    write_sysu(
        root, num_ids=10, images_per_camera=3, height=H, width=W, seed=1, num_test_ids=5, progress=False
    )
    return root


class MeanColour:
    """A toy embedder: per-channel mean and std of the normalised image; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.float32 and images.ndim == 4 and images.shape[1:] == (3, H, W)
        self.calls += 1
        self.shapes.append(images.shape)
        return np.concatenate([images.mean(axis=(2, 3)), images.std(axis=(2, 3))], axis=1)


def test_extract_features_batches_and_caches(sysu_root: Path, tmp_path: Path):
    samples = sysu_mm01.load_test_set(sysu_root).query
    embed = MeanColour()
    cache = tmp_path / "features.npz"
    features = extract_features(
        samples, embed, height=H, width=W, batch_size=7, cache_path=cache, embedder_id="toy", progress=False
    )
    assert features.shape == (len(samples), 6) and features.dtype == np.float32
    assert [s[0] for s in embed.shapes] == [7] * (len(samples) // 7) + (
        [len(samples) % 7] if len(samples) % 7 else []
    )
    assert cache.is_file()

    def refuse(images: np.ndarray) -> np.ndarray:
        raise AssertionError("the cache should have answered")

    again = extract_features(
        samples, refuse, height=H, width=W, cache_path=cache, embedder_id="toy", progress=False
    )
    np.testing.assert_array_equal(again, features)
    # Another embedder id or other images: recomputed, never served from the cache.
    other = MeanColour()
    extract_features(
        samples, other, height=H, width=W, cache_path=cache, embedder_id="toy-v2", progress=False
    )
    assert other.calls > 0
    assert feature_cache_key(samples, embedder_id="a", height=H, width=W) != feature_cache_key(
        samples[:-1], embedder_id="a", height=H, width=W
    )
    # Workers give the same features as the in-process path.
    parallel = extract_features(samples, MeanColour(), height=H, width=W, num_workers=2, progress=False)
    np.testing.assert_allclose(parallel, features, rtol=1e-6)


def test_extract_features_rejects_bad_embedders_and_arguments(sysu_root: Path, tmp_path: Path):
    samples = sysu_mm01.load_test_set(sysu_root).query[:4]
    with pytest.raises(ValueError, match="embedder_id"):
        extract_features(
            samples, MeanColour(), height=H, width=W, cache_path=tmp_path / "c.npz", progress=False
        )
    with pytest.raises(ValueError, match="must return"):
        extract_features(samples, lambda x: x[:, :, 0, 0][:1], height=H, width=W, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        extract_features(samples, lambda x: np.full((len(x), 2), np.nan), height=H, width=W, progress=False)


def test_pairwise_distance_is_negative_cosine():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    expected = (
        -(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    )
    np.testing.assert_allclose(pairwise_distance(q, g), expected, rtol=1e-5)


def _oracle(samples, dim: int = 64, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Features that encode the identity (plus noise): every protocol must score rank-1 = 1."""
    rng = np.random.default_rng(seed)
    codes = np.random.default_rng(123).normal(size=(1000, dim))
    return np.stack([codes[s.pid] for s in samples]) + noise * rng.normal(size=(len(samples), dim))


def test_sysu_protocols_with_identity_features_and_report(sysu_root: Path, tmp_path: Path):
    test_set = sysu_mm01.load_test_set(sysu_root)
    results = evaluate_sysu_protocols(
        _oracle(test_set.query, seed=1), _oracle(test_set.gallery_pool, seed=2), test_set
    )
    assert results["gallery_sampling"] == "official"
    assert set(results["protocols"]) == {"all_1shot", "all_10shot", "indoor_1shot", "indoor_10shot"}
    for protocol in results["protocols"].values():
        assert protocol["num_trials"] == 10
        assert protocol["mean"]["rank1"] == 1.0 and protocol["mean"]["mAP"] == 1.0
        assert protocol["std"]["rank1"] == 0.0
    sizes = [t["gallery_size"] for t in results["protocols"]["all_1shot"]["trials"]]
    assert sizes == [len(test_set.gallery("all", 1, t)) for t in range(10)]
    paths = write_report(results, tmp_path / "report", name="sysu")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["protocols"]["indoor_10shot"]["mean"]["rank1"] == 1.0
    table = paths["markdown"].read_text()
    assert "Gallery sampling: **official**" in table and "| all_1shot | 10 | 100.00 ± 0.00" in table
    assert paths["cmc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sysu_protocol_mean_and_std_over_trials(sysu_root: Path):
    test_set = sysu_mm01.load_test_set(sysu_root)
    rng = np.random.default_rng(5)
    query, pool = rng.normal(size=(len(test_set.query), 8)), rng.normal(size=(len(test_set.gallery_pool), 8))
    results = evaluate_sysu_protocols(query, pool, test_set, protocols=[("all", 1)], trials=[0, 3, 6])
    protocol = results["protocols"]["all_1shot"]
    r1 = [t["rank1"] for t in protocol["trials"]]
    assert protocol["mean"]["rank1"] == pytest.approx(np.mean(r1))
    assert protocol["std"]["rank1"] == pytest.approx(np.std(r1))
    assert "± " in results_table_markdown(results)


def test_regdb_protocols_swap_query_and_gallery():
    rng = np.random.default_rng(0)
    vis_pids, th_pids = np.repeat(np.arange(5), 3), np.repeat(np.arange(5), 2)
    vis = [Sample(f"v{i}", int(p), 2, Modality.VISIBLE) for i, p in enumerate(vis_pids)]
    th = [Sample(f"t{i}", int(p), 3, Modality.INFRARED) for i, p in enumerate(th_pids)]
    vf, tf = rng.normal(size=(len(vis), 4)), rng.normal(size=(len(th), 4))
    results = evaluate_regdb_protocols(vf, vis, tf, th)
    assert results["visible_to_thermal"]["num_queries"] == len(vis)
    assert results["thermal_to_visible"]["num_queries"] == len(th)
    assert results["visible_to_thermal"]["cmc"].size == len(th)


def test_end_to_end_embedder_runs_on_synthetic_sets(sysu_root: Path, tmp_path: Path):
    embed = MeanColour()
    results = evaluate_sysu_embedder(
        sysu_root,
        embed,
        embedder_id="toy",
        height=H,
        width=W,
        cache_dir=tmp_path / "cache",
        progress=False,
        protocols=[("all", 1), ("indoor", 10)],
        trials=range(2),
    )
    assert results["embedder_id"] == "toy" and results["gallery_sampling"] == "official"
    assert 0.0 <= results["protocols"]["all_1shot"]["mean"]["rank1"] <= 1.0
    calls = embed.calls
    evaluate_sysu_embedder(
        sysu_root,
        embed,
        embedder_id="toy",
        height=H,
        width=W,
        cache_dir=tmp_path / "cache",
        progress=False,
        trials=[0],
    )
    assert embed.calls == calls  # second protocol run scored from the cached extraction

    regdb_root = tmp_path / "regdb"
    write_regdb(regdb_root, num_ids=6, images_per_modality=2, height=H, width=W, seed=2, progress=False)
    results = evaluate_regdb_embedder(
        regdb_root, MeanColour(), embedder_id="toy", height=H, width=W, trials=(1, 2), progress=False
    )
    assert set(results["protocols"]) == {"visible_to_thermal", "thermal_to_visible"}
    assert results["protocols"]["visible_to_thermal"]["num_trials"] == 2
    assert "standard CMC" in results["cmc"]
    write_report(results, tmp_path / "regdb-report")


def test_a_protocol_with_an_empty_gallery_is_skipped_and_reported(sysu_root: Path, tmp_path: Path):
    """Small synthetic sets may have no test identity in the indoor cameras: skipped, not a crash."""
    import dataclasses

    test_set = sysu_mm01.load_test_set(sysu_root, gallery_sampling="agw")
    outdoor_only = dataclasses.replace(
        test_set, gallery_pool=[s for s in test_set.gallery_pool if s.camid in (4, 5)]
    )
    rng = np.random.default_rng(0)
    results = evaluate_sysu_protocols(
        rng.normal(size=(len(outdoor_only.query), 8)),
        rng.normal(size=(len(outdoor_only.gallery_pool), 8)),
        outdoor_only,
        protocols=[("all", 1), ("indoor", 1)],
        trials=[0, 1],
    )
    assert results["protocols"]["indoor_1shot"]["skipped"].startswith("the gallery is empty")
    assert results["protocols"]["all_1shot"]["num_trials"] == 2
    paths = write_report(results, tmp_path / "report", name="sysu")
    assert "| indoor_1shot | 0 | skipped: the gallery is empty" in paths["markdown"].read_text()
