"""Acceptance check of the shipped model through the command line: ``dmdet-infer`` on freshly simulated SNR-4 stacks.

    python benchmarks/cli_snr4.py [--seeds 3] [--model PATH]

Simulates 10x512x512 PTC virus-scenario stacks (SNR 4, background 10, sigma 1.5/1.0, one per density level, seeds
never used in training or validation), writes them as TIFF, runs ``dmdet-infer stack.tif -o spots.csv`` in a
subprocess, and scores the CSV against the truth (Hungarian matching, gate 5 voxels). Prints a table; writes
benchmarks/results/cli_snr4.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.matching import score  # noqa: E402
from training.simulate import PTC_DENSITIES, SimParams, simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="stacks per density level")
    parser.add_argument("--model", type=Path, default=None, help="default: the model shipped in the package")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli_snr4.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for density, n in PTC_DENSITIES.items():
            for seed in range(args.seeds):
                rng = np.random.default_rng(np.random.SeedSequence([20261125, n, seed + 1]))
                volume, truth = simulate(SimParams(n_particles=n, snr=4.0), rng)
                stack = Path(tmp) / f"snr4_{density}_{seed}.tif"
                tifffile.imwrite(stack, np.rint(volume).astype(np.uint16), imagej=True, metadata={"axes": "ZYX"})
                out = stack.with_suffix(".csv")
                cmd = [sys.executable, "-m", "dmdet_infer.cli", str(stack), "-o", str(out), "-q"]
                if args.model:
                    cmd += ["--model", str(args.model)]
                t = time.perf_counter()
                subprocess.run(cmd, check=True)
                seconds = time.perf_counter() - t
                found = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)[:, :3]
                s = score(found, truth)
                rows.append({"density": density, "seed": seed, "n_true": len(truth), "n_found": len(found),
                             "f1": s["f1"], "rmse": s["rmse"], "cli_seconds": seconds})
    f1 = float(np.mean([r["f1"] for r in rows]))
    rmse = float(np.mean([r["rmse"] for r in rows]))
    print("| density | true | found | F1 | RMSE (voxel) | CLI s |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['density']} | {r['n_true']} | {r['n_found']} | {r['f1']:.3f} | {r['rmse']:.3f} "
              f"| {r['cli_seconds']:.1f} |")
    print(f"| **mean** | | | **{f1:.3f}** | **{rmse:.3f}** | |")
    args.out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                    "model": str(args.model or "shipped default"), "mean_f1": f1,
                                    "mean_rmse": rmse, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
