"""Per-volume threshold from the model's noise calibration (``--threshold auto``).

The input is normalised by the background noise (median / MAD), so the density map's peaks on pure noise occur
at a rate per voxel that depends on the model, not on the image. Export measures that rate on simulated
background-only volumes (:func:`calibrate`, stored as ``dmdet.noise_peaks``). For a new volume with ``n`` voxels
and candidate scores ``s``, the expected false spots above a threshold ``t`` are ``FP(t) = rate(t) * n``, the
true spots are estimated conservatively as ``TP(t) = N(t) - FP(t) - guard * sqrt(FP(t))`` (``N(t)``: candidates
above ``t``; ``guard`` standard deviations of a Poisson count), the number of particles as ``P = max TP``, and
:func:`choose` returns the ``t`` that maximises the estimated F1 ``2 TP / (N + P)`` (the highest such ``t`` among
ties). When no spot stands out of the noise (``P < 1``) it returns the model's fixed threshold. A faint image
(SNR ~1) thus gets a low threshold and a bright one a high threshold that drops the noise peaks a single
compromise threshold lets through.

A calibration may also hold the noise peaks' photometric masses (``photons``, ``per_voxel_cut``;
:func:`dmdet_infer.pairs.shape_features`, measured for peaks scoring at least ``measure_level``). Then
:func:`choose_cut` searches a cut on both the score and the photometric mass (a peak is kept when its score is
above ``t`` and, if measured, its mass above ``a``) with the same estimated F1. In a bright image the noise
peaks, whose scores overlap those of real spots, are far fainter than the real spots: the mass cut drops them
without raising the score threshold over faint-scoring real spots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

GRID = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))  # 0.05 .. 0.95
GUARD_SD = 2.0
CALIBRATION_SHAPE = (10, 512, 512)
CALIBRATION_BACKGROUND = 10.0
CALIBRATION_VOLUMES = 2
PHOTON_GRID = tuple(round(float(a), 1) for a in np.geomspace(5.0, 500.0, 31))  # normalised units
MEASURE_LEVEL = 0.5
#: With a noise-family calibration, spots stand out when the candidates above some cut exceed the expected noise
#: peaks by this many Poisson standard deviations plus one; otherwise the volume gets no spot.
STAND_OUT_SD = 3.0


def _gradient(rng: np.random.Generator, shape: tuple[int, int, int], amount: float = 0.3) -> np.ndarray:
    """1 + amount * u, u from -1 to 1 along a random direction in YX."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    y = np.linspace(-1.0, 1.0, shape[1])[:, None]
    x = np.linspace(-1.0, 1.0, shape[2])[None, :]
    u = np.cos(angle) * x + np.sin(angle) * y
    return (1.0 + amount * u / max(float(np.abs(u).max()), 1e-12))[None]


