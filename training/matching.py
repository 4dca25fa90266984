"""Particle Tracking Challenge scoring: optimal one-to-one matching with a gate, F1 and RMSE.

Pairs are allowed only at Euclidean distance strictly below the gate (voxel units, z in slices). The assignment
maximises the number of matched pairs first and then minimises their total distance (Hungarian algorithm on each
connected component of the candidate graph, forbidden pairs priced above any possible sum of allowed distances).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def _as_points(a: np.ndarray, dim: int | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, dim or (a.shape[-1] if a.ndim == 2 else 3)))
    if a.ndim != 2:
        raise ValueError(f"positions must have shape (N, D), got {a.shape}")
    return a


def match(pred: np.ndarray, true: np.ndarray, gate: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one matching; returns (pred_idx, true_idx, dist) of the matched pairs (dist < gate)."""
    p, t = _as_points(pred), _as_points(true)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(p) == 0 or len(t) == 0:
        return empty
    if p.shape[1] != t.shape[1]:
        raise ValueError(f"pred and true dimensions differ: {p.shape[1]} vs {t.shape[1]}")
    sdm = cKDTree(p).sparse_distance_matrix(cKDTree(t), max_distance=gate, output_type="ndarray")
    sdm = sdm[sdm["v"] < gate]  # the gate is strict
    rows, cols, dists = sdm["i"].astype(np.int64), sdm["j"].astype(np.int64), sdm["v"].astype(np.float64)
    if len(rows) == 0:
        return empty
    n_p, n_t = len(p), len(t)
    graph = coo_matrix((np.ones(len(rows)), (rows, n_p + cols)), shape=(n_p + n_t, n_p + n_t))
    _, labels = connected_components(graph, directed=False)
    comp = labels[rows]
    order = np.argsort(comp, kind="stable")
    rows, cols, dists, comp = rows[order], cols[order], dists[order], comp[order]
    bounds = np.flatnonzero(np.diff(comp)) + 1
    out_p, out_t, out_d = [], [], []
    for r, c, d in zip(np.split(rows, bounds), np.split(cols, bounds), np.split(dists, bounds)):
        if len(r) == 1:  # one candidate pair: matched
            out_p.append(r)
            out_t.append(c)
            out_d.append(d)
            continue
        ur, ri = np.unique(r, return_inverse=True)
        uc, ci = np.unique(c, return_inverse=True)
        big = gate * (min(len(ur), len(uc)) + 1.0)  # > any sum of allowed distances in this component
        cost = np.full((len(ur), len(uc)), big)
        cost[ri, ci] = d
        a, b = linear_sum_assignment(cost)
        ok = cost[a, b] < gate
        out_p.append(ur[a[ok]])
        out_t.append(uc[b[ok]])
        out_d.append(cost[a[ok], b[ok]])
    pi, ti, di = np.concatenate(out_p), np.concatenate(out_t), np.concatenate(out_d)
    order = np.argsort(pi, kind="stable")
    return pi[order].astype(np.int64), ti[order].astype(np.int64), di[order].astype(np.float64)


def score(pred: np.ndarray, true: np.ndarray, gate: float = 5.0) -> dict:
    """Detection scores: tp, fp, fn, precision, recall, f1 = 2TP/(2TP+FP+FN) and rmse of matched pairs.

    Conventions for empty sets: f1 = 1 when both are empty; precision = 1 with no predictions, recall = 1 with no
    truth; rmse = nan when nothing is matched.
    """
    p, t = _as_points(pred), _as_points(true)
    _, _, d = match(p, t, gate)
    tp = int(len(d))
    fp, fn = len(p) - tp, len(t) - tp
    denom = 2 * tp + fp + fn
    return {
        "tp": tp,
        "fp": int(fp),
        "fn": int(fn),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "f1": 2 * tp / denom if denom else 1.0,
        "rmse": float(np.sqrt(np.mean(d**2))) if tp else float("nan"),
    }


def summarise(scores: list[dict]) -> dict:
    """Per-image means and sample standard deviations (ddof=1) of F1 and RMSE, as in the paper's tables.

    Images without matches (rmse nan) are left out of the RMSE statistics. Also reports precision/recall means.
    """
    f1 = np.array([s["f1"] for s in scores], dtype=np.float64)
    rmse = np.array([s["rmse"] for s in scores], dtype=np.float64)
    rmse = rmse[np.isfinite(rmse)]

    def _mean(a: np.ndarray) -> float:
        return float(np.mean(a)) if len(a) else float("nan")

    def _std(a: np.ndarray) -> float:
        return float(np.std(a, ddof=1)) if len(a) > 1 else (0.0 if len(a) else float("nan"))

    return {
        "f1_mean": _mean(f1),
        "f1_std": _std(f1),
        "rmse_mean": _mean(rmse),
        "rmse_std": _std(rmse),
        "precision_mean": _mean(np.array([s["precision"] for s in scores], dtype=np.float64)),
        "recall_mean": _mean(np.array([s["recall"] for s in scores], dtype=np.float64)),
        "n": len(scores),
    }


def pooled(scores: list[dict]) -> dict:
    """Scores of all images together (counts summed; RMSE over every matched pair), as
    ``benchmarks/generalisation.py`` reports them."""
    tp = sum(int(s["tp"]) for s in scores)
    fp = sum(int(s["fp"]) for s in scores)
    fn = sum(int(s["fn"]) for s in scores)
    squares = sum(s["tp"] * s["rmse"] ** 2 for s in scores if s["tp"])
    denom = 2 * tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0, "f1": 2 * tp / denom if denom else 1.0,
            "rmse": float(np.sqrt(squares / tp)) if tp else float("nan"), "n": len(scores)}
