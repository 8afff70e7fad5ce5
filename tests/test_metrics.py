"""evaluate_sysu / evaluate_regdb against hand-computed cases and an independent per-query loop."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation.metrics import evaluate_regdb, evaluate_sysu

# ----------------------------------------------------------------- independent reference (per query)


def reference_metrics(distmat, q_pids, g_pids, q_camids=None, g_camids=None, *, sysu: bool):
    """Written from the spec (section 4.4), one query at a time; (cmc, mAP, mINP), None if no valid query."""
    order = np.argsort(distmat, axis=1)
    num_g = distmat.shape[1]
    length = len(np.unique(g_pids)) if sysu else num_g
    hits = np.zeros(length)
    aps, inps = [], []
    for i in range(distmat.shape[0]):
        ranked = order[i]
        if sysu and q_camids[i] == 3:
            ranked = ranked[g_camids[ranked] != 2]
        pids = g_pids[ranked]
        correct = pids == q_pids[i]
        if not correct.any():
            continue
        positions = np.flatnonzero(correct) + 1  # 1-based ranks of the true matches
        aps.append(np.mean(np.arange(1, positions.size + 1) / positions))
        inps.append(positions.size / positions[-1])
        if sysu:
            distinct = []
            for pid in pids:
                if pid not in distinct:
                    distinct.append(pid)
            first = distinct.index(q_pids[i])
        else:
            first = positions[0] - 1
        hits[first:] += 1
    if not aps:
        return None
    return hits / len(aps), float(np.mean(aps)), float(np.mean(inps))


def _random_case(rng: np.random.Generator, ties: bool = False):
    num_ids = int(rng.integers(5, 25))
    num_q, num_g = int(rng.integers(1, 40)), int(rng.integers(2, 120))
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.choice([3, 6], num_q)
    g_cams = rng.choice([1, 2, 4, 5], num_g)
    distmat = rng.integers(0, 4, (num_q, num_g)).astype(np.float32) if ties else rng.random((num_q, num_g))
    return distmat, q_pids, g_pids, q_cams, g_cams


# ----------------------------------------------------------------------------------- hand-computed

# One gallery for the SYSU cases: (pid, camid) in index order, distances chosen per query.
G_PIDS = np.array([1, 2, 1, 3, 2, 5])
G_CAMS = np.array([2, 1, 1, 4, 5, 2])


def test_sysu_hand_computed_cam3_skips_cam2_and_unmatched_queries_are_left_out():
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    distmat = np.stack([d, d, d, d, d])
    q_pids = np.array([1, 1, 4, 5, 5])
    q_cams = np.array([3, 6, 6, 3, 6])
    result = evaluate_sysu(distmat, q_pids, G_PIDS, q_cams, G_CAMS)
    # q0 (pid 1, cam 3): cam-2 items (index 0 and 5) removed -> ranking pids [2, 1, 3, 2];
    #   one true match at rank 2: AP 1/2, INP 1/2; distinct ids [2, 1, 3] -> unique rank 2.
    # q1 (pid 1, cam 6): ranking pids [1, 2, 1, 3, 2, 5]; matches at ranks 1 and 3:
    #   AP (1/1 + 2/3) / 2 = 5/6, INP 2/3; unique rank 1.
    # q2 (pid 4): no true match -> left out.
    # q3 (pid 5, cam 3): its only match is in cam 2, removed -> left out.
    # q4 (pid 5, cam 6): match at rank 6: AP 1/6, INP 1/6; distinct ids [1, 2, 3, 5] -> unique rank 4.
    assert result["num_queries"] == 5
    assert result["num_valid_queries"] == 3
    assert result["rank1"] == pytest.approx(1 / 3)
    assert result["rank5"] == pytest.approx(1.0)
    np.testing.assert_allclose(result["cmc"], [1 / 3, 2 / 3, 2 / 3, 1.0])  # 4 gallery identities
    assert result["rank20"] == pytest.approx(1.0)  # past the end reads the last value
    assert result["mAP"] == pytest.approx((1 / 2 + 5 / 6 + 1 / 6) / 3)
    assert result["mINP"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 6) / 3)


def test_sysu_cam_rule_applies_to_cam3_only_and_to_every_identity():
    # A cam-3 query loses *all* cam-2 gallery items (also other identities), a cam-6 query none.
    g_pids = np.array([7, 8, 1])
    g_cams = np.array([2, 2, 1])
    distmat = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    cam3 = evaluate_sysu(distmat[:1], np.array([1]), g_pids, np.array([3]), g_cams)
    cam6 = evaluate_sysu(distmat[1:], np.array([1]), g_pids, np.array([6]), g_cams)
    assert cam3["rank1"] == 1.0 and cam3["mAP"] == 1.0  # 7 and 8 removed: pid 1 is first
    assert cam6["rank1"] == 0.0 and cam6["mAP"] == pytest.approx(1 / 3)
    assert cam6["cmc"][2] == 1.0


def test_sysu_unique_identity_cmc_differs_from_standard_cmc():
    # Ranking pids [2, 2, 1]: the standard CMC hits at rank 3, the unique-identity CMC at rank 2.
    distmat = np.array([[0.1, 0.2, 0.3]])
    g_pids = np.array([2, 2, 1])
    sysu = evaluate_sysu(distmat, np.array([1]), g_pids, np.array([6]), np.array([1, 4, 5]))
    regdb = evaluate_regdb(distmat, np.array([1]), g_pids)
    np.testing.assert_allclose(sysu["cmc"], [0.0, 1.0])
    np.testing.assert_allclose(regdb["cmc"], [0.0, 0.0, 1.0])
    assert sysu["mAP"] == regdb["mAP"] == pytest.approx(1 / 3)


def test_regdb_hand_computed():
    # q0 pid 1: ranking pids [2, 1, 3, 1]: first match rank 2, AP (1/2 + 2/4)/2 = 1/2, INP 2/4.
    # q1 pid 3: ranking pids [3, 1, 2, 1]: rank 1, AP 1, INP 1.
    # q2 pid 9: no match -> left out.
    g_pids = np.array([2, 1, 3, 1])
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.4],
            [0.3, 0.2, 0.1, 0.4],  # order: index 2 (pid 3), 1 (pid 1), 0 (pid 2), 3 (pid 1)
            [0.1, 0.2, 0.3, 0.4],
        ]
    )
    result = evaluate_regdb(distmat, np.array([1, 3, 9]), g_pids)
    assert result["num_valid_queries"] == 2
    np.testing.assert_allclose(result["cmc"], [0.5, 1.0, 1.0, 1.0])
    assert result["rank1"] == 0.5 and result["rank5"] == 1.0
    assert result["mAP"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["mINP"] == pytest.approx((0.5 + 1.0) / 2)


def test_regdb_ignores_cameras_entirely():
    # RegDB searches never filter: the same distances give the standard ranking whatever the layout.
    distmat = np.array([[0.3, 0.1, 0.2]])
    result = evaluate_regdb(distmat, np.array([5]), np.array([5, 6, 5]))
    assert result["rank1"] == 0.0
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["mINP"] == pytest.approx(2 / 3)


def test_all_queries_without_match_raise_a_clear_error():
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_regdb(np.zeros((2, 2)), np.array([1, 2]), np.array([3, 4]))
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_sysu(np.zeros((1, 1)), np.array([1]), np.array([1]), np.array([3]), np.array([2]))


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="g_pids must have shape"):
        evaluate_regdb(np.zeros((2, 3)), np.array([1, 2]), np.array([1, 2]))
    with pytest.raises(ValueError, match="q_camids"):
        evaluate_sysu(
            np.zeros((2, 3)), np.array([1, 2]), np.array([1, 2, 3]), np.array([3]), np.array([1, 1, 1])
        )
    with pytest.raises(ValueError, match="distmat"):
        evaluate_regdb(np.zeros(3), np.array([1]), np.array([1, 2, 3]))


# ------------------------------------------------------------------------ against the per-query loop


@pytest.mark.parametrize("ties", [False, True])
def test_metrics_agree_with_the_per_query_reference_on_random_inputs(ties: bool):
    rng = np.random.default_rng(1234 + ties)
    checked = 0
    for _ in range(150):
        distmat, q_pids, g_pids, q_cams, g_cams = _random_case(rng, ties)
        for sysu in (True, False):
            try:
                if sysu:
                    result = evaluate_sysu(distmat, q_pids, g_pids, q_cams, g_cams)
                else:
                    result = evaluate_regdb(distmat, q_pids, g_pids)
            except ValueError:
                # only allowed when the reference finds no valid query either
                assert reference_metrics(distmat, q_pids, g_pids, q_cams, g_cams, sysu=sysu) is None
                continue
            cmc, m_ap, m_inp = reference_metrics(distmat, q_pids, g_pids, q_cams, g_cams, sysu=sysu)
            np.testing.assert_allclose(result["cmc"], cmc, atol=1e-6, rtol=0)
            assert abs(result["mAP"] - m_ap) < 1e-6
            assert abs(result["mINP"] - m_inp) < 1e-6
            for k in (1, 5, 10, 20):
                assert abs(result[f"rank{k}"] - cmc[min(k, cmc.size) - 1]) < 1e-6
            checked += 1
    assert checked > 200


def test_full_size_case_matches_reference_on_a_query_subset():
    # Realistic SYSU structure (96 ids, IR queries, 10 images per id and camera) at full gallery size;
    # the reference runs on 600 queries (three chunks of rows, ranked in threads) to stay fast.
    rng = np.random.default_rng(7)
    g_pids = np.repeat(np.arange(96), 30)[:3010]
    g_cams = rng.choice([1, 2, 4, 5], g_pids.size)
    q_pids = rng.integers(0, 96, 600)
    q_cams = rng.choice([3, 6], 600)
    distmat = rng.random((600, g_pids.size)).astype(np.float32)
    result = evaluate_sysu(distmat, q_pids, g_pids, q_cams, g_cams)
    cmc, m_ap, m_inp = reference_metrics(distmat, q_pids, g_pids, q_cams, g_cams, sysu=True)
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-6, rtol=0)
    assert abs(result["mAP"] - m_ap) < 1e-6 and abs(result["mINP"] - m_inp) < 1e-6


def test_results_do_not_depend_on_the_row_chunking(monkeypatch: pytest.MonkeyPatch):
    from trainer.evaluation import metrics

    rng = np.random.default_rng(3)
    distmat, q_pids, g_pids, q_cams, g_cams = _random_case(rng, ties=True)
    whole_sysu = evaluate_sysu(distmat, q_pids, g_pids, q_cams, g_cams)
    whole_regdb = evaluate_regdb(distmat, q_pids, g_pids)
    monkeypatch.setattr(metrics, "_CHUNK_ROWS", 3)
    for whole, chunked in (
        (whole_sysu, evaluate_sysu(distmat, q_pids, g_pids, q_cams, g_cams)),
        (whole_regdb, evaluate_regdb(distmat, q_pids, g_pids)),
    ):
        np.testing.assert_array_equal(whole["cmc"], chunked["cmc"])
        assert whole["mAP"] == chunked["mAP"] and whole["mINP"] == chunked["mINP"]
