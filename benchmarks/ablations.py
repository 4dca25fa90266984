"""Loss ablations and the DetNet3D baseline, trained the way stage 1 of the default model was trained.

    python benchmarks/ablations.py [--runs runs/ablations] [--steps 750] [--only mse,noweight,detnet3d]
        [--out benchmarks/results/ablations]

Each variant is a width-8 copy of ``training/configs/default_w8.json`` (same simulated data, split, seed, crops,
batch, optimiser) that changes one thing:

- ``mse``: mean squared error instead of adaptive wing (``ablation_mse.json``);
- ``noweight``: adaptive wing without the weight map (``ablation_awing_noweight.json``);
- ``detnet3d``: the paper's DetNet3D baseline, binary targets and a binary loss (``detnet3d_binary.json``).

Each is trained with ``python -m training train --config CONFIG --out RUNS/NAME`` (resumed when the run folder
has a checkpoint, so an interrupted study continues) and compared with the reference run's own log (AWing with the
weight map, ``benchmarks/results/train_w8/log.json``) at the same steps: validation F1 and RMSE at the best
threshold, with the exported operator (running normalisation statistics), on the same 100 validation stacks.
There is no learning-rate schedule, so step k of the longer reference run is what a k-step run computes.
Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.table1 import _write_atomic, machine_info  # noqa: E402

VARIANTS = {
    "mse": ("MSE instead of AWing", "training/configs/ablation_mse.json"),
    "noweight": ("AWing without the weight map", "training/configs/ablation_awing_noweight.json"),
    "detnet3d": ("DetNet3D (binary targets, binary loss)", "training/configs/detnet3d_binary.json"),
}
REFERENCE = ("DM-DetNet3D (AWing + weight map), reference", "benchmarks/results/train_w8/log.json")


def val_rows(log_path: Path) -> dict[int, dict]:
    """The validation entries of a training log, by step."""
    log = json.loads(Path(log_path).read_text())
    return {int(h["step"]): h for h in log["history"] if "val_f1" in h}


def row(name: str, label: str, history: dict[int, dict], **extra: str) -> dict:
    """One table row: validation F1, RMSE and elapsed minutes by step, from :func:`val_rows`."""
    return {"name": name, "label": label, **extra, "f1": {s: h["val_f1"] for s, h in history.items()},
            "rmse": {s: h["val_rmse"] for s, h in history.items()},
            "minutes": {s: h["elapsed_min"] for s, h in history.items()}}


def train(name: str, config: str, runs: Path, steps: int) -> Path:
    """Train (or resume) one variant; returns its log.json."""
    out = runs / name
    cmd = [sys.executable, "-m", "training", "train", "--config", str(ROOT / config), "--out", str(out),
           "--max-steps", str(steps), "--no-final-tuning"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out / "log.json"


def table(rows: list[dict], steps: list[int]) -> str:
    head = "| variant | " + " | ".join(f"val F1 @ {s}" for s in steps) + f" | val RMSE @ {steps[-1]} | minutes |"
    lines = [head, "|" + " --- |" * (len(steps) + 3)]
    for r in rows:
        f1 = [f"{r['f1'][s]:.3f}" if s in r["f1"] else "–" for s in steps]
        rmse = r["rmse"].get(steps[-1])
        minutes = r["minutes"].get(steps[-1])
        lines.append(f"| {r['label']} | " + " | ".join(f1) + f" | {'–' if rmse is None else f'{rmse:.3f}'} | "
                     f"{'–' if minutes is None else f'{minutes:.1f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs/ablations", help="run folders (default runs/ablations)")
    p.add_argument("--steps", type=int, default=750, help="training steps per variant (default 750)")
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ablations", help="output prefix")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ref = val_rows(ROOT / REFERENCE[1])
    rows = [row("reference", REFERENCE[0], ref, log=REFERENCE[1])]
    for name in names:
        label, config = VARIANTS[name]
        got = val_rows(train(name, config, args.runs, args.steps))
        rows.append(row(name, label, got, config=config, run=str(args.runs / name)))
    steps = sorted({s for r in rows[1:] for s in r["f1"]}) or sorted(ref)
    steps = [s for s in steps if s <= args.steps]
    machine = machine_info()
    text = (f"Validation F1 (best threshold) and RMSE, width 8, same data and seed; started {started}, "
            f"{machine['cpus_usable']} CPUs, {machine['platform']}.\n\n" + table(rows, steps))
    print(text)
    report = {"started": started, "steps": steps, "rows": rows, "machine": machine}
    _write_atomic(args.out.with_suffix(".md"), text.encode())
    _write_atomic(args.out.with_suffix(".json"), json.dumps(report, indent=2, default=str).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
