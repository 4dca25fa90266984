"""Which of the independent challenge simulator's nuisances costs dmdet at low SNR? Validation stacks only.

    nice python benchmarks/ptc_nuisances.py [--model PATH] [--snrs 1,2] [--n 3] [--shape 10,512,512]
        [--out benchmarks/results/ptc_nuisances]

The independent simulator of the challenge's virus scenario (``benchmarks._generators.ptc_indep``, the generator of
the held-back challenge-like check) adds three things to the challenge's own stacks: illumination uneven by +-30 %
across the field, a camera's read noise (1-2 ADU sd on a background of 10 photons), and spot widths that differ from
spot to spot. Each variant here switches some of them off on the same draws (the same particles, the same random
streams), and reports the automatic threshold's F1 and the best single cut chosen with the truth (the pair split
off), as ``threshold_oracle.py`` does. Stacks are drawn from their own seed stream (``nuisances``), not from any
condition's validation or test part. Writes OUT.md and OUT.json atomically; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _generators as gen  # noqa: E402
from benchmarks.table1 import machine_info, write_diagnostic  # noqa: E402
from benchmarks.threshold_oracle import pooled, record  # noqa: E402
from dmdet_infer import Detector  # noqa: E402

FIXED_SIGMA = {"sigma_xy": (1.5, 1.5), "sigma_z": (1.0, 1.0)}
VARIANTS: dict[str, dict] = {
    "as simulated": {},
    "even illumination": {"illumination": 0.0},
    "no read noise": {"read_sd": (0.0, 0.0)},
    "one spot width": FIXED_SIGMA,
    "none of the three": {"illumination": 0.0, "read_sd": (0.0, 0.0), **FIXED_SIGMA},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="ONNX model (default: the one shipped in the package)")
    p.add_argument("--snrs", default="1,2", help="comma-separated SNRs (default 1,2)")
    p.add_argument("--n", type=int, default=3, help="stacks per SNR and variant (default 3)")
    p.add_argument("--shape", default="10,512,512", help="ZYX stack shape (default 10,512,512)")
    p.add_argument("--particles", type=int, default=100, help="particles per stack (default 100)")
    p.add_argument("--seed", type=int, default=99, help="seed of the stacks (default 99)")
    p.add_argument("--out", default="benchmarks/results/ptc_nuisances", help="output prefix (.md, .json)")
    args = p.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 3:
        p.error(f"--shape needs three sizes (Z,Y,X), got {args.shape!r}")
    snrs = [float(s) for s in args.snrs.split(",") if s]
    machine = machine_info()
    det = Detector(args.model, split_pairs=False)
    calibration = det.info.noise_peaks
    rows: dict[str, dict] = {}
    t0 = time.perf_counter()
    for snr in snrs:
        for name, kw in VARIANTS.items():
            records = []
            for i in range(args.n):  # the same random stream for every variant: the same particles
                rng = gen.stack_rng(args.seed, f"nuisances_snr{snr:g}", "validation", i)
                vol, zyx = gen.ptc_indep(rng, snr, shape=shape, n=args.particles, **kw)
                records.append({**record(det, vol), "truth": zyx})
            rows[f"SNR {snr:g}, {name}"] = pooled(records, calibration)
            print(f"SNR {snr:g}, {name}: oracle {rows[f'SNR {snr:g}, {name}']['oracle']['f1']:.3f}",
                  file=sys.stderr)
    lines = ["| stacks | auto F1 (TP / FP / FN) | oracle (score, mass) F1 | oracle (score) F1 |",
             "| --- | --- | --- | --- |"]
    for name, r in rows.items():
        a = r["auto"]
        lines.append(f"| {name} | {a['f1']:.3f} ({a['tp']} / {a['fp']} / {a['fn']}) | {r['oracle']['f1']:.3f} | "
                     f"{r['oracle_score']['f1']:.3f} |")
    total = time.perf_counter() - t0
    write_diagnostic(Path(args.out), "The independent challenge simulator's nuisances, switched off one at a time",
                     "ptc_nuisances.py", machine, lines, args, rows, total,
                     detail=f"{args.n} stacks of {'x'.join(map(str, shape))} with {args.particles} particles per "
                            "row, pair split off")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
