"""F1 of an fp16 model against its fp32 twin, through the default ``Detector`` (issue 18: within 0.002).

    python benchmarks/fp16_f1.py [--fp32 dmdet_infer/models/default.onnx]
        [--fp16 benchmarks/models/dmdet-w8-general2-fp16.onnx] [--n 4] [--out benchmarks/results/fp16_f1]

Challenge-scenario stacks of 10x256x256 (``training.simulate``, background 10, 100 particles, seed 4242) at SNR 1,
2, 4 and 7, ``n`` per SNR; both models with every default (automatic threshold, mass cut, split, spot size),
on ONNX Runtime's CPU provider (which runs fp16 convolutions) or CUDA with ``--device cuda``. Pooled F1 per SNR
(5-voxel gate) and the largest difference. Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.table1 import _write_atomic, machine_info  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from dmdet_infer.detector import Detector
    from training.matching import score
    from training.simulate import SimParams, simulate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp32", type=Path, default=ROOT / "dmdet_infer/models/default.onnx")
    p.add_argument("--fp16", type=Path, default=ROOT / "benchmarks/models/dmdet-w8-general2-fp16.onnx")
    p.add_argument("--n", type=int, default=4, help="stacks per SNR")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fp16_f1")
    args = p.parse_args(argv)
    dets = {"fp32": Detector(args.fp32, device=args.device), "fp16": Detector(args.fp16, device=args.device)}
    rows = {}
    for snr in (1.0, 2.0, 4.0, 7.0):
        totals = {k: np.zeros(3) for k in dets}
        for i in range(args.n):
            rng = np.random.default_rng([4242, int(snr), i])
            vol, truth = simulate(SimParams(shape=(10, 256, 256), n_particles=100, snr=snr), rng)
            for name, det in dets.items():
                sp = det.detect(vol)
                s = score(np.c_[sp.z, sp.y, sp.x], truth, 5.0)
                totals[name] += (s["tp"], s["fp"], s["fn"])
        rows[snr] = {k: float(2 * t[0] / max(2 * t[0] + t[1] + t[2], 1)) for k, t in totals.items()}
        print(f"SNR {snr:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[snr].items()), flush=True)
    worst = max(abs(r["fp32"] - r["fp16"]) for r in rows.values())
    md = ["| SNR | fp32 F1 | fp16 F1 | difference |", "| --- | --- | --- | --- |"]
    md += [f"| {s:g} | {r['fp32']:.4f} | {r['fp16']:.4f} | {r['fp16'] - r['fp32']:+.4f} |" for s, r in rows.items()]
    md.append(f"\nLargest |difference|: {worst:.4f} ({args.n} stacks of 10x256x256 with 100 particles per SNR, "
              f"device {args.device}).")
    text = "\n".join(md) + "\n"
    print(text)
    _write_atomic(args.out.with_suffix(".md"), text.encode())
    _write_atomic(args.out.with_suffix(".json"), json.dumps(
        {"rows": rows, "largest_difference": worst, "args": {k: str(v) for k, v in vars(args).items()},
         "machine": machine_info()}, indent=2).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
