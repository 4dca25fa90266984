"""Network widths side by side (issue 3): parameters, GFLOPs, CPU seconds per volume and F1 at SNR 1 and 2.

    python benchmarks/widths.py --model w8=PATH.onnx --model w16=PATH.onnx [--n-per-cell 2] [--repeats 3]
        [--out benchmarks/results/widths]

Each model runs through ``dmdet_infer.Detector`` (ONNX Runtime, CPU provider, default ``--threshold auto``) on the
same freshly simulated 10x512x512 PTC virus-scenario stacks at SNR 1 and 2 (``n-per-cell`` per density level,
benchmark seed 999: disjoint from training, validation and Table 1), scored with the challenge's matching (gate 5
voxels). Seconds per volume: the median of ``repeats`` timed ``Detector.detect`` calls on one volume after a
warm-up, measured for every model in this one run. Parameters and GFLOPs (multiply-accumulates per
10x512x512 volume) are those of the network in the model's stored config. The rule of the issue: ship the
fastest model whose F1 at SNR 1 and at SNR 2 is within 0.01 of the best. Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.table1 import _model_arg, _shape_arg, _write_atomic, machine_info  # noqa: E402

SHAPE = (10, 512, 512)
SNRS = (1.0, 2.0)


def network_size(path: str) -> tuple[int, float, str]:
    """(trainable parameters, GFLOPs per 10x512x512 volume, config name) of an exported model's network."""
    import onnx

    from training.config import TrainConfig
    from training.network import DetNet3D, count_params, gflops

    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    cfg = TrainConfig.from_dict(json.loads(meta["dmdet.config"]))
    net = DetNet3D(width=cfg.width, levels=cfg.levels, z_pool=cfg.z_pool)
    return count_params(net), gflops(net, SHAPE), cfg.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=_model_arg, required=True, metavar="NAME=PATH")
    parser.add_argument("--n-per-cell", type=int, default=2, help="stacks per (SNR, density) cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--shape", type=_shape_arg, default=SHAPE, help="stack shape Z,Y,X (counts scale with it)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "widths")
    args = parser.parse_args(argv)

    from dmdet_infer.detector import Detector
    from training.matching import score
    from training.simulate import benchmark_item

    detectors = {name: Detector(model=path) for name, path in args.model}
    rows = {}
    for name, path in args.model:
        params, gmac, cfg_name = network_size(path)
        rows[name] = {"path": path, "config": cfg_name, "params": params, "gflops": gmac, "f1": {}, "rmse": {}}
    n_items = len(SNRS) * 3 * args.n_per_cell
    per_image: dict[str, dict[float, list[dict]]] = {name: {} for name in detectors}
    for index in range(n_items):
        volume, truth, meta = benchmark_item(args.seed, index, args.n_per_cell, SNRS, shape=args.shape)
        for name, det in detectors.items():
            s = score(det.detect(volume).zyx, truth)
            per_image[name].setdefault(meta["snr"], []).append({"density": meta["density"], **s})
        print(f"\r{index + 1}/{n_items} volumes", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    volume = benchmark_item(args.seed, 0, args.n_per_cell, SNRS, shape=args.shape)[0]
    for name, det in detectors.items():
        det.detect(volume)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            det.detect(volume)
            times.append(time.perf_counter() - t)
        rows[name]["seconds_per_volume"] = float(np.median(times))
        for snr, images in per_image[name].items():
            rows[name]["f1"][snr] = float(np.mean([im["f1"] for im in images]))
            rmse = [im["rmse"] for im in images if np.isfinite(im["rmse"])]  # NaN: nothing matched in that image
            rows[name]["rmse"][snr] = float(np.mean(rmse)) if rmse else float("nan")
    best = {snr: max(r["f1"][snr] for r in rows.values()) for snr in SNRS}
    eligible = [n for n, r in rows.items() if all(r["f1"][s] >= best[s] - 0.01 for s in SNRS)]
    choice = min(eligible, key=lambda n: rows[n]["seconds_per_volume"])
    lines = [
        f"Widths: {args.n_per_cell * 3} stacks of {tuple(args.shape)} per SNR level (all densities), --threshold auto; "
        "CPU seconds per volume through ONNX Runtime.",
        "",
        "| model | parameters | GFLOPs / volume | CPU s / volume | F1 SNR 1 | F1 SNR 2 | RMSE SNR 1 | RMSE SNR 2 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(f"| {name}{' (chosen)' if name == choice else ''} | {r['params']:,} | {r['gflops']:.1f} | "
                     f"{r['seconds_per_volume']:.2f} | {r['f1'][1.0]:.3f} | {r['f1'][2.0]:.3f} | "
                     f"{r['rmse'][1.0]:.3f} | {r['rmse'][2.0]:.3f} |")
    lines += ["", f"Fastest within 0.01 F1 of the best at SNR 1 and 2: **{choice}**."]
    text = "\n".join(lines) + "\n"
    print(text)
    report = {"rows": rows, "choice": choice, "per_image": per_image, "n_per_cell": args.n_per_cell,
              "seed": args.seed, "shape": list(args.shape), "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.out.with_suffix(".md"), text.encode())
    _write_atomic(args.out.with_suffix(".json"), json.dumps(report, indent=2, default=str).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
