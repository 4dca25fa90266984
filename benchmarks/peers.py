"""dmdet side by side with the spot detectors microscopists use, on Table 1's simulated stacks.

    python benchmarks/peers.py [--methods dmdet,dmdet_auto,sef3d,bigfish,bigfish_subpixel,trackpy,blob_log]
        [--n-per-cell 3] [--n-val-per-cell 1] [--seed 12345] [--shape 10,512,512] [--out benchmarks/results/peers]

Needs the optional peers: ``pip install -e ".[train,peers]"`` (big-fish, trackpy, scikit-image).

Data: the validation and test splits of benchmarks/table1.py (same seed, same ``n_per_cell`` semantics, so the
same stacks as Table 1 for the same arguments): every SNR (1/2/4/7) x density (low/mid/high) cell, PTC virus
scenario, 10x512x512, background 10, sigma_xy 1.5, sigma_z 1.0.

Methods, each an adapter ``(volume, params) -> (N, 3) float64 zyx`` timed per call on every test volume:

- ``dmdet``: the model shipped in the package (``dmdet_infer.Detector``, tiled detection, lsq refinement) at
  one threshold tuned on the validation split like every peer's parameters.
- ``dmdet_auto``: the same model as ``dmdet-infer`` runs it by default, ``--threshold auto`` (each volume's own
  threshold from the model's noise calibration, :mod:`dmdet_infer.threshold`); nothing is tuned.
- ``sef3d``: training/sef3d.py (integer maxima, as in the paper).
- ``bigfish``: ``bigfish.detection.detect_spots`` (LoG + local maxima, integer voxels; voxel_size 1, so
  ``spot_radius`` is the LoG sigma and the minimum distance in voxels).
- ``bigfish_subpixel``: the same detections, then ``bigfish.detection.fit_subpixel`` (a Gaussian fit per spot);
  it moves spots but never adds or drops one, so it uses Big-FISH's tuned parameters and its time includes both.
- ``trackpy``: ``trackpy.locate`` in 3D (odd diameters z, y, x; minmass). By design it ignores maxima within its
  margin (about diameter // 2) of the volume's faces: with 10 slices that is the first and last slice or two.
- ``blob_log``: ``skimage.feature.blob_log`` in 3D (anisotropic sigmas, overlap 0.5).

Every method gets the float32 volume (photon counts). Tuning: each method's parameters maximise the mean
per-image F1 on the validation split (gate 5 voxels), the search that tunes dmdet's threshold in Table 1: dmdet's
threshold with ``training.evaluate.tune_threshold_peaks`` (0.05 steps, then 0.01 around the best), SEF3D with
``training.evaluate.Sef3dTuner`` (Table 1's grid), the peers over the grids below (:data:`GRIDS`). For Big-FISH and
trackpy the candidates of a setting are found once per volume at the lowest threshold and filtered by their score
(Big-FISH's LoG value, trackpy's mass): their threshold only drops candidates, so this equals calling the
detector at each threshold (tests/test_peers.py checks it). blob_log prunes overlapping blobs among those above
its threshold, so it is called once per grid point. Ties: the median tied threshold, then the first setting.

Timing is wall time per call on this machine after a warm-up call, each library as it runs by default (dmdet's
ONNX Runtime and numba use every core; the peers' filters run on one). Writes OUT.md (summary, F1 and RMSE
tables), OUT.json (per-image results, grids, tuned parameters, timing, machine) and OUT.png (F1, RMSE vs SNR).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.table1 import (  # noqa: E402
    SEF3D_KS,
    _mean_seconds,
    _shape_arg,
    machine_info,
    write_report,
)
from training import evaluate as ev  # noqa: E402
from training.matching import score  # noqa: E402
from training.simulate import PTC_SNRS  # noqa: E402

PSF_SIGMA_ZYX = (1.0, 1.5, 1.5)  # the simulator's PSF (sigma_z, sigma_xy, sigma_xy)
INSTALL_HINT = 'pip install -e ".[peers]"'

#: Peer grids. Big-FISH: spot radius (= LoG sigma, voxels) 0.75/1/1.25 x the PSF on z and yx (SEF3D's sigma grid)
#: x threshold on the (unnormalised) LoG, 0.5 * 2^(i/4) up to 32. trackpy: odd diameters bracketing the spot
#: (about 4 sigma: z 3 or 5, yx 5, 7 or 9) x minmass 2 * 2^(i/4) up to 2048. blob_log: the PSF's sigma alone or
#: 0.75-1.25 x the PSF over 3 scales x threshold on the scale-normalised LoG.
GRIDS: dict[str, dict] = {
    "bigfish": {
        "settings": [{"spot_radius_zyx": s} for s in ev.sef3d_sigma_grid()],
        "key": "threshold",
        "thresholds": [float(v) for v in np.round(0.5 * 2.0 ** (np.arange(25) / 4), 4)],
    },
    "trackpy": {
        "settings": [{"diameter_zyx": (z, d, d)} for z in (3, 5) for d in (5, 7, 9)],
        "key": "minmass",
        "thresholds": [float(v) for v in np.round(2.0 * 2.0 ** (np.arange(41) / 4), 4)],
    },
    "blob_log": {
        "settings": [
            {"min_sigma": PSF_SIGMA_ZYX, "max_sigma": PSF_SIGMA_ZYX, "num_sigma": 1},
            {"min_sigma": tuple(0.75 * s for s in PSF_SIGMA_ZYX), "max_sigma": tuple(1.25 * s for s in PSF_SIGMA_ZYX),
             "num_sigma": 3},
        ],
        "key": "threshold",
        "thresholds": [2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0],
    },
}


class Candidates(NamedTuple):
    """Detections at the lowest threshold of a grid and the score each method thresholds."""

    coords: np.ndarray  # float64 (N, 3) zyx
    scores: np.ndarray  # float64 (N,)


@contextlib.contextmanager
def quiet_empty():
    """Silence the peers' "nothing found" warnings (expected at high thresholds and on SNR 1 volumes)."""
    with warnings.catch_warnings():
        for message in ("No spots were detected", "No maxima survived"):
            warnings.filterwarnings("ignore", message=message)
        yield


