"""``Detector.detect`` side by side for several models on one 10x512x512 stack, everything a user gets by default.

    python benchmarks/detect_speed.py --model old=benchmarks/models/dmdet-w8-crowded.onnx \
        --model new=dmdet_infer/models/default.onnx [--repeats 5] [--out benchmarks/results/detect_speed]

One simulated SNR-4 PTC-like stack (500 particles, background 10), each model's default ``Detector`` (threshold
auto, mass cut, pair split, spot-size estimate, its own normalisation), ``warmup()`` first, then the models in
turn, ``repeats`` rounds, the median per model; the same process, so the ratio between models is what matters
on a shared machine. Also the median time of the normalisation statistics and of the spot-size estimate alone.
Writes OUT.md and OUT.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.table1 import _write_atomic, machine_info  # noqa: E402


def _model_arg(text: str) -> tuple[str, str | None]:
    name, sep, path = text.partition("=")
    return (name, path) if sep else (Path(text).stem, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", type=_model_arg, default=[], metavar="NAME=PATH")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/detect_speed")
    args = p.parse_args(argv)
    from dmdet_infer import Detector, scale
    from training.simulate import SimParams, simulate

    models = args.model or [("default", None)]
    volume, _ = simulate(SimParams(shape=(10, 512, 512), n_particles=500, snr=4.0), np.random.default_rng(7))
    volume = volume.astype(np.uint16)
    detectors = {name: Detector(path, device="cpu") for name, path in models}
    for det in detectors.values():
        det.warmup()
        det.detect(volume)
    times: dict[str, list[float]] = {name: [] for name in detectors}
    stats_t: dict[str, list[float]] = {name: [] for name in detectors}
    scale_t: dict[str, list[float]] = {name: [] for name in detectors}
    found: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, det in detectors.items():
            t0 = time.perf_counter()
            found[name] = len(det.detect(volume))
            times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            st = det.stats(volume)
            stats_t[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            crop = scale.crop_region(volume.shape)
            scale.estimate(st.apply(volume[crop], crop))
            scale_t[name].append(time.perf_counter() - t0)
    rows = {name: {"seconds": statistics.median(times[name]), "all_seconds": times[name],
                   "normalisation_stats_s": statistics.median(stats_t[name]),
                   "spot_size_estimate_s": statistics.median(scale_t[name]), "spots": found[name],
                   "normalisation": det.info.normalisation["method"], "model": det.info.name}
            for name, det in detectors.items()}
    first = next(iter(rows))
    lines = [f"# Detector.detect on one 10x512x512 SNR-4 stack (median of {args.repeats}, after warm-up)", "",
             "| model | normalisation | seconds | x first | normalisation stats s | spot-size estimate s | spots |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} ({r['model']}) | {r['normalisation']} | {r['seconds']:.3f} | "
                     f"{r['seconds'] / rows[first]['seconds']:.2f} | {r['normalisation_stats_s']:.3f} | "
                     f"{r['spot_size_estimate_s']:.3f} | {r['spots']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.out.with_suffix(".md"), text.encode())
    _write_atomic(args.out.with_suffix(".json"), json.dumps(
        {"rows": rows, "repeats": args.repeats, "machine": machine_info()}, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
