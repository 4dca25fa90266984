"""Is a condition's loss the automatic threshold's or the network's? The rule against an oracle, on validation stacks.

    nice python benchmarks/threshold_oracle.py [--model PATH] [--seed 7] [--n 4] [--big 3] [--home 2]
        [--out benchmarks/results/threshold_oracle]

For every stack, the default detector's candidates (all peaks above the automatic threshold's grid floor, with their
scores and photometric masses, after min-distance suppression) and the cut that ``--threshold auto`` chose on them
are recorded in one pass (the pair split is off: it acts after the cut and is measured elsewhere). Per condition,
pooled over its stacks (TP, FP, FN summed):

- ``auto``: the shipped rule (:func:`dmdet_infer.threshold.choose_cut`), one cut per stack, chosen without the
  truth;
- ``oracle``: the best single (score, mass) cut for all the condition's stacks together, chosen with the truth;
- ``oracle score``: the same with the score alone.

``auto`` near ``oracle`` means that no other cut of this family would do much better: what is left is the
candidates' separation, i.e. the network's. ``auto`` above ``oracle`` happens: the rule adapts its cut per stack.

Stacks: validation parts only (nothing here is a test stack): the generalisation conditions of
``benchmarks/_generators.py`` (``--n`` per condition, drawn with ``--seed``), challenge-like stacks of the
independent simulator at 10x512x512 with 100 particles (``--big`` per SNR 1, 2, 4; the size of the challenge and
of the held-back independent check) and Table 1's validation split (``--home`` per SNR x density cell, seed
12345). Writes OUT.md and OUT.json atomically; progress on stderr. About 6 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _generators as gen  # noqa: E402
from benchmarks.table1 import machine_info, write_diagnostic  # noqa: E402
from dmdet_infer import Detector  # noqa: E402
from dmdet_infer import threshold as autothreshold  # noqa: E402
from training import evaluate as ev  # noqa: E402

CONDITIONS = ("ptc_snr1", "ptc_snr2", "ptc_snr4", "ptc_snr7", "simfish_a", "simfish_b", "tissue_moderate",
              "tissue_faint", "yeast8bit")
BIG_SNRS = (1.0, 2.0, 4.0)
GATE = 5.0  # voxels, strictly below (training.matching)


def stacks(seed: int, n: int, big: int, home: int, quick: bool = False, conditions=CONDITIONS):
    """(condition, volume, truth) of every validation stack (``quick``: the conditions' tiny stacks)."""
    for name in conditions:
        for i in range(n):
            vol, zyx = gen.make_stack(name, "validation", i, seed=seed, quick=quick)
            yield name, vol, zyx
    for snr in BIG_SNRS:
        for i in range(big):
            rng = gen.stack_rng(seed, f"ptc_big_snr{snr:g}", "validation", i)
            vol, zyx = gen.ptc_indep(rng, snr, shape=(10, 512, 512), n=100)
            yield f"ptc512_snr{snr:g}", vol, zyx
    for vol, pos, meta in ev.iter_split(12345, ev.SPLIT_VALIDATION, home):
        yield f"home_snr{meta['snr']:g}", vol, pos


def record(det: Detector, volume: np.ndarray) -> dict:
    """The stack's candidates (zyx, score, mass) and the automatic cut chosen on them."""
    seen: dict = {}
    choose = autothreshold.choose_cut

    def capture(scores, photons, n_voxels, calibration, fallback, decoy=None, structured=False):
        seen["cut"] = choose(scores, photons, n_voxels, calibration, fallback, decoy, structured)
        return -np.inf, -np.inf  # keep every candidate; the cut is applied below

    with mock.patch.object(autothreshold, "choose_cut", capture):
        spots = det.detect(volume)
    t, a = seen.get("cut", (np.inf, -np.inf))
    mass = spots.to_dataframe()["mass"].to_numpy(np.float64) if len(spots) else np.zeros(0)
    return {"zyx": spots.zyx, "score": np.asarray(spots.score, np.float64), "mass": mass, "t": t, "a": a}


def kept(r: dict, t: float, a: float) -> np.ndarray:
    """Candidates above score ``t`` whose mass (NaN: not measured, always kept) is above ``a``."""
    m = np.where(np.isnan(r["mass"]), np.inf, r["mass"])
    return (r["score"] > t) & (m > a)


def f1(tp: float, fp: float, fn: float) -> float:
    return 2.0 * tp / max(2.0 * tp + fp + fn, 1.0)


def matched(gate_graph, rows: np.ndarray) -> int:
    """True spots matched one-to-one within the gate by the candidates ``rows`` (the count of an optimal matching
    of :func:`training.matching.match`: the most pairs)."""
    if not rows.size:
        return 0
    return int((maximum_bipartite_matching(gate_graph[rows], perm_type="column") >= 0).sum())


def pooled(records: list[dict], calibration: dict) -> dict:
    """The rule's and the oracle cuts' pooled counts over one condition's stacks (each cut matched on its own)."""
    grid = np.asarray(calibration["thresholds"], np.float64)
    levels = np.r_[-np.inf, np.asarray(calibration["photons"], np.float64)]
    tp = np.zeros((grid.size, levels.size))
    n = np.zeros_like(tp)
    auto = np.zeros(3)
    n_true = 0
    for r in records:
        pairs = cKDTree(r["zyx"].reshape(-1, 3)).sparse_distance_matrix(
            cKDTree(r["truth"].reshape(-1, 3)), GATE, output_type="ndarray")
        pairs = pairs[pairs["v"] < GATE]  # the gate is strict
        graph = csr_matrix((np.ones(len(pairs)), (pairs["i"], pairs["j"])), shape=(r["score"].size,
                                                                                   len(r["truth"])))
        near = np.zeros(r["score"].size, bool)
        near[pairs["i"]] = True  # only candidates within the gate of a true spot can be true positives
        for j, a in enumerate(levels):
            for i, t in enumerate(grid):
                keep = kept(r, t, a)
                n[i, j] += keep.sum()
                tp[i, j] += matched(graph, np.flatnonzero(keep & near))
        k = kept(r, r["t"], r["a"])
        t_auto = matched(graph, np.flatnonzero(k & near))
        auto += [t_auto, int(k.sum()) - t_auto, len(r["truth"]) - t_auto]
        n_true += len(r["truth"])
    f = 2.0 * tp / (n + n_true)
    i, j = np.unravel_index(int(np.argmax(f)), f.shape)
    i0 = int(np.argmax(f[:, 0]))
    return {"stacks": len(records), "particles": n_true,
            "auto": {"f1": f1(*auto), "tp": int(auto[0]), "fp": int(auto[1]), "fn": int(auto[2])},
            "oracle": {"f1": float(f[i, j]), "threshold": float(grid[i]), "mass_cut": float(levels[j])},
            "oracle_score": {"f1": float(f[i0, 0]), "threshold": float(grid[i0])}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="ONNX model (default: the one shipped in the package)")
    p.add_argument("--seed", type=int, default=7, help="seed of the independent generators' stacks (default 7)")
    p.add_argument("--n", type=int, default=4, help="validation stacks per generalisation condition (default 4)")
    p.add_argument("--big", type=int, default=3, help="10x512x512 challenge-like stacks per SNR (default 3)")
    p.add_argument("--home", type=int, default=2, help="Table 1 validation stacks per SNR x density (default 2)")
    p.add_argument("--out", default="benchmarks/results/threshold_oracle", help="output prefix (.md, .json)")
    p.add_argument("--quick", action="store_true", help="the conditions' tiny stacks (seconds; for tests)")
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help="comma-separated generalisation conditions (default: all nine)")
    args = p.parse_args(argv)
    conditions = tuple(c for c in args.conditions.split(",") if c)
    if unknown := sorted(set(conditions) - set(CONDITIONS)):
        p.error(f"unknown condition(s) {', '.join(unknown)}; known: {', '.join(CONDITIONS)}")
    machine = machine_info()
    det = Detector(args.model, split_pairs=False)
    calibration = det.info.noise_peaks
    if not autothreshold.has_cut(calibration):
        p.error("the model has no noise calibration with photometric masses")
    by: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for name, vol, truth in stacks(args.seed, args.n, args.big, args.home, args.quick, conditions):
        by.setdefault(name, []).append({**record(det, vol), "truth": truth})
        print(f"{name} {len(by[name])}: cut {by[name][-1]['t']:.2f} / {by[name][-1]['a']:.1f}", file=sys.stderr)
    rows = {name: pooled(rs, calibration) for name, rs in by.items()}
    lines = ["| condition | stacks | particles | auto F1 (TP / FP / FN) | oracle (score, mass) F1 | its cut | "
             "oracle (score) F1 | auto − oracle |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        a, o, s = r["auto"], r["oracle"], r["oracle_score"]
        lines.append(f"| {name} | {r['stacks']} | {r['particles']} | {a['f1']:.3f} ({a['tp']} / {a['fp']} / "
                     f"{a['fn']}) | {o['f1']:.3f} | {o['threshold']:.2f} / {o['mass_cut']:.1f} | "
                     f"{s['f1']:.3f} | {a['f1'] - o['f1']:+.3f} |")
    total = time.perf_counter() - t0
    write_diagnostic(Path(args.out), "Automatic threshold against the oracle cut, validation stacks only, "
                     "pair split off", "threshold_oracle.py", machine, lines, args, rows, total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