def _points(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1, 3)


# ------------------------------------------------------------------------------------------------ adapters


def detect_bigfish(volume: np.ndarray, params: Mapping) -> np.ndarray:
    """Big-FISH ``detect_spots`` (voxel_size 1, spot_radius in voxels, fixed threshold); integer zyx."""
    from bigfish.detection import detect_spots

    spots = detect_spots(np.asarray(volume, np.float32), threshold=float(params["threshold"]), voxel_size=(1, 1, 1),
                         spot_radius=tuple(float(r) for r in params["spot_radius_zyx"]))
    return _points(spots)


def detect_bigfish_subpixel(volume: np.ndarray, params: Mapping) -> np.ndarray:
    """Big-FISH detections refined by ``fit_subpixel`` (one Gaussian fit per spot)."""
    from bigfish.detection import detect_spots, fit_subpixel

    vol = np.asarray(volume, np.float32)
    radius = tuple(float(r) for r in params["spot_radius_zyx"])
    spots = detect_spots(vol, threshold=float(params["threshold"]), voxel_size=(1, 1, 1), spot_radius=radius)
    if len(spots) == 0:
        return _points(spots)
    return _points(fit_subpixel(vol, spots, voxel_size=(1, 1, 1), spot_radius=radius))


def _trackpy_frame(volume: np.ndarray, diameter: Sequence[int], minmass: float | None):
    import trackpy

    trackpy.quiet()
    return trackpy.locate(np.asarray(volume, np.float32), diameter=tuple(int(d) for d in diameter), minmass=minmass)


