"""How much steadier is the network's map when averaged over flips of the input? (test-time augmentation)

    nice python benchmarks/flip_average.py [--model PATH] [--seed 7] [--n 4] [--big 2]
        [--conditions ptc_snr2,simfish_b] [--out benchmarks/results/flip_average]

For each validation stack (nothing here is a test stack) the density map of the whole volume
(:meth:`dmdet_infer.Detector.density`) is computed on the stack and on its flips, each map flipped back, and the
maps averaged: ``plain`` (one pass), ``xy2`` (the stack and its YX flip), ``tta4`` (the four YX flips) and
``tta8`` (also the Z flips). Peaks (:func:`dmdet_infer.peaks.find_peaks`, above 0.3) are scored against the truth at
every threshold from 0.30 to 0.95, pooled per condition, and the best F1 is reported (an oracle threshold: the
automatic threshold's noise calibration describes one pass, not a mean of several, so it is not applied). A gain
over ``plain`` is what the network loses to its own sensitivity to the noise's particular pattern; it costs one
network pass per map, so it is a measure for training (e.g. distilling a student from the averaged teacher,
``teacher_flips``), not a default. Conditions: benchmarks/_generators.py (``--n`` validation stacks each, seed
``--seed``) and ``ptc512_snr2``, challenge-like 10x512x512 stacks with 100 particles (``--big``). Writes OUT.md
and OUT.json atomically; about 4 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _generators as gen  # noqa: E402
from benchmarks.table1 import machine_info, write_diagnostic  # noqa: E402
from dmdet_infer import Detector  # noqa: E402
from dmdet_infer.peaks import find_peaks  # noqa: E402
from training.matching import score  # noqa: E402

VARIANTS: dict[str, tuple[tuple[int, ...], ...]] = {
    "plain": ((),),
    "xy2": ((), (1, 2)),
    "tta4": ((), (1,), (2,), (1, 2)),
    "tta8": ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)),
}
GRID = np.round(np.arange(0.30, 0.955, 0.01), 2)


def averaged(det: Detector, volume: np.ndarray, flips: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """The mean of the density maps of ``volume`` flipped along each axis set of ``flips``, each flipped back."""
    total = np.zeros(volume.shape, np.float64)
    for axes in flips:
        v = np.ascontiguousarray(np.flip(volume, axes)) if axes else volume
        d = det.density(v)
        total += np.flip(d, axes) if axes else d
    return (total / len(flips)).astype(np.float32)


def stacks(condition: str, seed: int, n: int, big: int, quick: bool = False):
    """(volume, truth) of a condition's validation stacks."""
    if condition == "ptc512_snr2":
        for i in range(big):
            rng = gen.stack_rng(seed, "ptc_big_snr2", "validation", i)
            yield gen.ptc_indep(rng, 2.0, shape=(10, 512, 512), n=100)
        return
    for i in range(n):
        yield gen.make_stack(condition, "validation", i, seed=seed, quick=quick)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="ONNX model (default: the one shipped in the package)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--n", type=int, default=4, help="validation stacks per condition (default 4)")
    p.add_argument("--big", type=int, default=2, help="ptc512_snr2 stacks (default 2)")
    p.add_argument("--conditions", default="ptc_snr2,simfish_b,ptc512_snr2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--quick", action="store_true", help="the conditions' tiny stacks (seconds; for tests)")
    p.add_argument("--out", default="benchmarks/results/flip_average")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := [v for v in variants if v not in VARIANTS]:
        p.error(f"--variants: unknown {unknown}; choose from {','.join(VARIANTS)}")
    machine = machine_info()
    det = Detector(args.model)
    t0 = time.perf_counter()
    rows: dict[str, dict] = {}
    for condition in [c for c in args.conditions.split(",") if c]:
        counts = {v: np.zeros((GRID.size, 3)) for v in variants}
        for vol, truth in stacks(condition, args.seed, args.n, args.big, args.quick):
            for v in variants:
                peaks = find_peaks(averaged(det, vol, VARIANTS[v]), float(GRID[0]))
                for i, t in enumerate(GRID):
                    s = score(peaks.coords[peaks.scores > t], truth)
                    counts[v][i] += (s["tp"], s["fp"], s["fn"])
        rows[condition] = {}
        for v, c in counts.items():
            f = 2.0 * c[:, 0] / np.maximum(2.0 * c[:, 0] + c[:, 1] + c[:, 2], 1.0)
            i = int(np.argmax(f))
            rows[condition][v] = {"f1": float(f[i]), "threshold": float(GRID[i]), "tp": int(c[i, 0]),
                                  "fp": int(c[i, 1]), "fn": int(c[i, 2])}
        print(condition, {v: round(r["f1"], 3) for v, r in rows[condition].items()}, file=sys.stderr)
    total = time.perf_counter() - t0
    lines = ["| condition | " + " | ".join(f"{v} F1 (TP / FP / FN) at t" for v in variants) + " |",
             "| --- |" + " --- |" * len(variants)]
    for condition, r in rows.items():
        lines.append(f"| {condition} | " + " | ".join(
            f"{r[v]['f1']:.3f} ({r[v]['tp']} / {r[v]['fp']} / {r[v]['fn']}) at {r[v]['threshold']:.2f}"
            for v in variants) + " |")
    write_diagnostic(Path(args.out), "Density maps averaged over flips, best single threshold per condition (oracle), "
                     "validation stacks", "flip_average.py", machine, lines, args, rows, total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
