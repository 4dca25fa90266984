"""F1 per SNR level against the detection threshold, on Table 1's validation stacks.

    python benchmarks/threshold_by_snr.py [--model dmdet_infer/models/default.onnx] [--n-val-per-cell 2]

Shows whether one threshold can serve every SNR: peaks are found once per stack at threshold 0.02 (lsq
refinement) and filtered by score. Prints a markdown table and writes benchmarks/results/threshold_by_snr.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SNRS = (1.0, 2.0, 4.0, 7.0)


def main() -> None:
    from dmdet_infer.detector import Detector
    from training import evaluate as ev
    from training.matching import score

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported model (default: the shipped one)")
    ap.add_argument("--n-val-per-cell", type=int, default=2)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    det = Detector(args.model, device="cpu", threshold=min(GRID), split_pairs=False)  # a sweep: peaks only
    found = []
    for vol, pos, meta in ev.iter_split(args.seed, ev.SPLIT_VALIDATION, args.n_val_per_cell):
        spots = det.detect(vol)
        found.append((float(meta["snr"]), spots.zyx, np.asarray(spots.score), pos))
    table = {}
    for t in GRID:
        table[t] = {snr: float(np.mean([score(c[s > t], p)["f1"] for sn, c, s, p in found if sn == snr]))
                    for snr in SNRS}
    print("| threshold | " + " | ".join(f"SNR {int(s)}" for s in SNRS) + " | mean |")
    print("|---" * (len(SNRS) + 2) + "|")
    for t, row in table.items():
        print(f"| {t:.2f} | " + " | ".join(f"{row[s]:.3f}" for s in SNRS) + f" | {np.mean(list(row.values())):.3f} |")
    out = ROOT / "benchmarks" / "results" / "threshold_by_snr.json"
    out.write_text(json.dumps({"model": args.model or "default", "n_val_per_cell": args.n_val_per_cell,
                               "seed": args.seed, "f1": {str(t): {str(s): v for s, v in r.items()}
                                                          for t, r in table.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
