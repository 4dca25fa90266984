"""Accuracy evaluation: threshold tuning, per-image scores of models and SEF3D, and the paper's Table 1 layout.

Per-image results are dicts (snr, density, n_true, tp, fp, fn, precision, recall, f1, rmse, seconds, ...), scored
with the Particle Tracking Challenge protocol of :mod:`training.matching` (gate 5 voxels, RMSE over matched pairs).
Tables report per-image means ± sample sd for each SNR level, as the paper's Table 1 does.

Threshold sweeps find the peaks of a map once, at the lowest threshold, and filter them by score. This equals
running ``find_peaks`` at every threshold: candidates (local maxima, plateau rules) and refinement do not depend on
the threshold, and the greedy min-distance suppression visits peaks by descending score, so a peak is only ever
suppressed by a higher one, which survives any threshold that keeps the lower one.

No torch here (models run through ``dmdet_infer``'s ONNX Runtime :class:`Detector`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from dmdet_infer.peaks import Peaks, find_peaks
from training.matching import score, summarise
from training.sef3d import log_response
from training.simulate import PTC_DENSITIES, PTC_SNRS, benchmark_item

Item = tuple[np.ndarray, np.ndarray, dict]

#: Coarse threshold grid; the fine pass steps by FINE_STEP within one coarse step of the best coarse threshold.
COARSE_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.951, 0.05), 4))
FINE_STEP = 0.01
FLOOR_THRESHOLD = 0.01  # lowest threshold the default two-stage sweep can visit

#: Published results, "Table 1: Results for 3D images of the Particle Tracking Challenge (mean ± standard
#: deviation)" of the DM-DetNet3D paper (/work/shared/paper/dm-detnet3d.txt); 300 PTC virus images per SNR level.
#: method -> SNR -> (F1 mean, F1 sd, RMSE mean, RMSE sd); RMSE in voxels.
PAPER_CITATION = "DM-DetNet3D paper, Table 1 (PTC virus scenario, 300 images per SNR)"
PAPER_TABLE1: dict[str, dict[int, tuple[float, float, float, float]]] = {
    "SEF3D": {
        1: (0.376, 0.141, 2.491, 0.157),
        2: (0.891, 0.059, 0.967, 0.046),
        4: (0.993, 0.005, 0.655, 0.019),
        7: (0.994, 0.005, 0.574, 0.011),
    },
    "DetNet3D": {
        1: (0.544, 0.118, 1.363, 0.132),
        2: (0.896, 0.059, 0.686, 0.034),
        4: (0.970, 0.012, 0.522, 0.027),
        7: (0.982, 0.007, 0.508, 0.012),
    },
    "DM-DetNet3D": {
        1: (0.623, 0.116, 1.396, 0.119),
        2: (0.973, 0.013, 0.612, 0.040),
        4: (0.994, 0.005, 0.496, 0.016),
        7: (0.995, 0.004, 0.505, 0.015),
    },
}
#: The paper's "Average" row (over SNR levels): method -> (F1 mean, F1 sd, RMSE mean, RMSE sd).
PAPER_AVERAGE: dict[str, tuple[float, float, float, float]] = {
    "SEF3D": (0.813, 0.295, 1.172, 0.895),
    "DetNet3D": (0.848, 0.206, 0.770, 0.404),
    "DM-DetNet3D": (0.896, 0.182, 0.752, 0.432),
}

#: Seed namespaces of the evaluation splits: item i of split s uses SeedSequence([seed, s, i + 1]). Training uses
#: two-word entropy SeedSequence([seed, i]) (training.config.DataSpec, simulate.benchmark_item); SeedSequence
#: ignores trailing zero words ([a, b] == [a, b, 0]), so the third word is i + 1 (never 0) and the evaluation
#: streams can never coincide with a training stream, whatever the seeds.
SPLIT_VALIDATION = 1
SPLIT_TEST = 2


# ------------------------------------------------------------------------------------------------ data


def split_item(
    seed: int,
    split: int,
    index: int,
    n_per_cell: int,
    snrs: Sequence[float] = PTC_SNRS,
    densities: Mapping[str, int] | None = None,
    **overrides: object,
) -> Item:
    """Item ``index`` of an evaluation split: the cell layout of :func:`training.simulate.benchmark_item`
    (SNR-major, then density; counts per 512x512x10 scaled to ``shape``) with rng SeedSequence([seed, split,
    index + 1]) (see SPLIT_VALIDATION / SPLIT_TEST)."""
    vol, pos, meta = benchmark_item(seed, index, n_per_cell, tuple(snrs), None if densities is None else
                                    dict(densities), entropy=(seed, split, index + 1), **overrides)
    meta["split"] = int(split)
    return vol, pos, meta


def iter_split(
    seed: int,
    split: int,
    n_per_cell: int,
    snrs: Sequence[float] = PTC_SNRS,
    densities: Mapping[str, int] | None = None,
    **overrides: object,
) -> Iterable[Item]:
    """Every item of an evaluation split, one volume at a time."""
    n = len(snrs) * len(PTC_DENSITIES if densities is None else densities) * int(n_per_cell)
    for index in range(n):
        yield split_item(seed, split, index, n_per_cell, snrs, densities, **overrides)


# ------------------------------------------------------------------------------------------------ scoring


def score_item(pred: np.ndarray, positions: np.ndarray, meta: Mapping, seconds: float, gate: float = 5.0) -> dict:
    """One per-image result dict: PTC scores of ``pred`` against ``positions`` plus the item's SNR/density."""
    s = score(pred, positions, gate)
    return {"index": meta.get("index"), "snr": float(meta["snr"]), "density": meta.get("density"),
            "n_true": int(len(positions)), "n_pred": int(len(pred)), **s, "seconds": float(seconds)}


