"""dmdet's default detector on data its training never used, side by side with classical spot detectors.

    nice python benchmarks/generalisation.py [--out benchmarks/results/generalisation]
        [--model PATH | --model NAME=PATH --model NAME2=PATH2 ...] [--methods dmdet,bigfish_auto,bigfish,...]
        [--conditions ptc_snr1,tissue,...] [--seed 2024] [--n-val 3] [--n-test 5] [--quick]

Needs the optional peers (``pip install -e ".[peers]"``) and sim-fish (``pip install sim-fish``) for the simfish
conditions. About 7 minutes on 2 (shared) CPU cores; ``--quick`` (tiny stacks, one validation and one test stack per
condition) takes seconds and is what tests/test_generalisation.py runs.

Data: benchmarks/_generators.py, written independently of dmdet's training simulator (training/simulate.py is
neither imported nor copied): four generators, nine conditions, each with a validation part (``--n-val`` stacks)
and a test part (``--n-test`` stacks), every stack a function of (seed, condition, split, index) alone:

- ``ptc_indep`` (ptc_snr1/2/4/7): an own simulator of the Particle Tracking Challenge virus scenario, 10x256x256,
  ~25 particles, peak SNR = (I_peak - I_bg) / sqrt(I_peak) with background 10, sigma_xy 1.3-1.7 and sigma_z
  0.9-1.2 drawn per particle, illumination uneven by +-30 %, Poisson noise, offset 100, read noise sd 1-2, uint16.
- ``simfish`` (simfish_a/b): the third-party PyPI simulator sim-fish (sub-pixel positions, its own noise model),
  two voxel sizes / SNRs; its ground truth positions (converted to voxel centres at integers).
- ``tissue`` (tissue_moderate/faint): smFISH in tissue: spots only in a few cells, textured autofluorescence,
  bright lipofuscin blobs, out-of-focus haze, 20x256x256, sigma 1.7/1.9.
- ``yeast8bit``: yeast nucleoids, 8-bit with the background clipped to 0, sigma_xy 2-3 px, sigma_z ~1 slice.

Methods (each returns (N, 3) zyx in voxels):

- ``dmdet``: the default detector exactly as ``dmdet-infer`` runs it: ``Detector(model).detect(volume).zyx`` with
  every option at its default (``--threshold auto``). Nothing of dmdet is tuned on any condition, and it gets the
  stack in its stored dtype (uint16, uint8). ``--model`` picks the model (default: the one shipped in the package);
  ``--model NAME=PATH`` several times compares models side by side (columns ``dmdet:NAME``).
- ``bigfish_auto``: Big-FISH ``detect_spots`` with its automatic (elbow) threshold, voxel_size 1 and spot_radius
  the condition's known spot sigma (the one piece of prior knowledge a user would give it); nothing tuned.
- tuned peers, each tuned on the condition's validation part only (best mean per-stack F1): ``bigfish``
  (spot_radius 0.75/1/1.25 x sigma on z and yx, threshold 0.25*2^(i/4) up to 1024), ``trackpy`` (odd diameters
  ~3.3/4.7/6 sigma_xy and ~3/4.5 sigma_z, minmass 2^(i/4) up to 65536), ``blob_log`` (sigma alone or 0.75-1.25
  sigma over 3 scales, threshold 2^(k/2) coarse then 2^(1/4) steps around the best), ``sef3d`` (training/sef3d.py,
  Table 1's grid around the condition's sigma). Adapters and tuners from benchmarks/peers.py; Big-FISH's candidates
  are capped at the 30 x (truths + 5) strongest maxima per validation stack (thresholds below the cap score 0).
  "best tuned peer" is the maximum test F1 over these four (an oracle choice among tuned peers).

Peers get the stack as float32 (the same values). Scoring: ``training.matching.score`` (optimal one-to-one
matching, distance strictly below a 5-voxel gate), pooled over a condition's test stacks (TP, FP, FN summed, then
precision, recall, F1; RMSE over all matched pairs). Time: wall seconds per test stack after an untimed warm-up.

Writes OUT.md (tables), OUT.json (everything, per-stack scores and tuned parameters) and OUT.png (F1 per condition
and method), each atomically; prints the table to stdout and progress to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _generators as gen  # noqa: E402
from benchmarks import peers  # noqa: E402
from benchmarks.table1 import SEF3D_KS, machine_info, write_tables  # noqa: E402
from training import evaluate as ev  # noqa: E402
from training.matching import score  # noqa: E402

GATE = 5.0
PEERS = ("bigfish", "trackpy", "blob_log", "sef3d")
METHODS = ("dmdet", "bigfish_auto", *PEERS)
BIGFISH_THRESHOLDS = tuple(float(v) for v in np.round(0.25 * 2.0 ** (np.arange(49) / 4), 4))
TRACKPY_MINMASS = tuple(float(v) for v in np.round(2.0 ** (np.arange(65) / 4), 4))
BLOB_COARSE = tuple(float(2.0 ** (k / 2)) for k in range(16, -9, -1))  # 256 .. 0.0625, descending
CAP_FACTOR = 30  # candidates kept per validation stack: CAP_FACTOR x (truths + 5)
BLOB_STOP = 8  # stop lowering blob_log's threshold once it finds BLOB_STOP x the truths


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ peers


def _odd(v: float) -> int:
    return max(3, 2 * int(round((v - 1) / 2)) + 1)


def peer_grids(sigma_zyx: Sequence[float]) -> dict[str, dict]:
    """Each peer's search grid around a condition's spot sigma (voxels, zyx)."""
    sz, sxy = float(sigma_zyx[0]), float(sigma_zyx[1])
    sigmas = ev.sef3d_sigma_grid(sxy, sz)
    s = (sz, sxy, sxy)
    return {
        "bigfish": {"settings": [{"spot_radius_zyx": t} for t in sigmas], "key": "threshold",
                    "thresholds": list(BIGFISH_THRESHOLDS)},
        "trackpy": {"settings": [{"diameter_zyx": (z, d, d)} for z in sorted({_odd(3 * sz), _odd(4.5 * sz)})
                                 for d in sorted({_odd(10 / 3 * sxy), _odd(14 / 3 * sxy), _odd(6 * sxy)})],
                    "key": "minmass", "thresholds": list(TRACKPY_MINMASS)},
        "blob_log": {"settings": [{"min_sigma": s, "max_sigma": s, "num_sigma": 1},
                                  {"min_sigma": tuple(round(0.75 * v, 4) for v in s),
                                   "max_sigma": tuple(round(1.25 * v, 4) for v in s), "num_sigma": 3}],
                     "key": "threshold", "thresholds": "2^(k/2), k = 16..-8 below the LoG maximum, then x2^(+-1/4)"},
        "sef3d": {"sigmas": [list(t) for t in sigmas], "ks": list(SEF3D_KS)},
    }


def bigfish_candidates_capped(volume: np.ndarray, setting: Mapping, lowest: float, cap: int):
    """Big-FISH's spots above ``max(lowest, floor)`` with their LoG value, where ``floor`` keeps the ``cap``
    strongest local maxima (peers.bigfish_candidates otherwise). Returns (coords, scores, floor)."""
    from bigfish.detection import local_maximum_detection, spots_thresholding
    from bigfish.stack import log_filter

    radius = tuple(float(r) for r in setting["spot_radius_zyx"])
    filtered = log_filter(np.asarray(volume, np.float32), radius)
    mask = local_maximum_detection(filtered, radius)
    vals = filtered[mask]
    floor = float(lowest)
    if vals.size > cap:
        floor = max(floor, float(np.partition(vals, vals.size - cap - 1)[vals.size - cap - 1]))
    spots, _ = spots_thresholding(filtered, mask, floor)
    spots = np.asarray(spots, np.int64).reshape(-1, 3)
    return spots.astype(np.float64), filtered[tuple(spots.T)].astype(np.float64), floor


class CappedGridTuner(peers.GridTuner):
    """peers.GridTuner whose candidates may start above the lowest threshold (then lower thresholds score 0)."""

    def __init__(self, candidates: Callable, settings, key, thresholds, gate: float = GATE) -> None:
        super().__init__(lambda v, p: None, settings, key, thresholds, None, gate)  # type: ignore[arg-type]
        self.capped = candidates

    def add(self, volume: np.ndarray, truth: np.ndarray) -> None:
        cap = CAP_FACTOR * (len(truth) + 5)
        with peers.quiet_empty():
            for i, setting in enumerate(self.settings):
                coords, scores, floor = self.capped(volume, setting, min(self.thresholds), cap)
                self.f1_sum[i] += [self._f1(coords[scores > t], truth) if t >= floor else 0.0
                                   for t in self.thresholds]
        self.n += 1


def _trackpy_capped(volume, setting, lowest, cap):
    del cap
    c = peers.trackpy_candidates(volume, setting, lowest)
    return c.coords, c.scores, -math.inf


class BlobLogTuner:
    """blob_log's (setting, threshold) by mean validation F1: a coarse descending threshold grid from just below
    the LoG maximum, stopped once blob_log finds BLOB_STOP x the truths, then 2^(+-1/4) around the best."""

    def __init__(self, settings: Sequence[Mapping], gate: float = GATE) -> None:
        self.settings = [dict(s) for s in settings]
        self.gate = gate
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        self.curves: list[dict[float, float]] = []

    def add(self, volume: np.ndarray, truth: np.ndarray) -> None:
        self.items.append((np.asarray(volume, np.float32), truth))

    def _eval(self, setting: Mapping, t: float) -> tuple[float, float]:
        f1, n = 0.0, 0
        with peers.quiet_empty():
            for vol, truth in self.items:
                pred = peers.detect_blob_log(vol, {**setting, "threshold": t})
                f1 += score(pred, truth, self.gate)["f1"]
                n += len(pred)
        return f1 / len(self.items), n / len(self.items)

    def _log_max(self, setting: Mapping) -> float:
        from scipy.ndimage import gaussian_laplace

        lo, hi = np.asarray(setting["min_sigma"], float), np.asarray(setting["max_sigma"], float)
        out = 0.0
        for frac in np.linspace(0, 1, int(setting["num_sigma"])):
            s = lo + frac * (hi - lo)
            for vol, _ in self.items:
                out = max(out, float(np.max(-gaussian_laplace(vol, s) * np.mean(s) ** 2)))
        return out

    def best(self) -> tuple[dict, float]:
        if not self.items:
            raise ValueError("no validation volumes added")
        n_truth = np.mean([len(t) for _, t in self.items])
        picks = []
        self.curves = []
        for setting in self.settings:
            top = self._log_max(setting)
            curve: dict[float, float] = {}
            for t in [t for t in BLOB_COARSE if t < top] or [BLOB_COARSE[-1]]:
                curve[t], count = self._eval(setting, t)
                if count > BLOB_STOP * max(n_truth, 1):
                    break
            t0, _ = ev._best(curve)
            for t in (t0 * 2 ** 0.25, t0 * 2 ** -0.25):
                curve[t] = self._eval(setting, t)[0]
            self.curves.append(curve)
            picks.append(ev._best(curve))
        i = int(np.argmax([f1 for _, f1 in picks]))
        return {**self.settings[i], "threshold": float(picks[i][0])}, float(picks[i][1])


def make_tuner(peer: str, grids: Mapping[str, dict]):
    g = grids[peer]
    if peer == "bigfish":
        return CappedGridTuner(bigfish_candidates_capped, g["settings"], g["key"], g["thresholds"])
    if peer == "trackpy":
        return CappedGridTuner(_trackpy_capped, g["settings"], g["key"], g["thresholds"])
    if peer == "blob_log":
        return BlobLogTuner(g["settings"])
    if peer == "sef3d":
        return ev.Sef3dTuner(g["sigmas"], g["ks"])
    raise ValueError(peer)


PEER_DETECT = {"bigfish": peers.detect_bigfish, "trackpy": peers.detect_trackpy, "blob_log": peers.detect_blob_log,
               "sef3d": peers.detect_sef3d}


def detect_bigfish_auto(volume: np.ndarray, sigma_zyx: Sequence[float]) -> np.ndarray:
    """Big-FISH ``detect_spots`` with its automatic threshold (voxel_size 1, spot_radius = the known sigma)."""
    from bigfish.detection import detect_spots

    spots = detect_spots(np.asarray(volume, np.float32), threshold=None, voxel_size=(1, 1, 1),
                         spot_radius=tuple(float(s) for s in sigma_zyx))
    return np.asarray(spots, np.float64).reshape(-1, 3)


# ------------------------------------------------------------------------------------------------ dmdet


def _model_arg(text: str) -> tuple[str | None, str]:
    name, sep, path = text.partition("=")
    if sep and name and path and "/" not in name:
        return name, path
    return None, text


def model_keys(models: Sequence[tuple[str | None, str]]) -> dict[str, str | None]:
    """Method key -> model path (None = the shipped model): "dmdet" for one model, "dmdet:NAME" for several."""
    if not models:
        return {"dmdet": None}
    if len(models) == 1:
        return {"dmdet": models[0][1]}
    keys: dict[str, str | None] = {}
    for name, path in models:
        key = f"dmdet:{name or Path(path).stem}"
        if key in keys:
            raise SystemExit(f"generalisation.py: two models named {key!r}; give them NAME=PATH")
        keys[key] = path
    return keys


# ------------------------------------------------------------------------------------------------ run


def _pool(stacks: Sequence[dict]) -> dict:
    tp, fp, fn = (int(sum(s[k] for s in stacks)) for k in ("tp", "fp", "fn"))
    sq = sum(s["tp"] * s["rmse"] ** 2 for s in stacks if s["tp"])
    denom = 2 * tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0, "f1": 2 * tp / denom if denom else 1.0,
            "rmse": math.sqrt(sq / tp) if tp else float("nan"),
            "seconds_per_stack": float(np.mean([s["seconds"] for s in stacks])) if stacks else float("nan")}


def run_condition(cond: gen.Condition, methods: Sequence[str], detectors: Mapping, seed: int, n_val: int,
                  n_test: int, quick: bool) -> dict:
    """Tune the peers on the validation part, then score every method on the test part (pooled)."""
    t_start = time.perf_counter()
    grids = peer_grids(cond.sigma_zyx)
    tuned_peers = [m for m in methods if m in PEERS]
    tuned: dict[str, dict] = {}
    tune_seconds: dict[str, float] = {}
    if tuned_peers:
        tuners = {p: make_tuner(p, grids) for p in tuned_peers}
        tune_seconds = dict.fromkeys(tuned_peers, 0.0)
        for i in range(n_val):
            vol, truth = gen.make_stack(cond, "validation", i, seed, quick)
            vol = vol.astype(np.float32)
            for p, tuner in tuners.items():
                t0 = time.perf_counter()
                tuner.add(vol, truth)
                tune_seconds[p] += time.perf_counter() - t0
            log(f"[{cond.name}] validation {i + 1}/{n_val}: {len(truth)} spots")
        for p, tuner in tuners.items():
            t0 = time.perf_counter()
            params, f1 = tuner.best()
            tune_seconds[p] += time.perf_counter() - t0
            tuned[p] = {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}, "val_f1": f1}
        log(f"[{cond.name}] tuned: " + ", ".join(f"{p} val F1 {tuned[p]['val_f1']:.3f}" for p in tuned_peers))

    keys = [k for k in detectors] + [m for m in methods if m != "dmdet"]
    per_stack: dict[str, list[dict]] = {k: [] for k in keys}
    errors: dict[str, list[str]] = {}
    n_particles, shape, dtype = 0, None, None
    for i in range(n_test):
        vol, truth = gen.make_stack(cond, "test", i, seed, quick)
        shape, dtype = list(vol.shape), str(vol.dtype)
        n_particles += len(truth)
        vol32 = vol.astype(np.float32)
        if i == 0:  # untimed warm-up on a crop (numba compilation, imports, caches)
            crop = np.ascontiguousarray(vol[:, :48, :48])
            for k in keys:
                try:
                    _detect(k, crop, crop.astype(np.float32), cond, detectors, tuned)
                except Exception:  # noqa: BLE001 - a warm-up failure shows again, and is recorded, below
                    pass
        line = []
        for k in keys:
            t0 = time.perf_counter()
            try:
                pred = _detect(k, vol, vol32, cond, detectors, tuned)
            except Exception as exc:  # noqa: BLE001 - e.g. bigfish's automatic threshold on a hard stack
                errors.setdefault(k, []).append(f"test {i}: {type(exc).__name__}: {exc}")
                pred = np.zeros((0, 3))
            seconds = time.perf_counter() - t0
            s = score(pred, truth, GATE)
            per_stack[k].append({**s, "seconds": seconds, "n_pred": int(len(pred)), "n_true": int(len(truth))})
            line.append(f"{k} {s['f1']:.3f}")
        log(f"[{cond.name}] test {i + 1}/{n_test}: {len(truth)} spots; F1 " + ", ".join(line))
    results = {k: {**_pool(v), "per_stack": v} for k, v in per_stack.items()}
    row = {"generator": cond.generator, "condition": cond.name, "description": cond.description,
           "sigma_zyx": list(cond.sigma_zyx), "shape": shape, "dtype": dtype, "n_val": n_val, "n_test": n_test,
           "n_particles": n_particles, "results": results, "tuned": tuned, "tuning_seconds": tune_seconds,
           "errors": errors, "seconds": time.perf_counter() - t_start}
    present = [p for p in PEERS if p in results]
    row["best_tuned_peer"] = (max(present, key=lambda p: results[p]["f1"]) if present else None)
    row["best_tuned_peer_f1"] = results[row["best_tuned_peer"]]["f1"] if present else None
    auto = results.get("bigfish_auto", {}).get("f1")
    row["criteria"] = {k: {"gt_bigfish_auto": None if auto is None else bool(results[k]["f1"] > auto),
                           "ge_best_tuned_peer": None if not present
                           else bool(results[k]["f1"] >= row["best_tuned_peer_f1"] - 1e-12)}
                       for k in detectors}
    return row


def _detect(key: str, vol: np.ndarray, vol32: np.ndarray, cond: gen.Condition, detectors: Mapping,
            tuned: Mapping) -> np.ndarray:
    if key in detectors:
        return np.asarray(detectors[key].detect(vol).zyx, np.float64).reshape(-1, 3)
    with peers.quiet_empty():
        if key == "bigfish_auto":
            return detect_bigfish_auto(vol32, cond.sigma_zyx)
        params = {k: v for k, v in tuned[key].items() if k != "val_f1"}
        return np.asarray(PEER_DETECT[key](vol32, params), np.float64).reshape(-1, 3)


# ------------------------------------------------------------------------------------------------ report


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _yes(v) -> str:
    return "n/a" if v is None else ("yes" if v else "no")


def tables(rows: Sequence[dict], dm_keys: Sequence[str], methods: Sequence[str]) -> str:
    others = [m for m in methods if m != "dmdet"]
    peers_run = [p for p in PEERS if p in others]
    head = ["generator", "condition", "n"]
    for k in dm_keys:
        head += [f"{k} F1 (P / R)", f"{k} RMSE"]
    head += [f"{m} F1" for m in others]
    if peers_run:
        head.append("best tuned peer")
    for k in dm_keys:
        head += [f"{k} > bigfish_auto", f"{k} >= best tuned"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        res = r["results"]
        cells = [r["generator"], r["condition"], str(r["n_particles"])]
        for k in dm_keys:
            s = res[k]
            cells += [f"**{_f(s['f1'])}** ({_f(s['precision'], 2)} / {_f(s['recall'], 2)})", _f(s["rmse"], 2)]
        cells += [_f(res[m]["f1"]) for m in others]
        if peers_run:
            cells.append(f"{r['best_tuned_peer']} {_f(r['best_tuned_peer_f1'])}")
        for k in dm_keys:
            c = r["criteria"][k]
            cells += [_yes(c["gt_bigfish_auto"]), _yes(c["ge_best_tuned_peer"])]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n\n" + "\n".join(summary_lines(rows, dm_keys)) + "\n"
    # timing
    keys = list(dm_keys) + others
    lines = ["| condition | stack | " + " | ".join(f"{k} s/stack" for k in keys)
             + "".join(f" | {p} tuning s" for p in peers_run) + " |", "|" + "---|" * (2 + len(keys) + len(peers_run))]
    for r in rows:
        lines.append(f"| {r['condition']} | {'x'.join(map(str, r['shape']))} {r['dtype']} | "
                     + " | ".join(_f(r["results"][k]["seconds_per_stack"], 2) for k in keys)
                     + "".join(f" | {_f(r['tuning_seconds'].get(p), 1)}" for p in peers_run) + " |")
    out += ("\nWall seconds per test stack (after a warm-up) and seconds spent tuning each peer on the validation "
            "part:\n\n" + "\n".join(lines) + "\n")
    if peers_run:
        lines = ["| condition | " + " | ".join(f"{p} (val F1)" for p in peers_run) + " |",
                 "|" + "---|" * (1 + len(peers_run))]
        for r in rows:
            lines.append(f"| {r['condition']} | " + " | ".join(
                f"{_params_text(r['tuned'][p])} ({_f(r['tuned'][p]['val_f1'])})" for p in peers_run) + " |")
        out += "\nParameters each peer got from its condition's validation part:\n\n" + "\n".join(lines) + "\n"
    errs = [f"- {r['condition']} {k}: {len(v)} stack(s) failed, e.g. {v[0]}" for r in rows
            for k, v in r["errors"].items()]
    if errs:
        out += "\nFailures (scored as no detections):\n\n" + "\n".join(errs) + "\n"
    return out


def _params_text(params: Mapping) -> str:
    parts = []
    for k, v in params.items():
        if k in ("val_f1", "refine", "min_distance"):
            continue
        if isinstance(v, list | tuple):
            v = "(" + ", ".join(f"{x:g}" for x in v) + ")"
        elif isinstance(v, float):
            v = f"{v:.4g}"
        parts.append(f"{k} {v}")
    return ", ".join(parts)


def summary_lines(rows: Sequence[dict], dm_keys: Sequence[str]) -> list[str]:
    out = []
    for k in dm_keys:
        parts = []
        for crit, label in (("gt_bigfish_auto", "F1 > bigfish_auto"), ("ge_best_tuned_peer", "F1 >= best tuned peer")):
            vals = [r["criteria"][k][crit] for r in rows if r["criteria"][k][crit] is not None]
            if vals:
                parts.append(f"{label} in {sum(vals)}/{len(vals)} conditions")
        if parts:
            out.append(f"**Summary ({k})**: " + "; ".join(parts) + ".")
    return out


def figure(rows: Sequence[dict], keys: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(rows) + 3.5), 4.2))
    width = 0.8 / max(len(keys), 1)
    x = np.arange(len(rows))
    for j, k in enumerate(keys):
        ax.bar(x + (j - (len(keys) - 1) / 2) * width, [r["results"][k]["f1"] for r in rows], width, label=k)
    ax.set_xticks(x, [r["condition"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("F1 (test, pooled)")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("dmdet (default, untuned) vs peers on independently generated data")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ main


def _list_arg(choices: Sequence[str], what: str):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        out: list[str] = []
        for n in names:
            hits = [c for c in choices if c == n] or [c for c in choices if what == "conditions"
                                                      and gen.CONDITIONS[c].generator == n]
            if not hits:
                raise argparse.ArgumentTypeError(f"--{what}: unknown {n!r}; choose from {','.join(choices)}")
            out += hits
        if not out:
            raise argparse.ArgumentTypeError(f"--{what} is empty")
        return list(dict.fromkeys(out))

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/generalisation",
                   help="output prefix: writes OUT.md, OUT.json, OUT.png")
    p.add_argument("--model", type=_model_arg, action="append", default=[],
                   help="dmdet model: PATH, or NAME=PATH several times to compare models (default: shipped model)")
    p.add_argument("--methods", type=_list_arg(METHODS, "methods"), default=list(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--conditions", type=_list_arg(list(gen.CONDITIONS), "conditions"), default=list(gen.CONDITIONS),
                   help=f"comma-separated conditions or generators: {','.join(gen.CONDITIONS)} (default: all)")
    p.add_argument("--seed", type=int, default=2024, help="data seed (default 2024)")
    p.add_argument("--n-val", type=int, default=None, help="validation stacks per condition (default 3; quick 1)")
    p.add_argument("--n-test", type=int, default=None, help="test stacks per condition (default 5; quick 1)")
    p.add_argument("--quick", action="store_true", help="tiny stacks, 1 validation + 1 test stack (for tests)")
    args = p.parse_args(argv)
    args.n_val = args.n_val if args.n_val is not None else (1 if args.quick else 3)
    args.n_test = args.n_test if args.n_test is not None else (1 if args.quick else 5)
    if args.n_test < 1 or (args.n_val < 1 and any(m in PEERS for m in args.methods)):
        p.error("--n-test must be >= 1, and --n-val >= 1 when a tuned peer runs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peers.check_installed([m for m in args.methods if m in peers.METHODS])
    if "bigfish_auto" in args.methods:
        peers.check_installed(["bigfish"])
    t_start = time.perf_counter()
    machine = machine_info()  # at the start: the code that runs is the code of this commit (and dirt)
    detectors = {}
    if "dmdet" in args.methods:
        import dmdet_infer
        from dmdet_infer import Detector

        machine["dmdet_infer"] = {"version": dmdet_infer.__version__, "path": str(Path(dmdet_infer.__file__).parent)}
        detectors = {k: Detector(path) for k, path in model_keys(args.model).items()}
    dm_keys = list(detectors)
    rows = []
    for name in args.conditions:
        cond = gen.CONDITIONS[name]
        rows.append(run_condition(cond, args.methods, detectors, args.seed, args.n_val, args.n_test, args.quick))
        log(f"[{name}] done in {rows[-1]['seconds']:.0f} s")
    total = time.perf_counter() - t_start
    keys = dm_keys + [m for m in args.methods if m != "dmdet"]
    header = (
        "# dmdet on data its training never used (benchmarks/generalisation.py)\n\n"
        f"Data: benchmarks/_generators.py (independent of training/simulate.py), seed {args.seed}, "
        f"{args.n_val} validation + {args.n_test} test stacks per condition{' (--quick sizes)' if args.quick else ''}. "
        "dmdet: the default detector as `dmdet-infer` runs it (`Detector(model).detect(volume)`, "
        "`--threshold auto`), nothing tuned on any condition"
        + (": " + ", ".join(f"{k} = {info.info.name}" for k, info in detectors.items()) if detectors else "")
        + ". bigfish_auto: Big-FISH's automatic threshold with spot_radius = the known spot sigma. The other peers: "
        "parameters tuned on each condition's validation part; best tuned peer = the highest test F1 among them. "
        "F1, precision, recall and RMSE (voxels) pooled over the test stacks (TP/FP/FN summed; 5-voxel gate). "
        f"n = ground-truth particles in the test stacks. Code: git {str(machine.get('git_commit'))[:10]}"
        f"{' with uncommitted changes' if machine.get('git_dirty') else ''}. Total run time {total:.0f} s.\n\n")
    text = header + tables(rows, dm_keys, args.methods)
    report = {
        "description": "dmdet's default detector (nothing tuned) vs Big-FISH auto and tuned peers on data from "
                       "generators written independently of dmdet's training simulator",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "config": {"seed": args.seed, "n_val": args.n_val, "n_test": args.n_test, "quick": args.quick,
                   "gate": GATE, "methods": list(args.methods), "conditions": list(args.conditions),
                   "models": {k: {"path": p, "name": detectors[k].info.name}
                              for k, p in model_keys(args.model).items()} if detectors else {},
                   "peer_grids_note": "grids around each condition's sigma: see peer_grids() and the tuned entries",
                   "cap_factor": CAP_FACTOR, "blob_stop": BLOB_STOP},
        "conditions": rows,
        "summary": {k: {crit: {"pass": sum(bool(r["criteria"][k][crit]) for r in rows),
                               "of": sum(r["criteria"][k][crit] is not None for r in rows)}
                        for crit in ("gt_bigfish_auto", "ge_best_tuned_peer")} for k in dm_keys},
        "summary_text": summary_lines(rows, dm_keys),
        "total_seconds": total,
        "machine": machine,
    }
    out = Path(args.out)
    write_tables(out, text, report)
    figure(rows, keys, Path(f"{out}.png"))
    print(text)
    log(f"wrote {out}.md, {out}.json, {out}.png ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
