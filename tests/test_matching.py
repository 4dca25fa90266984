"""PTC matching protocol: strict gate, optimal one-to-one assignment, F1 and RMSE."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from training.matching import match, score, summarise


def test_gate_is_strict() -> None:
    true = np.array([[0.0, 0.0, 0.0]])
    assert score(np.array([[0.0, 3.0, 4.0]]), true)["tp"] == 0  # distance exactly 5
    s = score(np.array([[0.0, 3.0, 3.999]]), true)
    assert s["tp"] == 1 and s["rmse"] == pytest.approx(np.hypot(3.0, 3.999))
    assert score(np.array([[5.0, 0.0, 0.0]]), true, gate=5.0)["tp"] == 0  # z counts in slices, unscaled
    assert score(np.array([[5.0, 0.0, 0.0]]), true, gate=5.5)["tp"] == 1


def test_optimal_beats_greedy() -> None:
    # Greedy nearest-first pairs p0-t1 (0.5) and then p1 cannot reach t0 (8.9): 1 match.
    # The optimum pairs p0-t0 (3.5) and p1-t1 (4.9): 2 matches.
    true = np.array([[0, 0, 0.0], [0, 0, 4.0]])
    pred = np.array([[0, 0, 3.5], [0, 0, 8.9]])
    pi, ti, d = match(pred, true)
    assert pi.tolist() == [0, 1] and ti.tolist() == [0, 1]
    np.testing.assert_allclose(d, [3.5, 4.9])
    s = score(pred, true)
    assert (s["tp"], s["fp"], s["fn"], s["f1"]) == (2, 0, 0, 1.0)


def _brute_force(pred: np.ndarray, true: np.ndarray, gate: float) -> tuple[int, float]:
    """(max number of matches, min total distance among those) by enumeration."""
    dist = np.linalg.norm(pred[:, None] - true[None], axis=-1)
    best = (0, 0.0)
    n, m = len(pred), len(true)
    for k in range(min(n, m), 0, -1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                d = dist[list(rows), list(cols)]
                if np.all(d < gate):
                    total = float(d.sum())
                    if best[0] < k or total < best[1]:
                        best = (k, total)
        if best[0] == k:
            return best
    return best


def test_matches_brute_force_on_random_sets() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        n, m = rng.integers(0, 6, size=2)
        pred = rng.uniform(0, 8, size=(n, 3))
        true = rng.uniform(0, 8, size=(m, 3))
        pi, ti, d = match(pred, true, gate=3.0)
        k, total = _brute_force(pred, true, 3.0) if n and m else (0, 0.0)
        assert len(d) == k
        assert d.sum() == pytest.approx(total, abs=1e-9)
        assert len(set(pi)) == len(pi) and len(set(ti)) == len(ti)
        np.testing.assert_allclose(d, np.linalg.norm(pred[pi] - true[ti], axis=1))
        assert np.all(d < 3.0)


def test_empty_cases() -> None:
    e = np.zeros((0, 3))
    s = score(e, e)
    assert s["f1"] == 1.0 and s["tp"] == 0 and math.isnan(s["rmse"])
    s = score(e, np.ones((3, 3)))
    assert (s["tp"], s["fp"], s["fn"], s["f1"], s["recall"]) == (0, 0, 3, 0.0, 0.0)
    s = score(np.ones((2, 3)), [])
    assert (s["fp"], s["fn"], s["f1"], s["precision"]) == (2, 0, 0.0, 0.0)
    assert all(len(a) == 0 for a in match([], []))


def test_f1_rmse_and_exact_duplicates() -> None:
    true = np.array([[1.0, 10, 10], [1.0, 30, 30], [1.0, 50, 50], [5.0, 10, 50]])
    pred = true + np.array([[0, 0, 0.0], [0, 0.6, 0.8], [0, 0, 2.0], [0, 0, 0]])
    pred = np.vstack([pred[:3], [[5.0, 40, 40]]])  # last truth missed, one false positive
    s = score(pred, true)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 1, 1)
    assert s["f1"] == pytest.approx(6 / 8) and s["precision"] == 0.75 and s["recall"] == 0.75
    assert s["rmse"] == pytest.approx(np.sqrt((0 + 1 + 4) / 3))


def test_large_random_scene() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0, [9, 511, 511], size=(1000, 3))
    pred = true + rng.normal(0, 0.5, size=true.shape)
    s = score(np.vstack([pred[:950], rng.uniform(0, [9, 511, 511], size=(30, 3))]), true)
    assert s["tp"] >= 945 and s["fn"] == 1000 - s["tp"] and s["fp"] == 980 - s["tp"]
    assert s["rmse"] == pytest.approx(0.5 * np.sqrt(3), rel=0.08)


def test_summarise() -> None:
    scores = [
        {"f1": 1.0, "rmse": 0.5, "precision": 1.0, "recall": 1.0},
        {"f1": 0.5, "rmse": 1.5, "precision": 0.5, "recall": 0.5},
        {"f1": 0.0, "rmse": float("nan"), "precision": 0.0, "recall": 0.0},
    ]
    s = summarise(scores)
    assert s["n"] == 3 and s["f1_mean"] == pytest.approx(0.5) and s["f1_std"] == pytest.approx(0.5)
    assert s["rmse_mean"] == pytest.approx(1.0) and s["rmse_std"] == pytest.approx(np.sqrt(0.5))


def test_the_tests_matching_without_scipy_is_this_one() -> None:
    """tests/onnx_models.py matches without scipy (so the inference tests run against the wheel), each linked group
    of spots on its own: the same pairs and scores as match/score, and an error for a group too large to enumerate."""
    from onnx_models import match_spots, score_spots

    rng = np.random.default_rng(8)
    sites = np.stack(np.meshgrid([5.0, 25.0], np.arange(6.0, 90.0, 14.0), np.arange(6.0, 90.0, 14.0),
                                 indexing="ij"), -1).reshape(-1, 3)
    checked = 0
    for _ in range(30):
        # singles and close pairs (0.5 to 3 apart) on sites 14 apart, found with 0 to 3 detections near each
        true = [s + rng.normal(0, 0.5, (int(rng.integers(1, 3)), 3)) * rng.uniform(1, 6) / 2 for s in sites]
        found = [s + rng.normal(0, 0.7, (int(rng.integers(0, 4)), 3)) for s in sites]
        true, found = np.concatenate(true), np.concatenate(found + [rng.uniform(0, 100, (5, 3))])
        try:
            got = match_spots(found, true, 5.0)
        except AssertionError:  # stray detections linking groups into one too large to enumerate
            continue
        want = match(found, true, 5.0)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b)
        checked += 1
        ref = score(found, true, 5.0)
        assert score_spots(found, true, 5.0) == pytest.approx({k: ref[k] for k in ("tp", "fp", "fn", "f1", "rmse")})
    assert checked >= 10
    for found, true in [(np.zeros((0, 3)), sites), (sites, np.zeros((0, 3))), (sites + 9.0, sites)]:
        assert match_spots(found, true)[0].size == 0 and score_spots(found, true)["tp"] == 0
    true = np.array([[0, 0, 0.0], [0, 0, 4.0]])  # test_optimal_beats_greedy: p0 reaches both, p1 only t1
    found = np.array([[0, 0, 3.5], [0, 0, 8.9]])
    for a, b in zip(match_spots(found, true), match(found, true, 5.0)):
        np.testing.assert_allclose(a, b)
    assert match_spots(found, true)[1].tolist() == [0, 1]
    with pytest.raises(AssertionError, match="too large"):
        match_spots(np.zeros((5, 3)), np.zeros((5, 3)))