def _trackpy_points(frame) -> tuple[np.ndarray, np.ndarray]:
    if len(frame) == 0:
        return _points([]), np.zeros(0)
    coords = frame[["z", "y", "x"]].to_numpy(np.float64)
    ok = np.isfinite(coords).all(axis=1)  # trackpy can return NaN positions for degenerate features
    return coords[ok], frame["mass"].to_numpy(np.float64)[ok]


def detect_trackpy(volume: np.ndarray, params: Mapping) -> np.ndarray:
    """trackpy ``locate`` in 3D (diameter z, y, x odd; minmass)."""
    return _trackpy_points(_trackpy_frame(volume, params["diameter_zyx"], float(params["minmass"])))[0]


def detect_blob_log(volume: np.ndarray, params: Mapping) -> np.ndarray:
    """scikit-image ``blob_log`` in 3D (anisotropic sigmas); integer zyx."""
    from skimage.feature import blob_log

    blobs = blob_log(np.asarray(volume, np.float32), min_sigma=tuple(params["min_sigma"]),
                     max_sigma=tuple(params["max_sigma"]), num_sigma=int(params["num_sigma"]),
                     threshold=float(params["threshold"]))
    return _points(blobs[:, :3])


def detect_sef3d(volume: np.ndarray, params: Mapping) -> np.ndarray:
    """SEF3D (training/sef3d.py) with ``training.evaluate.Sef3dTuner``'s parameters."""
    from training.sef3d import sef3d_detect

    return sef3d_detect(volume, params["sigma_zyx"], params["k"], params["refine"], params["min_distance"])


@functools.lru_cache(maxsize=4)
def dmdet_detector(device: str = "cpu", threads: int | None = None, auto: bool = False):
    """The shipped model's :class:`dmdet_infer.Detector` (one per device/threads/mode), warmed up: with
    ``auto`` its default ``--threshold auto``, else a fixed threshold (set by the caller)."""
    from dmdet_infer.detector import Detector

    det = Detector(None, device=device, threads=threads, threshold="auto" if auto else 0.5)
    det.warmup()
    return det


def detect_dmdet(volume: np.ndarray, params: Mapping) -> np.ndarray:
    """dmdet with the shipped model at ``params["threshold"]`` (tiled ``Detector.detect``)."""
    det = dmdet_detector(params.get("device", "cpu"), params.get("threads"))
    det.threshold = float(params["threshold"])
    return det.detect(volume).zyx


def detect_dmdet_auto(volume: np.ndarray, params: Mapping) -> np.ndarray:
    """dmdet as ``dmdet-infer`` runs by default: the shipped model, each volume's own threshold."""
    return dmdet_detector(params.get("device", "cpu"), params.get("threads"), auto=True).detect(volume).zyx


# ------------------------------------------------------------------------------------------------ candidates


def bigfish_candidates(volume: np.ndarray, setting: Mapping, lowest: float) -> Candidates:
    """Big-FISH's spots above ``lowest`` and their LoG value (detect_spots' steps, threshold left for later)."""
    from bigfish.detection import local_maximum_detection, spots_thresholding
    from bigfish.stack import log_filter

    radius = tuple(float(r) for r in setting["spot_radius_zyx"])
    filtered = log_filter(np.asarray(volume, np.float32), radius)
    spots, _ = spots_thresholding(filtered, local_maximum_detection(filtered, radius), float(lowest))
    spots = np.asarray(spots, np.int64).reshape(-1, 3)
    return Candidates(_points(spots), filtered[tuple(spots.T)].astype(np.float64))


def trackpy_candidates(volume: np.ndarray, setting: Mapping, lowest: float) -> Candidates:
    """trackpy's features (minmass 0) and their mass; locate's minmass only drops features of lower mass."""
    del lowest
    return Candidates(*_trackpy_points(_trackpy_frame(volume, setting["diameter_zyx"], None)))


# ------------------------------------------------------------------------------------------------ tuning


