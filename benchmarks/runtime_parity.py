"""Does OpenVINO find the same spots as ONNX Runtime? One model, every default, on stacks from every source.

    python benchmarks/runtime_parity.py [--model PATH] [--n 3] [--home 2] [--precision fp32|bf16]
                                        [--out benchmarks/results/runtime_parity]

``Detector.detect`` with ``runtime="onnxruntime"`` and with ``runtime="openvino"`` in ``--precision`` (fp32 by
default; bf16 where the CPU has it: the CPU default there) (automatic threshold, pair
split, spot size: what a user gets) on the test stacks of every condition of ``benchmarks/generalisation.py``
(``--n`` each, seed 2024 as the table draws them) and of Table 1's test split (``--home`` stacks per SNR and density
cell, seed 12345). Nothing is tuned here: the two runtimes are compared with each other, and each with the truth.
Per condition: spots of each runtime, stacks whose spot tables are the same (as many spots, every coordinate
within 1e-3 voxel, compared in the order of their positions: spots whose scores tie within the runtimes' rounding may
come out in either order), spots matched one to one within 0.5 voxel and the largest coordinate and score differences
of those pairs, and the pooled F1 of each runtime (gate 5).
Writes OUT.md and OUT.json atomically; about 6 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _generators as gen  # noqa: E402
from benchmarks.table1 import machine_info, write_tables  # noqa: E402
from dmdet_infer import Detector  # noqa: E402
from dmdet_infer.model import openvino_version  # noqa: E402
from training import evaluate as ev  # noqa: E402
from training.matching import match, score  # noqa: E402

RUNTIMES = ("onnxruntime", "openvino")
SAME_ATOL = 1e-3  # voxels
MATCH_GATE = 0.5  # voxels: a spot of one table "matched" in the other (one to one)


def stacks(n: int, home: int, quick: bool = False) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(condition, volume, truth zyx) of every test stack compared."""
    for name in gen.CONDITIONS:
        for i in range(n):
            vol, truth = gen.make_stack(name, "test", i, quick=quick)
            yield name, vol, truth
    shape = (10, 64, 64) if quick else (10, 512, 512)
    for vol, pos, meta in ev.iter_split(12345, ev.SPLIT_TEST, home, shape=shape):
        yield f"home SNR {meta['snr']:g}", vol, pos


def _by_position(spots) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates and scores in the order of the coordinates (rounded to 0.01 voxel): spots whose scores differ by
    less than the runtimes' rounding may come out in either order, which is no difference in the spots."""
    zyx = np.asarray(spots.zyx, np.float64).reshape(-1, 3)
    r = np.round(zyx, 2)
    order = np.lexsort((r[:, 2], r[:, 1], r[:, 0]))
    return zyx[order], np.asarray(spots.score, np.float64)[order]


def compare(a, b) -> dict:
    """How two spot tables of one stack differ, as sets of spots (ordered by position)."""
    (za, sa), (zb, sb) = _by_position(a), _by_position(b)
    same = len(za) == len(zb) and (len(za) == 0 or bool(np.allclose(za, zb, atol=SAME_ATOL)))
    ia, ib, _ = match(za, zb, gate=MATCH_GATE)
    out = {"spots": [len(za), len(zb)], "same": same,
           "same_order": same and bool(len(za) == 0 or np.allclose(a.zyx, b.zyx, atol=SAME_ATOL)),
           "matched": len(ia)}
    if len(ia):  # over the matched pairs
        out["max_coord_diff"] = float(np.abs(za[ia] - zb[ib]).max())
        out["max_score_diff"] = float(np.abs(sa[ia] - sb[ib]).max())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="ONNX model (default: the one shipped in the package)")
    p.add_argument("--n", type=int, default=3, help="test stacks per generalisation condition (default 3)")
    p.add_argument("--home", type=int, default=2, help="Table 1 test stacks per SNR and density cell (default 2)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="OpenVINO's arithmetic")
    p.add_argument("--quick", action="store_true", help="tiny stacks (seconds; for tests)")
    p.add_argument("--out", default="benchmarks/results/runtime_parity")
    args = p.parse_args(argv)
    machine = machine_info()
    detectors = {r: Detector(args.model, device="cpu", runtime=r, precision=args.precision if r == "openvino"
                             else "auto") for r in RUNTIMES}
    machine["openvino"] = openvino_version()
    t0 = time.perf_counter()
    rows: dict[str, dict] = {}
    for condition, vol, truth in stacks(args.n, args.home, args.quick):
        found = {r: d.detect(vol) for r, d in detectors.items()}
        c = compare(found[RUNTIMES[0]], found[RUNTIMES[1]])
        row = rows.setdefault(condition, {"stacks": 0, "same": 0, "same_order": 0, "spots": [0, 0], "matched": 0,
                                          "max_coord_diff": 0.0, "max_score_diff": 0.0,
                                          "counts": {r: [0, 0, 0] for r in RUNTIMES}})
        row["stacks"] += 1
        row["same"] += int(c["same"])
        row["same_order"] += int(c["same_order"])
        row["spots"] = [row["spots"][k] + c["spots"][k] for k in range(2)]
        row["matched"] += c["matched"]
        for key in ("max_coord_diff", "max_score_diff"):
            row[key] = max(row[key], c.get(key, 0.0))
        for r in RUNTIMES:
            s = score(found[r].zyx, truth)
            row["counts"][r] = [row["counts"][r][0] + s["tp"], row["counts"][r][1] + s["fp"],
                                row["counts"][r][2] + s["fn"]]
        print(condition, c, file=sys.stderr)
    total = time.perf_counter() - t0
    lines = ["| condition | stacks | same spots | in the same order | spots (ONNX Runtime / OpenVINO) "
             f"| matched within {MATCH_GATE} voxel | largest coordinate diff of those (voxel) | largest score diff "
             "| F1 ONNX Runtime | F1 OpenVINO |",
             "| --- |" + " --- |" * 9]
    for condition, r in rows.items():
        f1 = {k: 2 * v[0] / max(2 * v[0] + v[1] + v[2], 1) for k, v in r["counts"].items()}
        r["f1"] = f1
        lines.append(f"| {condition} | {r['stacks']} | {r['same']} / {r['stacks']} | {r['same_order']} | "
                     f"{r['spots'][0]} / {r['spots'][1]} | {r['matched']} | {r['max_coord_diff']:.1e} | "
                     f"{r['max_score_diff']:.1e} | "
                     f"{f1['onnxruntime']:.3f} | {f1['openvino']:.3f} |")
    text = (f"The same model through ONNX Runtime (fp32) and OpenVINO ({args.precision}), every default, test "
            f"stacks (`python benchmarks/runtime_parity.py --precision {args.precision}`; {platform.node()}, "
            f"{machine.get('date_utc')}, git "
            f"{str(machine.get('git_commit'))[:10]}, openvino {machine['openvino']}; {total:.0f} s).\n\n"
            + "\n".join(lines) + "\n")
    write_tables(Path(args.out), text, {"machine": machine, "args": vars(args), "rows": rows, "seconds": total})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