def _poisson(mean: float, offset: float = 0.0, read: float = 0.0, gradient: bool = False):
    def make(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
        m = mean * (_gradient(rng, shape) if gradient else 1.0)
        v = rng.poisson(np.broadcast_to(m, shape)).astype(np.float32) + np.float32(offset)
        return v + rng.normal(0.0, read, shape).astype(np.float32) if read else v
    return make


def _gaussian(gradient: bool = False):
    def make(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
        m = 100.0 * (_gradient(rng, shape) if gradient else 1.0)
        return (m + rng.normal(0.0, 5.0, shape)).astype(np.float32)
    return make


def _eight_bit(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Low-count noise quantised to 8 bits with the background partly clipped at 0."""
    return np.clip(rng.poisson(4.0, shape).astype(np.float32) * 3.0 - 6.0, 0, 255).astype(np.float32)


#: Background-only volumes (no particle) whose noise peaks :func:`calibrate` counts: photon-counting noise from
#: 3 to 100 photons, Gaussian noise, a camera's offset and read noise, each flat and under a +-30 % illumination
#: gradient, and clipped 8-bit data. The calibration keeps the highest rate over them at every cut, so that the
#: automatic threshold does not rely on a stack's noise matching one of them.
NOISE_MODELS: dict[str, Callable[[np.random.Generator, tuple[int, int, int]], np.ndarray]] = {
    "poisson3": _poisson(3.0), "poisson10": _poisson(10.0), "poisson100": _poisson(100.0),
    "gaussian": _gaussian(), "camera": _poisson(10.0, 100.0, 2.0),
    "poisson3+gradient": _poisson(3.0, gradient=True), "poisson10+gradient": _poisson(10.0, gradient=True),
    "poisson100+gradient": _poisson(100.0, gradient=True), "gaussian+gradient": _gaussian(True),
    "camera+gradient": _poisson(10.0, 100.0, 2.0, True), "8bit-clipped": _eight_bit,
}
FAMILY_SHAPE = (10, 256, 256)
#: Volumes per noise model of a noise-family calibration (export's default; 2 before 2026-11-30 20:30 UTC): 5.2 M
#: voxels each, so that the rare noise peaks scoring above 0.85 are counted rather than missed.
FAMILY_VOLUMES = 8


def calibrate(
    scores_of: Callable[[np.ndarray], Any],
    shape: tuple[int, int, int] = CALIBRATION_SHAPE,
    volumes: int = CALIBRATION_VOLUMES,
    background: float = CALIBRATION_BACKGROUND,
    seed: int = 0,
    noise: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Noise-peak rate per voxel above each threshold of :data:`GRID`.

    ``scores_of(volume)`` returns the scores of the spots found in ``volume`` at threshold ``GRID[0]`` (e.g.
    ``lambda v: Detector(model, threshold=0.05).detect(v).score``), or ``(scores, photons)`` with the
    photometric masses (NaN where not measured, see :meth:`dmdet_infer.detector.Detector.candidates`), which adds
    the rates of :func:`choose_cut`. With ``noise`` (names of :data:`NOISE_MODELS`) it is called on ``volumes``
    volumes of ``shape`` of each, and every rate is the highest over them; without, on Poisson volumes with mean
    ``background`` photons (the calibration of models up to 2026-11-26)."""
    rng = np.random.default_rng(seed)
    makers = ({"poisson": lambda r, sh: r.poisson(background, sh).astype(np.float32)} if noise is None
              else {name: NOISE_MODELS[name] for name in noise})
    n_voxels = int(volumes) * int(np.prod(shape))
    size = (int(shape[0]), int(shape[1]), int(shape[2]))
    per_voxel, per_cut = [], []
    for make in makers.values():
        scores: list[np.ndarray] = []
        photons: list[np.ndarray] = []  # only when every volume's masses were measured
        for _ in range(int(volumes)):
            found = scores_of(make(rng, size))
            s, p = found if isinstance(found, tuple) else (found, None)
            scores.append(np.asarray(s, np.float64).reshape(-1))
            if p is not None:
                photons.append(np.asarray(p, np.float64).reshape(-1))
        found = np.concatenate(scores) if scores else np.zeros(0)
        per_voxel.append([float(np.count_nonzero(found > t)) / n_voxels for t in GRID])
        if photons and len(photons) == len(scores):
            mass = np.concatenate(photons)
            mass = np.where(np.isnan(mass), np.inf, mass)  # not measured: never cut
            per_cut.append([[float(np.count_nonzero((found > t) & (mass > a))) / n_voxels for a in PHOTON_GRID]
                            for t in GRID])
    out = {"thresholds": list(GRID), "per_voxel": np.max(per_voxel, axis=0).tolist(), "guard_sd": GUARD_SD,
           "shape": list(shape), "volumes": int(volumes), "background": float(background),
           "noise": "poisson" if noise is None else list(makers)}
    if len(per_cut) == len(makers):
        out["measure_level"] = MEASURE_LEVEL
        out["photons"] = list(PHOTON_GRID)
        out["per_voxel_cut"] = np.max(per_cut, axis=0).tolist()
    if noise is not None:
        out["stand_out_sd"] = STAND_OUT_SD
        out["per_voxel_models"] = [list(r) for r in per_voxel]
        if "per_voxel_cut" in out:
            out["per_voxel_cut_models"] = [np.asarray(c).tolist() for c in per_cut]
    return out


def check(calibration: dict[str, Any]) -> None:
    """Raise ValueError when a ``dmdet.noise_peaks`` entry is malformed."""
    t = calibration.get("thresholds")
    r = calibration.get("per_voxel")
    if not isinstance(t, list) or not isinstance(r, list) or len(t) != len(r) or not t:
        raise ValueError("dmdet.noise_peaks needs equal-length lists 'thresholds' and 'per_voxel'")
    if any(b <= a for a, b in zip(t, t[1:])) or not all(0.0 <= v < 1.0 for v in t):
        raise ValueError("dmdet.noise_peaks thresholds must increase within [0, 1)")
    if "per_voxel_cut" in calibration:
        a = calibration.get("photons")
        cut = calibration["per_voxel_cut"]
        level = calibration.get("measure_level")
        if (not isinstance(a, list) or not a or not isinstance(cut, list) or len(cut) != len(t)
                or any(not isinstance(row, list) or len(row) != len(a) for row in cut)
                or not isinstance(level, (int, float))):
            raise ValueError("dmdet.noise_peaks needs 'photons', 'measure_level' and a 'per_voxel_cut' row of "
                             "len(photons) rates per threshold")


def has_cut(calibration: dict[str, Any] | None) -> bool:
    """Whether ``calibration`` supports :func:`choose_cut` (score and photometric mass)."""
    return calibration is not None and "per_voxel_cut" in calibration


def floor(calibration: dict[str, Any]) -> float:
    """The lowest calibrated threshold: candidates are searched above it."""
    return float(calibration["thresholds"][0])


def _above(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Candidates strictly above each threshold of ``grid``."""
    s = np.sort(np.asarray(scores, np.float64))
    return s.size - np.searchsorted(s, grid, side="right")


def upper_count(count: np.ndarray | float) -> np.ndarray:
    """One-sided ~95 % Poisson upper bound on a mean from an observed ``count``: ``c + 2 sqrt(c + 1) + 1``
    (3.0 for no count, 4.8 for one; exact: 3.0, 4.7). A rate counted in a finite sample is never taken as zero:
    a cut where the calibration or the negated stack saw no peak still expects some."""
    c = np.asarray(count, np.float64)
    return c + 2.0 * np.sqrt(c + 1.0) + 1.0


def calibration_voxels(calibration: dict[str, Any]) -> int:
    """The voxels over which each calibrated noise model's peaks were counted (``volumes`` x ``shape``)."""
    return int(calibration.get("volumes", CALIBRATION_VOLUMES)) * int(np.prod(calibration.get("shape",
                                                                                            CALIBRATION_SHAPE)))


#: Below this many calibrated noise peaks above a threshold, :func:`_tail` extrapolates the rate there.
TAIL_COUNT = 30


def _tail(counted: np.ndarray, n_cal: float, grid: np.ndarray) -> np.ndarray:
    """A noise model's rate above each threshold with its rare high-scoring peaks extrapolated, not only counted.

    Noise peaks above a score ``t`` fall off as a Gaussian tail of the score's logit (the network's value before
    its sigmoid at the maximum of a noise field): ``log r = a + b l + c l^2``, fitted (weighted by the counts) to the
    thresholds from 0.3 with at least :data:`TAIL_COUNT` calibrated peaks, gives the rate above them, never below
    what was counted (a straight line in the logit when the fit bends up; the counts as they are, raised to their
    Poisson upper bound (:func:`upper_count`), with fewer than three such thresholds). So a cut above the last
    calibrated noise peak still expects some, fewer the higher it is: one stray noise peak does not "stand out",
    and one very bright spot still does."""
    counts = counted * n_cal
    well = np.flatnonzero((counts >= TAIL_COUNT) & (grid >= 0.3))
    if well.size < 3:
        return upper_count(counts) / n_cal
    logit = np.log(grid / (1.0 - grid))
    weights = np.sqrt(counts[well])
    coef = np.polyfit(logit[well], np.log(counted[well]), 2, w=weights)
    if coef[0] > 0:
        coef = np.r_[0.0, np.polyfit(logit[well], np.log(counted[well]), 1, w=weights)]
    out = counted.copy()
    rare = np.arange(grid.size) > well[-1]
    out[rare] = np.maximum(counted[rare], np.exp(np.polyval(coef, logit[rare])))
    return np.maximum.accumulate(out[::-1])[::-1]  # never more peaks above a higher cut


def _estimate(above: np.ndarray, rate: np.ndarray, n_voxels: int, guard: float) -> np.ndarray:
    """Conservative true-spot counts: candidates above a cut less the expected noise peaks and ``guard`` sd."""
    fp = rate * float(n_voxels)
    return np.clip(above - fp - guard * np.sqrt(fp), 0.0, None)


#: Score band in which a stack's own level of false peaks is measured (:func:`noise_rates`): real spots rarely
#: score this low, noise and structure (texture, cells, blobs) do.
EXCESS_BAND = (0.05, 0.25)
#: A stack with this many times more peaks in :data:`EXCESS_BAND` than the noisiest calibrated noise model is
#: "structured": its automatic threshold may not go below the model's validated one.
STRUCTURED = 2.0


def _in_band(scores: np.ndarray) -> float:
    """Peaks scoring in :data:`EXCESS_BAND`: the level of a stack's (or a decoy's) false peaks."""
    s = np.asarray(scores, np.float64)
    return float(np.count_nonzero((s > EXCESS_BAND[0]) & (s <= EXCESS_BAND[1])))


_MODELS: dict[int, tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}


def _models(calibration: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A noise-family calibration's grid, per-model rates and rates with mass cuts (empty without), and each
    model's extrapolated tail (:func:`_tail`), as arrays: made once per calibration object (the last few are kept;
    a calibration is read, never changed in place)."""
    key = id(calibration)
    held = _MODELS.get(key)
    if held is not None and held[0] is calibration:
        return held[1]
    grid = np.asarray(calibration["thresholds"], np.float64)
    n_cal = float(calibration_voxels(calibration))
    models = np.asarray(calibration["per_voxel_models"], np.float64)
    cuts = (np.asarray(calibration["per_voxel_cut_models"], np.float64) if "per_voxel_cut" in calibration
            else np.zeros((len(models), 0, 0)))
    tails = np.stack([_tail(r, n_cal, grid) for r in models])
    if len(_MODELS) >= 8:
        _MODELS.clear()
    _MODELS[key] = (calibration, (grid, models, cuts, tails))
    return grid, models, cuts, tails


def noise_rates(scores: np.ndarray, n_voxels: int, calibration: dict[str, Any],
                structured: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """The false-peak rates per voxel to expect in this stack (the worst, and the search's, below), and how
    structured it is.

    Calibrations up to 2026-11-26 (one noise model): the calibrated rates, and 1. A noise-family calibration
    holds each model's rates; each model's rates are scaled so that its peaks in :data:`EXCESS_BAND` match the
    stack's own (with a 2-sd upper bound on that count); the shapes come from the calibration, the level from the
    stack. The worst rates, which :func:`stands_out` asks whether anything at all exceeds, are the highest scaled
    rate at every cut, with each model's rare high-scoring peaks extrapolated (:func:`_tail`: a cut where the
    calibration saw no noise peak is not free of them). The rates that the cut search uses are the scaled counts
    pooled over all models (their mean): one model's rare high-scoring peaks, counted in a few volumes, vary
    2-3x from one sample of volumes to the next, and the stack's low band hardly tells the models' tails apart,
    so no single model is the stack's. On a ``structured`` stack (texture, cells, clipping: no noise model
    describes its false peaks) they are the highest scaled count over the models instead: fail safe. The third
    value is the stack's excess over the noisiest model (the smallest scale, at least 1). Rates are (thresholds,
    1 + mass levels) arrays (one column without a mass calibration)."""
    cut = "per_voxel_cut" in calibration
    base = np.asarray(calibration["per_voxel"], np.float64)
    full = np.c_[base, np.asarray(calibration["per_voxel_cut"], np.float64)] if cut else base[:, None]
    if "per_voxel_models" not in calibration:
        return full, full, 1.0
    grid, models, cuts, tails = _models(calibration)
    observed = _in_band(scores)
    upper = observed + 2.0 * np.sqrt(observed) + 1.0
    rates, bounds, scales = [], [], []
    for m, r in enumerate(models):
        lo, hi = np.interp(EXCESS_BAND, grid, r)
        expected = max((lo - hi) * float(n_voxels), 1e-9)
        scale = upper / expected
        scales.append(observed / expected)
        counted = np.c_[r, cuts[m]] if cut else r[:, None]
        rates.append(scale * counted)
        bounds.append(scale * tails[m][:, None])
    search = np.max(rates, axis=0) if structured else np.mean(rates, axis=0)
    return np.max(bounds, axis=0), search, max(1.0, float(min(scales)))


NOTHING = float("inf")  #: the threshold of a volume in which nothing stands out of the noise


def stands_out(above: np.ndarray, rate: np.ndarray, n_voxels: int, calibration: dict[str, Any]) -> bool:
    """Whether, at some cut, the candidates exceed the expected noise peaks by at least one spot beyond the guard
    (``stand_out_sd`` Poisson sd with a noise-family calibration, else ``guard_sd``)."""
    if not above.size:
        return False
    sd = float(calibration.get("stand_out_sd", calibration.get("guard_sd", GUARD_SD)))
    return bool(_estimate(above, rate, n_voxels, sd).max() >= 1.0)


def choose(scores: np.ndarray, n_voxels: int, calibration: dict[str, Any], fallback: float,
           decoy: Callable[[], tuple[np.ndarray, np.ndarray, int]] | None = None, structured: bool = False) -> float:
    """The threshold for one volume (see the module docstring); ``scores`` are its candidates' scores: the
    search of :func:`choose_cut` on the score alone."""
    s = np.asarray(scores, np.float64).reshape(-1)
    worst, pooled, excess = noise_rates(s, n_voxels, calibration, structured)
    grid = np.asarray(calibration["thresholds"], np.float64)
    i, _ = _search(_above(s, grid)[:, None], worst[:, :1], pooled[:, :1], excess, n_voxels, calibration, fallback,
                   None if decoy is None else lambda: _decoy(decoy(), calibration, s, n_voxels))
    return NOTHING if i is None else float(grid[i]) if i >= 0 else float(fallback)


def _above_cuts(scores: np.ndarray, photons: np.ndarray, grid: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Candidates strictly above each (threshold, mass level) pair; a NaN mass (not measured) is never cut."""
    s = np.asarray(scores, np.float64).reshape(-1)
    m = np.asarray(photons, np.float64).reshape(-1)
    m = np.where(np.isnan(m), np.inf, m)
    return np.stack([_above(s[m > a], grid) for a in levels], axis=1)


def decoy_rates(decoy: tuple[np.ndarray, np.ndarray, int], calibration: dict[str, Any],
                stack_scores: np.ndarray | None = None, n_voxels: int | None = None) -> np.ndarray:
    """Per-voxel rates, over the grid of :func:`choose_cut` (score, and ``-inf`` then each mass level), of the
    peaks that the network finds in the stack's negated input (``decoy``: their scores, photometric masses and
    the voxels searched), with a 2-sd upper bound on each count. Negation keeps the stack's own noise and
    structure and turns every real spot into a hole, so these peaks estimate the false peaks of this stack.

    Skewed noise (few photons) makes fewer peaks once negated than as it is. With the stack's own scores
    (``stack_scores`` over ``n_voxels``), the rates are scaled up, never down, so that the decoy's peaks in
    :data:`EXCESS_BAND`, where real spots rarely score, are as many per voxel as the stack's (their lower 2-sd
    bound): the scaling that the calibrated noise models get."""
    return _decoy(decoy, calibration, stack_scores, n_voxels)[0]


def _decoy(decoy: tuple[np.ndarray, np.ndarray, int], calibration: dict[str, Any],
           stack_scores: np.ndarray | None = None, n_voxels: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """What :func:`_search` needs of the negated stack: its rates (:func:`decoy_rates`), its peak counts above each
    cut of :func:`choose_cut`'s grid, and the factor from one of its peaks to the false peaks expected in the whole
    stack of ``n_voxels`` (0 without it)."""
    scores, photons, voxels = decoy
    voxels = max(int(voxels), 1)
    grid = np.asarray(calibration["thresholds"], np.float64)
    levels = np.r_[-np.inf, np.asarray(calibration.get("photons", []), np.float64)]
    counts = _above_cuts(scores, photons, grid, levels).astype(np.float64)
    scale = 1.0
    if stack_scores is not None and n_voxels:  # skewed noise: scaled up to the stack's own low band, never down
        own = _in_band(stack_scores)
        own = max(own - 2.0 * np.sqrt(own), 0.0) / float(n_voxels)
        scale = max(1.0, own / ((_in_band(scores) + 1.0) / voxels))
    rates = (counts + 2.0 * np.sqrt(counts)) / voxels * scale
    return rates, counts, scale * float(n_voxels or 0) / voxels


def gain_stands_out(gained: float, decoy_gained: float, factor: float, guard: float = GUARD_SD) -> bool:
    """Whether the ``gained`` candidates of a cut below the validated threshold are more than false peaks: the
    negated stack saw ``decoy_gained`` more peaks there, each standing for ``factor`` in the whole stack; the gain
    must exceed that expectation by ``guard`` sd of it, counted as Poisson with one more peak (the negated
    stack is a sample: seeing none does not make a cut free of false peaks)."""
    d = max(float(decoy_gained), 0.0)
    return float(gained) - factor * d - guard * factor * np.sqrt(d + 1.0) >= 1.0


def _search(above: np.ndarray, worst: np.ndarray, pooled: np.ndarray, excess: float, n_voxels: int,
            calibration: dict[str, Any], fallback: float,
            decoy: Callable[[], tuple[np.ndarray, np.ndarray, float]] | None) -> tuple[int | None, int]:
    """Indices (threshold, mass column) of the best cut of :func:`choose_cut`; (None, 0) when nothing stands
    out with a noise-family calibration, (-1, 0) when the older calibration falls back to ``fallback``."""
    grid = np.asarray(calibration["thresholds"], np.float64)
    family = "stand_out_sd" in calibration
    if not stands_out(above[:, 0], worst[:, 0], n_voxels, calibration):  # by the score alone (the many cells of
        return (None if family else -1), 0  # the 2D search would otherwise find one in pure noise now and then)
    guard = float(calibration.get("guard_sd", GUARD_SD))

    def best_cut(rate: np.ndarray, floor: float | None) -> tuple[int, int]:
        tp = _estimate(above, rate, n_voxels, guard)
        f1 = 2.0 * tp / np.maximum(above + float(tp.max()), 1.0)
        if floor is not None:
            f1 = np.where((grid >= floor)[:, None], f1, -1.0)
        best = np.argwhere(f1 >= f1.max() - 1e-12)  # ties: the highest threshold, then the lowest mass cut
        i, j = best[np.lexsort((best[:, 1], -best[:, 0]))[0]]
        return int(i), int(j)

    i, j = best_cut(pooled, None)
    if family and grid[i] < fallback:  # lower than validated: only where the stack's own false peaks allow it
        if decoy is None or excess >= STRUCTURED:
            i, j = best_cut(pooled, fallback)
        else:
            rates, counts, factor = decoy()
            i, j = best_cut(np.maximum(pooled, rates[:, :above.shape[1]]), None)
            if grid[i] < fallback:  # the gain over the best validated cut must stand out of the decoy's sample
                i0, j0 = best_cut(pooled, fallback)
                if not gain_stands_out(above[i, j] - above[i0, j0], counts[i, j] - counts[i0, j0], factor, guard):
                    i, j = i0, j0
    return i, j


def choose_cut(
    scores: np.ndarray, photons: np.ndarray, n_voxels: int, calibration: dict[str, Any], fallback: float,
    decoy: Callable[[], tuple[np.ndarray, np.ndarray, int]] | None = None, structured: bool = False,
) -> tuple[float, float]:
    """``(t, a)`` for one volume: keep candidates scoring above ``t`` whose photometric mass (NaN: not measured)
    is above ``a`` (``-inf``: no mass cut). Same estimate as :func:`choose`, over both cuts; ties go to the
    highest ``t``, then the lowest ``a``. Falls back to ``(fallback, -inf)`` where :func:`choose` does.

    With a noise-family calibration the cut goes below ``fallback`` (the validated threshold) only when the stack's
    own false peaks allow it: ``decoy()`` (called only then) gives the peaks of the negated stack
    (:func:`decoy_rates`), and the search is redone with the higher of the two rates; a cut it finds below
    ``fallback`` is kept only when its gain over the best cut at or above ``fallback`` stands out of the negated
    stack's own count there (:func:`gain_stands_out`). Without ``decoy``, or on a structured stack, the cut stays
    at or above ``fallback``. ``structured``: the stack's background is correlated, so the search takes the
    highest noise model's rates rather than their pool (:func:`noise_rates`)."""
    grid = np.asarray(calibration["thresholds"], np.float64)
    levels = np.r_[-np.inf, np.asarray(calibration["photons"], np.float64)]
    worst, pooled, excess = noise_rates(np.asarray(scores, np.float64).reshape(-1), n_voxels, calibration,
                                         structured)
    i, j = _search(_above_cuts(scores, photons, grid, levels), worst, pooled, excess, n_voxels, calibration,
                   fallback, None if decoy is None else lambda: _decoy(decoy(), calibration,
                                                                            np.asarray(scores), n_voxels))
    if i is None:
        return NOTHING, -np.inf
    if i < 0:
        return float(fallback), -np.inf
    return float(grid[i]), float(levels[j])