class Found(NamedTuple):
    """A volume's detections as :func:`tune_threshold_peaks` reads them (``Spots``: ``Found(s.zyx, s.score)``)."""

    coords: np.ndarray
    scores: np.ndarray


def _mean_f1(peaks: Sequence[Peaks], truths: Sequence[np.ndarray], threshold: float, gate: float) -> float:
    f1 = [score(p.coords[p.scores.astype(np.float64) > threshold], t, gate)["f1"] for p, t in zip(peaks, truths)]
    return float(np.mean(f1))


def _best(curve: dict[float, float]) -> tuple[float, float]:
    """Highest mean F1; among ties, the median tied threshold (the middle of a flat optimum)."""
    top = max(curve.values())
    tied = sorted(t for t, f in curve.items() if f >= top - 1e-12)
    return tied[(len(tied) - 1) // 2], top


def tune_threshold_peaks(
    peaks: Sequence[Peaks],
    truths: Sequence[np.ndarray],
    thresholds: Sequence[float] | None = None,
    gate: float = 5.0,
) -> tuple[float, float, list[tuple[float, float]]]:
    """Threshold with the best mean per-image F1, from peaks found once at (or below) the lowest threshold.

    ``thresholds`` None: COARSE_THRESHOLDS, then FINE_STEP steps within one coarse step of the best (clipped to
    [FLOOR_THRESHOLD, 0.99]); the peaks must then come from a threshold <= FLOOR_THRESHOLD.
    Returns (best threshold, its mean F1, curve sorted by threshold as (threshold, mean F1) pairs).
    """
    if len(peaks) != len(truths) or not peaks:
        raise ValueError("need the same, non-zero number of maps (or peaks) and truths")
    curve: dict[float, float] = {}
    grid = COARSE_THRESHOLDS if thresholds is None else tuple(float(t) for t in thresholds)
    for t in grid:
        curve[t] = _mean_f1(peaks, truths, t, gate)
    if thresholds is None:
        best, _ = _best(curve)
        step = COARSE_THRESHOLDS[1] - COARSE_THRESHOLDS[0]
        fine = np.round(np.arange(best - step, best + step + 1e-9, FINE_STEP), 4)
        for t in fine[(fine >= FLOOR_THRESHOLD) & (fine <= 0.99)]:
            t = float(t)
            if t not in curve:
                curve[t] = _mean_f1(peaks, truths, t, gate)
    best, f1 = _best(curve)
    return best, f1, sorted(curve.items())


def tune_threshold(
    maps: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    thresholds: Sequence[float] | None = None,
    min_distance: float | Sequence[float] = (1.0, 1.0, 1.0),
    refine: str = "gaussian",
    gate: float = 5.0,
) -> tuple[float, float, list[tuple[float, float]]]:
    """Peak threshold of density ``maps`` (validation volumes) that maximises the mean per-image F1.

    Each map's peaks are found once at the lowest threshold and filtered by score for the others (equivalent to
    re-running find_peaks, see the module docstring). Default grid: 0.05..0.95 by 0.05, then by 0.01 around the
    best. Returns (best threshold, best mean F1, [(threshold, mean F1), ...] sorted by threshold).
    """
    base = FLOOR_THRESHOLD if thresholds is None else min(float(t) for t in thresholds)
    peaks = [find_peaks(m, base, min_distance, refine) for m in maps]
    return tune_threshold_peaks(peaks, truths, thresholds, gate)


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def evaluate_model(
    model_path: str,
    items: Iterable[Item],
    threshold: float | None = None,
    refine: str = "gaussian",
    device: str = "cpu",
    gate: float = 5.0,
) -> list[dict]:
    """Per-image results of an exported model (threshold None: the model's default, "auto" when it is calibrated);
    seconds = density + peaks."""
    from dmdet_infer.detector import Detector

    det = Detector(model_path, device=device, threshold=threshold, refine=refine)
    det.warmup()
    out = []
    for vol, pos, meta in items:
        spots, sec = _timed(lambda v=vol: det.detect(v))
        out.append(score_item(spots.zyx, pos, meta, sec, gate))  # type: ignore[attr-defined]
    return out


def evaluate_sef3d(items: Iterable[Item], params: Mapping, gate: float = 5.0) -> list[dict]:
    """Per-image results of SEF3D with ``params`` from :func:`tune_sef3d_items` / ``training.sef3d.tune_sef3d``
    (sigma_zyx, k; optional refine, default "none" as in the paper, and min_distance)."""
    from training.sef3d import sef3d_detect

    kw = {"refine": params.get("refine", "none"), "min_distance": params.get("min_distance", (1.0, 1.0, 1.0))}
    out = []
    for vol, pos, meta in items:
        pred, sec = _timed(lambda v=vol: sef3d_detect(v, params["sigma_zyx"], params["k"], **kw))
        out.append(score_item(pred, pos, meta, sec, gate))
    return out


class Sef3dTuner:
    """Streaming SEF3D grid search over (sigma_zyx, k): add validation volumes one at a time, then ``best()``.

    Gives the same result as ``training.sef3d.tune_sef3d`` (same ties: first sigma, then first k) without keeping
    the volumes in memory.
    """

    def __init__(self, sigmas: Sequence[Sequence[float]], ks: Sequence[float], gate: float = 5.0,
                 refine: str = "none", min_distance: float | Sequence[float] = (1.0, 1.0, 1.0)) -> None:
        self.sigmas = [tuple(float(s) for s in sig) for sig in sigmas]
        self.ks = [float(k) for k in ks]
        self.gate, self.refine, self.min_distance = gate, refine, min_distance
        self.f1_sum = np.zeros((len(self.sigmas), len(self.ks)))
        self.n = 0

    def add(self, volume: np.ndarray, truth: np.ndarray) -> None:
        for i, sig in enumerate(self.sigmas):
            resp = log_response(volume, sig)
            mean, std = float(resp.mean()), float(resp.std())
            peaks = find_peaks(resp, mean + min(self.ks) * std, self.min_distance, self.refine)
            s64 = peaks.scores.astype(np.float64)
            for j, k in enumerate(self.ks):
                self.f1_sum[i, j] += score(peaks.coords[s64 > mean + k * std], truth, self.gate)["f1"]
        self.n += 1

    def best(self) -> tuple[dict, float]:
        """({"sigma_zyx", "k", "refine", "min_distance"}, best mean F1)."""
        if self.n == 0:
            raise ValueError("no validation volumes added")
        f1 = self.f1_sum / self.n
        i, j = np.unravel_index(int(np.argmax(f1)), f1.shape)  # first maximum in (sigma, k) order
        md = self.min_distance
        params = {"sigma_zyx": self.sigmas[i], "k": self.ks[j], "refine": self.refine,
                  "min_distance": [float(md)] * 3 if np.isscalar(md) else [float(v) for v in md]}  # type: ignore
        return params, float(f1[i, j])


def tune_sef3d_items(items: Iterable[Item], sigmas: Sequence[Sequence[float]], ks: Sequence[float],
                     gate: float = 5.0) -> tuple[dict, float]:
    """Tune SEF3D on streamed validation items (see :class:`Sef3dTuner`)."""
    tuner = Sef3dTuner(sigmas, ks, gate)
    for vol, pos, _ in items:
        tuner.add(vol, pos)
    return tuner.best()


def sef3d_sigma_grid(sigma_xy: float = 1.5, sigma_z: float = 1.0) -> list[tuple[float, float, float]]:
    """(z, y, x) LoG sigmas around the PSF: 0.75x, 1x, 1.25x on each of z and xy (9 triples)."""
    f = (0.75, 1.0, 1.25)
    return [(round(sigma_z * a, 4), round(sigma_xy * b, 4), round(sigma_xy * b, 4)) for a, b in
            itertools.product(f, f)]


# ------------------------------------------------------------------------------------------------ tables


def by_snr(results: Sequence[dict]) -> dict[float, dict]:
    """SNR -> summarise() of that SNR's images, plus "all" over every image."""
    out: dict = {}
    for snr in sorted({r["snr"] for r in results}):
        out[snr] = summarise([r for r in results if r["snr"] == snr])
    if results:
        out["all"] = summarise(list(results))
    return out


def crlb_by_snr(snrs: Iterable[float], background: float = 10.0, sigma_xy: float = 1.5,
                sigma_z: float = 1.0) -> dict[float, float]:
    """3D RMSE bound (training.crlb.crlb_3d) per SNR for the PTC assumptions (background 10, sigma 1.5/1.0)."""
    from training.crlb import crlb_3d

    return {float(s): crlb_3d(float(s), background, sigma_xy, sigma_z)["rmse_3d"] for s in snrs}


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _snr_label(snr: float) -> str:
    return f"SNR {snr:g}"


def table(results_by_method: Mapping[str, Sequence[dict]], crlb: Mapping[float, float] | None = None) -> str:
    """Markdown: an F1 and an RMSE table, rows = SNR levels (+ Average over all images), columns = our methods
    (per-image mean ± sd), the paper's SEF3D / DetNet3D / DM-DetNet3D (PAPER_TABLE1) and, for RMSE, the CRLB.

    ``crlb``: SNR -> 3D RMSE bound; None computes it with :func:`crlb_by_snr` (background 10, sigma 1.5/1.0).
    """
    stats = {name: by_snr(list(res)) for name, res in results_by_method.items()}
    snrs = sorted({float(r["snr"]) for res in results_by_method.values() for r in res} or map(float, PTC_SNRS))
    if crlb is None:
        crlb = crlb_by_snr(snrs)
    paper = list(PAPER_TABLE1)
    lines: list[str] = []
    for metric, col in (("F1", 0), ("RMSE (voxels)", 2)):
        head = ["", *results_by_method, *(f"paper {p}" for p in paper)]
        if col == 2:
            head.append("CRLB (3D bound)")
        lines += [f"**{metric}** (mean ± sd over images)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        key = "f1" if col == 0 else "rmse"
        for snr in [*snrs, "all"]:
            row = [_snr_label(snr) if snr != "all" else "Average"]
            for name in results_by_method:
                s = stats[name].get(snr)
                row.append(_pm(s[f"{key}_mean"], s[f"{key}_std"]) if s else "–")
            for p in paper:
                ref = PAPER_AVERAGE[p] if snr == "all" else PAPER_TABLE1[p].get(int(snr)) if float(snr).is_integer() \
                    else None
                row.append(_pm(ref[col], ref[col + 1]) if ref else "–")
            if col == 2:
                c = crlb.get(float(snr)) if snr != "all" else None
                row.append(f"{c:.3f}" if c is not None else "–")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    n = {name: len(res) for name, res in results_by_method.items()}
    lines.append(f"Images per method: {n}. Paper: {PAPER_CITATION}. CRLB: training.crlb.crlb_3d (background 10, "
                 "sigma_xy 1.5, sigma_z 1.0, point-sampled Gaussian).")
    return "\n".join(lines) + "\n"