class GridTuner:
    """Mean validation F1 over (setting, threshold); streaming: add volumes one at a time, then ``best()``.

    With ``candidates`` each setting's detections are found once per volume at the lowest threshold and filtered
    by score (``score > threshold``); without, ``detect`` runs once per grid point.
    """

    def __init__(self, detect: Callable[[np.ndarray, Mapping], np.ndarray], settings: Sequence[Mapping], key: str,
                 thresholds: Sequence[float], candidates: Callable[..., Candidates] | None = None,
                 gate: float = 5.0) -> None:
        self.detect, self.candidates, self.key, self.gate = detect, candidates, key, gate
        self.settings = [dict(s) for s in settings]
        self.thresholds = [float(t) for t in thresholds]
        self.f1_sum = np.zeros((len(self.settings), len(self.thresholds)))
        self.n = 0

    def _f1(self, pred: np.ndarray, truth: np.ndarray) -> float:
        return score(pred, truth, self.gate)["f1"]

    def add(self, volume: np.ndarray, truth: np.ndarray) -> None:
        with quiet_empty():
            for i, setting in enumerate(self.settings):
                if self.candidates is not None:
                    c = self.candidates(volume, setting, min(self.thresholds))
                    row = [self._f1(c.coords[c.scores > t], truth) for t in self.thresholds]
                else:
                    row = [self._f1(self.detect(volume, {**setting, self.key: t}), truth) for t in self.thresholds]
                self.f1_sum[i] += row
        self.n += 1

    def curves(self) -> list[dict[float, float]]:
        """Per setting: threshold -> mean validation F1."""
        return [dict(zip(self.thresholds, row / max(self.n, 1))) for row in self.f1_sum]

    def best(self) -> tuple[dict, float]:
        """(setting with its best threshold, mean F1): Table 1's ``_best`` per setting, first setting on ties."""
        if self.n == 0:
            raise ValueError("no validation volumes added")
        picks = [ev._best(curve) for curve in self.curves()]
        i = int(np.argmax([f1 for _, f1 in picks]))
        return {**self.settings[i], self.key: picks[i][0]}, float(picks[i][1])


class DmdetTuner:
    """dmdet's fixed threshold as in Table 1: the shipped pipeline's spots (``Detector.detect``) at the floor
    threshold per volume, filtered by score (a fixed threshold only cuts), ``tune_threshold_peaks``."""

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        from dmdet_infer.detector import Detector

        self.device, self.threads = device, threads
        self.det = dmdet_detector(device, threads)
        self.floor = Detector(self.det.model, threshold=ev.FLOOR_THRESHOLD)
        self.peaks: list = []
        self.truths: list[np.ndarray] = []

    def add(self, volume: np.ndarray, truth: np.ndarray) -> None:
        spots = self.floor.detect(volume)
        self.peaks.append(ev.Found(spots.zyx, spots.score))
        self.truths.append(truth)

    def best(self) -> tuple[dict, float]:
        thr, f1, _ = ev.tune_threshold_peaks(self.peaks, self.truths)
        det = self.det
        return {"threshold": thr, "device": self.device, "threads": self.threads, "refine": det.refine,
                "min_distance": list(det.min_distance), "model": det.info.name,
                "model_default_threshold": det.info.threshold}, f1


class DmdetAutoTuner:
    """Nothing to tune (the threshold is chosen per volume); records the validation F1 of the default run."""

    def __init__(self, device: str = "cpu", threads: int | None = None, gate: float = 5.0) -> None:
        self.params = {"threshold": "auto", "device": device, "threads": threads}
        self.gate = gate
        self.f1: list[float] = []

    def add(self, volume: np.ndarray, truth: np.ndarray) -> None:
        self.f1.append(score(detect_dmdet_auto(volume, self.params), truth, self.gate)["f1"])

    def best(self) -> tuple[dict, float]:
        return dict(self.params), float(np.mean(self.f1)) if self.f1 else float("nan")


