"""Reproduce the paper's Table 1 on simulated Particle Tracking Challenge (virus scenario) data.

    python benchmarks/table1.py --model dm=PATH [--model detnet=PATH] [--model ablation_mse=PATH ...]
        [--n-per-cell 10] [--n-val-per-cell 3] [--seed 12345] [--out benchmarks/results/table1]

Data: a validation split (n-val-per-cell volumes per SNR x density cell) and a test split (n-per-cell per cell, so
10 -> 30 images per SNR level) simulated with :mod:`training.simulate` (PTC assumptions: 512x512x10, background 10,
sigma_xy 1.5, sigma_z 1.0). Item i of split s uses ``SeedSequence([seed, s, i + 1])`` (s = 1 validation, 2 test):
the training code simulates item i with ``SeedSequence([train_seed, i])`` (two words, and SeedSequence ignores
trailing zero words, hence the i + 1), so evaluation volumes are never training volumes, whichever seeds were used.

Tuning on the validation split: SEF3D's LoG sigmas (0.75x/1x/1.25x the PSF on z and xy) and k (threshold mean +
k*sd of the response, integer maxima as in the paper), and each model's fixed threshold (mean per-image F1). Every
dm row runs the shipped pipeline, ``dmdet_infer.Detector.detect`` (tiles, lsq refinement, pair split): a fixed
threshold only cuts (the pair split and the masses do not depend on it), so one detection per validation volume
at the lowest threshold, filtered by score, gives every threshold's spots.

Rows: "sef3d", one per ``--model`` (its tuned fixed threshold), "dm (integer maxima)" (the same with
``refine="none"``: the sub-voxel refinement ablation) and "dm (3-point refinement)" (``refine="gaussian"``, the
per-axis 3-point log-Gaussian, instead of the default 3x3x3 log-quadratic least-squares fit), and, for a
model with a noise calibration, "NAME (auto threshold)": what ``dmdet-infer`` does by default, through the same
``Detector.detect`` (the spot-size estimate, each volume's own cut on score and photometric mass from the
calibration with the structured-background and negated-stack checks, :mod:`dmdet_infer.threshold`, nothing tuned
on validation; lsq refinement; merged pairs split, :mod:`dmdet_infer.pairs`), and "NAME (auto, no pair split)",
the same without the pair split (ablation). Before 2026-11-30 17:40 UTC these rows ran the tiles and the merge
without the spot-size estimate and the negated-stack check. Before 2026-12-01 03:10 UTC the fixed-threshold rows
ran ``find_peaks`` on the whole density map (no tiles, no pair split) with the 3-point refinement, and the
ablation row was "dm (lsq refinement)".
Writes OUT.md (table), OUT.json (per-image results, tuned parameters, timing, machine) and OUT.png (F1 and RMSE
vs SNR, with the paper's DM-DetNet3D and the CRLB).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training import evaluate as ev  # noqa: E402
from training.simulate import PTC_SNRS  # noqa: E402

SEF3D_KS = tuple(float(k) for k in np.round(np.arange(0.5, 12.01, 0.5), 2))
INTEGER_ROW = "dm (integer maxima)"
GAUSSIAN_ROW = "dm (3-point refinement)"
AUTO_SUFFIX = " (auto threshold)"
NO_SPLIT_SUFFIX = " (auto, no pair split)"


def _model_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--model needs NAME=PATH, got {text!r}")
    return name, path


def _shape_arg(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape needs Z,Y,X positive integers, got {text!r}")
    return shape  # type: ignore[return-value]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", type=_model_arg, default=[], metavar="NAME=PATH",
                   help="an exported ONNX model (repeatable); the one named 'dm' also gets the integer-maxima row")
    p.add_argument("--n-per-cell", type=int, default=10, help="test volumes per SNR x density cell (default 10)")
    p.add_argument("--n-val-per-cell", type=int, default=3, help="validation volumes per cell (default 3)")
    p.add_argument("--seed", type=int, default=12345, help="evaluation seed (default 12345)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/table1",
                   help="output prefix: writes OUT.md, OUT.json, OUT.png")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="ONNX Runtime device")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--shape", type=_shape_arg, default=None, help=argparse.SUPPRESS)  # tests: tiny volumes
    args = p.parse_args(argv)
    names = [n for n, _ in args.model]
    if len(set(names)) != len(names):
        p.error(f"--model names must be unique, got {names}")
    if {INTEGER_ROW, GAUSSIAN_ROW, "sef3d"} & set(names):
        p.error(f"--model names 'sef3d', {INTEGER_ROW!r} and {GAUSSIAN_ROW!r} are reserved")
    if args.n_per_cell < 1 or args.n_val_per_cell < 1:
        p.error("--n-per-cell and --n-val-per-cell must be >= 1")
    return args


# ------------------------------------------------------------------------------------------------ provenance


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git(*cmd: str) -> str | None:
    try:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """CPU count, platform, library versions, date and git commit of this run."""
    import numba
    import onnxruntime
    import scipy

    from dmdet_infer.model import auto_precision, openvino_version

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": platform.python_version(),
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "onnxruntime": onnxruntime.__version__,
                     "numba": numba.__version__, "openvino": openvino_version()},
        # what Detector's precision "auto" runs through OpenVINO on this CPU
        "cpu_precision": auto_precision(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "command": " ".join(sys.argv),
    }


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ figure


def figure(results: dict[str, list[dict]], crlb: dict[float, float], path: Path) -> None:
    """F1 and RMSE vs SNR per method (mean ± sd), the paper's DM-DetNet3D and the CRLB dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, res in results.items():
        stats = ev.by_snr(res)
        snrs = sorted(k for k in stats if k != "all")
        for ax, key in ((a1, "f1"), (a2, "rmse")):
            ax.errorbar(snrs, [stats[s][f"{key}_mean"] for s in snrs], [stats[s][f"{key}_std"] for s in snrs],
                        marker="o", capsize=3, label=name)
    paper = ev.PAPER_TABLE1["DM-DetNet3D"]
    ps = sorted(paper)
    a1.plot(ps, [paper[s][0] for s in ps], "k--", label="paper DM-DetNet3D")
    a2.plot(ps, [paper[s][2] for s in ps], "k--", label="paper DM-DetNet3D")
    cs = sorted(crlb)
    a2.plot(cs, [crlb[s] for s in cs], "--", color="grey", marker="x", label="CRLB (3D bound)")
    for ax, label in ((a1, "F1"), (a2, "RMSE (voxels)")):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(PTC_SNRS), [str(s) for s in PTC_SNRS])
        ax.set_xlabel("SNR")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    fig.suptitle("Simulated PTC virus scenario (test split)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ run


def write_tables(out: Path, text: str, report: dict) -> None:
    """OUT.md (``text``) and OUT.json (``report``, made JSON-safe by :func:`_clean`), each atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(Path(f"{out}.md"), text.encode())
    _write_atomic(Path(f"{out}.json"), json.dumps(_clean(report), indent=1).encode())


def write_diagnostic(out: Path, title: str, script: str, machine: dict, lines: list[str], args, rows: dict,
                     seconds: float, detail: str = "") -> None:
    """A diagnostic's table: ``title (detail; `python benchmarks/SCRIPT`; host, date, git commit; seconds)`` over
    the Markdown ``lines``, written as OUT.md and OUT.json (machine, args, rows, seconds) by :func:`write_tables`,
    and printed."""
    where = f"{detail}; " if detail else ""
    text = (f"{title} ({where}`python benchmarks/{script}`; {platform.node()}, {machine.get('date_utc')}, git "
            f"{str(machine.get('git_commit'))[:10]}; {seconds:.0f} s).\n\n" + "\n".join(lines) + "\n")
    write_tables(out, text, {"machine": machine, "args": vars(args), "rows": rows, "seconds": seconds})
    print(text)


def write_report(out: Path, text: str, report: dict, results: dict[str, list[dict]], crlb: dict[float, float]) -> None:
    """OUT.md (``text``), OUT.json (``report``) and OUT.png (F1/RMSE vs SNR of ``results``), each atomically."""
    write_tables(out, text, report)
    figure(results, crlb, Path(f"{out}.png"))
    print(text)
    print(f"wrote {out}.md, {out}.json, {out}.png", file=sys.stderr)


def _mean_seconds(res: list[dict], key: str = "seconds") -> float:
    vals = [r[key] for r in res if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from dmdet_infer.detector import Detector
    from dmdet_infer.peaks import warmup as warmup_peaks

    overrides = {} if args.shape is None else {"shape": args.shape}
    warmup_peaks()
    detectors = {}
    autos = {}  # name -> (default Detector: auto threshold + pair split, the same without the split)
    for name, path in args.model:
        det = Detector(path, device=args.device, threads=args.threads)
        det.warmup()
        detectors[name] = (det, path)
        if det.info.noise_peaks is not None:
            autos[name] = (Detector(det.model, threshold="auto"),
                           Detector(det.model, threshold="auto", split_pairs=False))
    t_start = time.perf_counter()

    # Validation: stream volumes once; keep only spots (at the floor threshold) per model and SEF3D F1 sums.
    sigmas = ev.sef3d_sigma_grid()
    tuner = ev.Sef3dTuner(sigmas, SEF3D_KS)
    val_peaks: dict[str, list] = {name: [] for name in detectors}
    floors = {name: Detector(det.model, threshold=ev.FLOOR_THRESHOLD) for name, (det, _) in detectors.items()}
    truths = []
    n_val = len(PTC_SNRS) * 3 * args.n_val_per_cell
    for vol, pos, _meta in tqdm(ev.iter_split(args.seed, ev.SPLIT_VALIDATION, args.n_val_per_cell, **overrides),
                                total=n_val, desc="validation", file=sys.stderr):
        truths.append(pos)
        tuner.add(vol, pos)
        for name, floor in floors.items():
            spots = floor.detect(vol)
            val_peaks[name].append(ev.Found(spots.zyx, spots.score))
    sef_params, sef_val_f1 = tuner.best()
    tuned: dict[str, dict] = {"sef3d": {**sef_params, "val_f1": sef_val_f1, "sigma_grid": sigmas,
                                        "k_grid": list(SEF3D_KS)}}
    fixed = {}  # name -> {row: Detector at the tuned threshold}
    for name, (det, _) in detectors.items():
        thr, f1, curve = ev.tune_threshold_peaks(val_peaks[name], truths)
        fixed[name] = {name: Detector(det.model, threshold=thr)}
        if name == "dm":
            fixed[name][INTEGER_ROW] = Detector(det.model, threshold=thr, refine="none")
            fixed[name][GAUSSIAN_ROW] = Detector(det.model, threshold=thr, refine="gaussian")
        tuned[name] = {"threshold": thr, "val_f1": f1, "curve": curve, "min_distance": list(det.min_distance),
                       "refine": det.refine, "model_default_threshold": det.info.threshold}
    del val_peaks, truths
    t_val = time.perf_counter() - t_start

    # Test: each volume once, every method on it.
    from training.sef3d import sef3d_detect

    results: dict[str, list[dict]] = {"sef3d": []}
    for name in detectors:
        results[name] = []
        if name == "dm":
            results[INTEGER_ROW] = []
            results[GAUSSIAN_ROW] = []
        if name in autos:
            results[f"{name}{AUTO_SUFFIX}"] = []
            results[f"{name}{NO_SPLIT_SUFFIX}"] = []
    n_test = len(PTC_SNRS) * 3 * args.n_per_cell
    for vol, pos, meta in tqdm(ev.iter_split(args.seed, ev.SPLIT_TEST, args.n_per_cell, **overrides),
                               total=n_test, desc="test", file=sys.stderr):
        t0 = time.perf_counter()
        pred = sef3d_detect(vol, sef_params["sigma_zyx"], sef_params["k"], sef_params["refine"],
                            sef_params["min_distance"])
        results["sef3d"].append(ev.score_item(pred, pos, meta, time.perf_counter() - t0))
        for name in detectors:
            for row, det in fixed[name].items():
                t0 = time.perf_counter()
                spots = det.detect(vol)
                results[row].append(ev.score_item(spots.zyx, pos, meta, time.perf_counter() - t0))
            if name in autos:  # what dmdet-infer does by default: Detector.detect (spot size, threshold, split)
                auto, no_split = autos[name]
                t0 = time.perf_counter()
                spots = auto.detect(vol)
                t1 = time.perf_counter()
                results[f"{name}{AUTO_SUFFIX}"].append(ev.score_item(spots.zyx, pos, meta, t1 - t0))
                plain = no_split.detect(vol)
                t2 = time.perf_counter()
                results[f"{name}{NO_SPLIT_SUFFIX}"].append(ev.score_item(plain.zyx, pos, meta, t2 - t1))
    t_test = time.perf_counter() - t_start - t_val

    crlb = ev.crlb_by_snr(PTC_SNRS)
    md = ev.table(results, crlb)
    shape = tuple(args.shape) if args.shape else (10, 512, 512)
    header = (f"# Table 1 reproduction (simulated PTC virus scenario, shape {shape}, test seed {args.seed})\n\n"
              f"Test: {args.n_per_cell} volumes per SNR x density cell ({args.n_per_cell * 3} per SNR); "
              f"validation: {args.n_val_per_cell} per cell. Tuned on validation: SEF3D sigma_zyx "
              f"{tuple(sef_params['sigma_zyx'])}, k {sef_params['k']}; "
              + ", ".join(f"{n} threshold {tuned[n]['threshold']:.2f}" for n in detectors) + ".\n\n")
    timing = {name: {"seconds_per_volume": _mean_seconds(res)} for name, res in results.items()}
    timing_md = "\n".join(f"- {n}: {t['seconds_per_volume']:.3f} s per volume" for n, t in timing.items())
    text = header + md + "\nMean detection time per test volume (this machine):\n\n" + timing_md + "\n"

    models = {name: {"path": str(path), "sha256": _sha256(path), "name": det.info.name,
                     "training_data": det.info.training_data, "config_seed": det.info.config.get("seed"),
                     "providers": det.model.providers} for name, (det, path) in detectors.items()}
    report = {
        "description": "DM-DetNet3D Table 1 reproduction on simulated PTC virus-scenario data",
        "data": {"shape": shape, "seed": args.seed, "n_per_cell": args.n_per_cell,
                 "n_val_per_cell": args.n_val_per_cell, "snrs": list(PTC_SNRS),
                 "seeding": "item i of split s: SeedSequence([seed, s, i + 1]); s=1 validation, s=2 test; "
                            "training uses SeedSequence([train_seed, i]) (disjoint streams)"},
        "models": models,
        "tuned": tuned,
        "summary": {name: ev.by_snr(res) for name, res in results.items()},
        "crlb_rmse_3d": crlb,
        "paper": {"citation": ev.PAPER_CITATION, "table1": ev.PAPER_TABLE1, "average": ev.PAPER_AVERAGE},
        "timing": {**timing, "validation_seconds": t_val, "test_seconds": t_test},
        "machine": machine_info(),
        "results": results,
    }
    write_report(Path(args.out), text, report, results, crlb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