def grid_tuner(method: str, gate: float = 5.0) -> GridTuner:
    """The :class:`GridTuner` of a peer ("bigfish", "trackpy" or "blob_log") over its :data:`GRIDS` entry."""
    g = GRIDS[method]
    detect = {"bigfish": detect_bigfish, "trackpy": detect_trackpy, "blob_log": detect_blob_log}[method]
    candidates = {"bigfish": bigfish_candidates, "trackpy": trackpy_candidates}.get(method)
    return GridTuner(detect, g["settings"], g["key"], g["thresholds"], candidates, gate)


# ------------------------------------------------------------------------------------------------ methods


@dataclass(frozen=True)
class Method:
    """A benchmarked detector: label, adapter, the module it needs (import, pip names), its tuning, its grid."""

    label: str
    detect: Callable[[np.ndarray, Mapping], np.ndarray]
    requires: tuple[str, str] | None
    tuned_as: str  # key of the method whose tuned parameters it uses (itself, or bigfish for bigfish_subpixel)
    grid: str


METHODS: dict[str, Method] = {
    "dmdet": Method("dmdet (shipped model)", detect_dmdet, None, "dmdet",
                    "threshold 0.05-0.95 by 0.05, then by 0.01 around the best (Table 1)"),
    "dmdet_auto": Method("dmdet (shipped model, --threshold auto: the default)", detect_dmdet_auto, None,
                         "dmdet_auto", "none: each volume's threshold from the model's noise calibration"),
    "sef3d": Method("SEF3D", detect_sef3d, None, "sef3d",
                    "sigma_zyx 0.75/1/1.25 x PSF on z and yx (9) x k 0.5-12 by 0.5 (Table 1)"),
    "bigfish": Method("Big-FISH", detect_bigfish, ("bigfish", "big-fish"), "bigfish",
                      "spot_radius 0.75/1/1.25 x PSF on z and yx (9) x threshold 0.5*2^(i/4), i=0..24"),
    "bigfish_subpixel": Method("Big-FISH + fit_subpixel", detect_bigfish_subpixel, ("bigfish", "big-fish"),
                               "bigfish", "Big-FISH's tuned parameters (the fit only moves spots)"),
    "trackpy": Method("trackpy locate", detect_trackpy, ("trackpy", "trackpy"), "trackpy",
                      "diameter z {3,5} x yx {5,7,9} (6) x minmass 2*2^(i/4), i=0..40"),
    "blob_log": Method("skimage blob_log", detect_blob_log, ("skimage", "scikit-image"), "blob_log",
                       "sigma = PSF (1 scale) or 0.75-1.25 x PSF (3 scales) x threshold 2-8 (8)"),
}


def check_installed(methods: Sequence[str]) -> None:
    """Exit with a one-line message when a peer's package is missing."""
    for name in methods:
        req = METHODS[name].requires
        if req is not None and importlib.util.find_spec(req[0]) is None:
            raise SystemExit(f"peers.py: {name} needs {req[1]}, which is not installed: {INSTALL_HINT}")


def make_tuner(method: str, device: str = "cpu", threads: int | None = None):
    """A tuner (``add(volume, truth)``, ``best() -> (params, val F1)``) for a method key of :data:`METHODS`."""
    if method == "dmdet":
        return DmdetTuner(device, threads)
    if method == "dmdet_auto":
        return DmdetAutoTuner(device, threads)
    if method == "sef3d":
        return ev.Sef3dTuner(ev.sef3d_sigma_grid(), SEF3D_KS)
    return grid_tuner(method)


def _methods_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--methods takes a comma-separated subset of {','.join(METHODS)}, "
                                         f"got {text!r}")
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", type=_methods_arg, default=list(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--n-per-cell", type=int, default=3, help="test volumes per SNR x density cell (default 3)")
    p.add_argument("--n-val-per-cell", type=int, default=1, help="validation volumes per cell (default 1)")
    p.add_argument("--seed", type=int, default=12345, help="evaluation seed (default 12345, as Table 1)")
    p.add_argument("--shape", type=_shape_arg, default=None, help="Z,Y,X volume shape (default 10,512,512)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/peers",
                   help="output prefix: writes OUT.md, OUT.json, OUT.png")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="dmdet's ONNX Runtime device")
    p.add_argument("--threads", type=int, default=None, help="dmdet's ONNX Runtime intra-op threads (default: ORT's)")
    args = p.parse_args(argv)
    if args.n_per_cell < 1 or args.n_val_per_cell < 1:
        p.error("--n-per-cell and --n-val-per-cell must be >= 1")
    return args


# ------------------------------------------------------------------------------------------------ run


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("big-fish", "trackpy", "scikit-image", "pandas", "scikit-learn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _params_text(params: Mapping) -> str:
    skip = {"device", "threads", "model", "model_default_threshold", "min_distance", "refine"}
    parts = []
    for k, v in params.items():
        if k in skip:
            continue
        if isinstance(v, list | tuple):
            v = "(" + ", ".join(f"{x:g}" for x in v) + ")"
        elif isinstance(v, float):
            v = f"{v:g}"
        parts.append(f"{k} {v}")
    return ", ".join(parts)


def tune(methods: Sequence[str], items: Iterable[ev.Item], device: str = "cpu", threads: int | None = None,
         progress: Callable | None = None) -> tuple[dict[str, dict], dict[str, float], np.ndarray]:
    """Tune every method's parameters on validation ``items`` (streamed once).

    Returns ({tuned key: {**params, "val_f1", ...}}, {tuned key: tuning seconds}, a 64x64 crop to warm up on)."""
    keys = list(dict.fromkeys(METHODS[m].tuned_as for m in methods))
    tuners = {k: make_tuner(k, device, threads) for k in keys}
    seconds = dict.fromkeys(keys, 0.0)
    crop = None
    for vol, pos, _meta in (progress(items) if progress else items):
        for k, tuner in tuners.items():
            t0 = time.perf_counter()
            tuner.add(vol, pos)
            seconds[k] += time.perf_counter() - t0
        if crop is None:
            crop = np.ascontiguousarray(vol[:, :64, :64])
    tuned = {}
    for k, tuner in tuners.items():
        params, f1 = tuner.best()
        tuned[k] = {**params, "val_f1": f1}
        if isinstance(tuner, GridTuner):
            tuned[k]["val_f1_curves"] = [{"setting": s, "curve": sorted(c.items())}
                                         for s, c in zip(tuner.settings, tuner.curves())]
    return tuned, seconds, crop  # type: ignore[return-value]


def params_of(method: str, tuned: Mapping[str, Mapping]) -> dict:
    """The detection parameters of ``method`` (its tuned entry without the validation scores)."""
    return {k: v for k, v in tuned[METHODS[method].tuned_as].items() if k not in ("val_f1", "val_f1_curves")}


def run_test(methods: Sequence[str], tuned: Mapping[str, Mapping], items: Iterable[ev.Item],
             progress: Callable | None = None, gate: float = 5.0) -> dict[str, list[dict]]:
    """Per-image results of every method on the test ``items``; each adapter call timed."""
    params = {m: params_of(m, tuned) for m in methods}
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for vol, pos, meta in (progress(items) if progress else items):
        for m in methods:
            with quiet_empty():
                t0 = time.perf_counter()
                pred = METHODS[m].detect(vol, params[m])
                seconds = time.perf_counter() - t0
            results[m].append(ev.score_item(pred, pos, meta, seconds, gate))
    return results


def summary_table(methods: Sequence[str], tuned: Mapping[str, Mapping], results: Mapping[str, list[dict]],
                  shape: tuple[int, int, int]) -> str:
    """Markdown: method, tuned parameters (and grid), validation F1, test F1 / RMSE over all images, s / volume."""
    vol = "x".join(str(s) for s in shape)
    lines = [f"| method | parameters tuned on validation (grid searched by mean F1) | val F1 | F1 | RMSE (voxels) | "
             f"s / {vol} volume |", "|---|---|---|---|---|---|"]
    for m in methods:
        t = tuned[METHODS[m].tuned_as]
        s = ev.by_snr(results[m]).get("all", {})
        lines.append(f"| {METHODS[m].label} | {_params_text(params_of(m, tuned))} ({METHODS[m].grid}) | "
                     f"{t['val_f1']:.3f} | {ev._pm(s.get('f1_mean', np.nan), s.get('f1_std', np.nan))} | "
                     f"{ev._pm(s.get('rmse_mean', np.nan), s.get('rmse_std', np.nan))} | "
                     f"{_mean_seconds(results[m]):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_installed(args.methods)
    from tqdm import tqdm

    overrides = {} if args.shape is None else {"shape": args.shape}
    shape = tuple(args.shape) if args.shape else (10, 512, 512)
    cells = len(PTC_SNRS) * 3
    t_start = time.perf_counter()
    val = ev.iter_split(args.seed, ev.SPLIT_VALIDATION, args.n_val_per_cell, **overrides)
    tuned, tune_seconds, crop = tune(
        args.methods, val, args.device, args.threads,
        lambda it: tqdm(it, total=cells * args.n_val_per_cell, desc="validation (tuning)", file=sys.stderr))
    t_val = time.perf_counter() - t_start
    with quiet_empty():
        for m in args.methods:  # warm-up (numba compilation, caches), untimed
            METHODS[m].detect(crop, params_of(m, tuned))

    test = ev.iter_split(args.seed, ev.SPLIT_TEST, args.n_per_cell, **overrides)
    results = run_test(args.methods, tuned, test,
                       lambda it: tqdm(it, total=cells * args.n_per_cell, desc="test", file=sys.stderr))
    t_test = time.perf_counter() - t_start - t_val

    labelled = {METHODS[m].label: results[m] for m in args.methods}
    crlb = ev.crlb_by_snr(PTC_SNRS)
    header = (f"# dmdet and peer spot detectors (simulated PTC virus scenario, shape {shape}, test seed {args.seed})"
              f"\n\nTest: {args.n_per_cell} volumes per SNR x density cell ({args.n_per_cell * 3} per SNR); "
              f"validation: {args.n_val_per_cell} per cell (the stacks of benchmarks/table1.py with the same "
              "arguments). Every method's parameters were chosen on the validation split by the same search that "
              "tunes dmdet's threshold (best mean per-image F1, gate 5 voxels) over the grid in brackets. F1 and "
              "RMSE: test mean ± sd over images. Time: wall seconds per detection call on this machine, after a "
              "warm-up call (dmdet uses every core, the peers one).\n\n")
    text = (header + summary_table(args.methods, tuned, results, shape) + "\n" + ev.table(labelled, crlb))
    timing = {m: {"seconds_per_volume": _mean_seconds(results[m]),
                  "tuning_seconds": tune_seconds.get(METHODS[m].tuned_as)} for m in args.methods}
    machine = machine_info()
    machine["versions"].update(_versions())
    report = {
        "description": "dmdet vs peer spot detectors (Big-FISH, trackpy, scikit-image blob_log, SEF3D) on simulated "
                       "PTC virus-scenario data",
        "data": {"shape": shape, "seed": args.seed, "n_per_cell": args.n_per_cell,
                 "n_val_per_cell": args.n_val_per_cell, "snrs": list(PTC_SNRS),
                 "seeding": "as benchmarks/table1.py: item i of split s uses SeedSequence([seed, s, i + 1])"},
        "methods": {m: {"label": METHODS[m].label, "grid": METHODS[m].grid, "tuned_as": METHODS[m].tuned_as}
                    for m in args.methods},
        "grids": {k: g for k, g in GRIDS.items() if k in {METHODS[m].tuned_as for m in args.methods}},
        "tuned": tuned,
        "summary": {m: ev.by_snr(res) for m, res in results.items()},
        "crlb_rmse_3d": crlb,
        "timing": {**timing, "validation_seconds": t_val, "test_seconds": t_test},
        "machine": machine,
        "results": results,
    }
    write_report(Path(args.out), text, report, labelled, crlb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
