"""Out-of-distribution study and fine-tuning on "the user's data", through the user's own commands.

    python benchmarks/ood.py [--minutes 4] [--n-per-snr 8] [--shape 10,512,512] [--dir /tmp/ood]
    python benchmarks/ood.py --small      # 10x64x64 stacks, 20 s of fine-tuning: checks that everything runs

For each condition below, ``2 * n-per-snr`` annotated stacks (SNR 2 and 4, interleaved, PTC "mid" density) are
written to a folder as ``stack_NN.tif`` + ``stack_NN.csv`` (z,y,x), exactly what a user would annotate. The
annotation reader splits them by name order 50/25/25: the first half fine-tunes, the next quarter validates (early
stopping and the threshold), the last quarter is held out and scored here. The spots differ from the training data:

- ``large spots``: sigma_xy 2.5, sigma_z 2.0 voxels (training: sigma_xy 1-2, sigma_z 0.7-1.5);
- ``uneven background``: a linear gradient of +-50 % across the field plus 30 autofluorescent blobs (sigma 8/2
  voxels, 0.5-1.5x the background);
- ``offset + read noise``: camera gain 2, offset 100 and Gaussian read noise of sd 6 (output units);
- ``anisotropy 3``: sigma_xy / sigma_z = 3 in voxels (1.5 / 0.5: coarse z steps), against 1.5 in the PTC setting.

The ``training-like`` condition (PTC setting, flat background) gives the reference F1. Scores (gate 5 voxels,
mean per held-out stack; the network's peaks at fixed thresholds, found once and filtered by score, so without the
auto cut and the pair split of ``dmdet-infer``'s default):

- ``before``: the shipped model as it ships (its threshold);
- ``before, threshold re-tuned``: the shipped model with the threshold that is best on the validation stacks (what a
  user gets without training);
- ``after``: ``python -m training train --config training/configs/finetune.json --data FOLDER --out RUN
  --max-minutes M`` (the config starts from the shipped model's checkpoint), ``python -m export RUN/best.pt -o
  RUN/model.onnx``, then ``dmdet_infer.Detector`` with the exported model and its tuned threshold.

``recovered`` = (after - before) / (training-like - before). Writes benchmarks/results/ood[_small].{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHECKPOINT = ROOT / "training" / "checkpoints" / "dmdet-w8-crowded.pt"
CONFIG = ROOT / "training" / "configs" / "finetune.json"
SNRS = (2.0, 4.0)
GRID = tuple(round(0.02 * i, 2) for i in range(1, 50))  # 0.02 .. 0.98
CONDITIONS: dict[str, dict] = {
    "training-like": {},
    "large spots": {"sigma_xy": 2.5, "sigma_z": 2.0},
    "uneven background": {"bg_gradient": 0.5, "bg_gradient_angle": 0.6, "n_blobs": 30, "blob_amplitude": 1.0},
    "offset + read noise": {"gain": 2.0, "offset": 100.0, "read_noise": 6.0},
    "anisotropy 3": {"sigma_xy": 1.5, "sigma_z": 0.5},
}


def write_stacks(folder: Path, overrides: dict, n_per_snr: int, shape: tuple[int, int, int], seed: int) -> None:
    """``stack_NN.tif`` + ``stack_NN.csv`` pairs, SNR 2 and 4 alternating in name order."""
    import tifffile

    from training.simulate import benchmark_item

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_per_snr):
        for si in range(len(SNRS)):
            index = si * n_per_snr + k
            vol, pos, _ = benchmark_item(seed, index, n_per_snr, SNRS, {"mid": 500}, shape=shape, **overrides)
            stem = folder / f"stack_{k * len(SNRS) + si:02d}"
            tifffile.imwrite(stem.with_suffix(".tif"), vol.astype(np.float32), imagej=True, metadata={"axes": "ZYX"})
            np.savetxt(stem.with_suffix(".csv"), pos, delimiter=",", header="z,y,x", comments="", fmt="%.4f")


def split(folder: Path) -> dict[str, list[Path]]:
    """The annotation reader's split of ``folder`` (name order, 50/25/25)."""
    from training.data import split_indices

    tifs = sorted(folder.glob("*.tif"))
    return {name: [tifs[i] for i in idx] for name, idx in split_indices(len(tifs)).items()}


def detections(model: str | None, tifs: list[Path]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(zyx, score, truth) per stack, peaks found once at the lowest threshold of :data:`GRID`."""
    import tifffile

    from dmdet_infer import Detector
    from training.annotations import read_points_csv

    det = Detector(model, device="cpu", threshold=min(GRID), split_pairs=False)  # a sweep: peaks only
    out = []
    for tif in tifs:
        spots = det.detect(tifffile.imread(tif))
        out.append((spots.zyx, np.asarray(spots.score), read_points_csv(tif.with_suffix(".csv"))[0]))
    return out


def scores(found, threshold: float) -> dict:
    """Mean per-stack F1 and RMSE at ``threshold``."""
    from training.matching import score, summarise

    s = [score(zyx[sc > threshold], truth) for zyx, sc, truth in found]
    mean = summarise(s)
    return {"f1": mean["f1_mean"], "rmse": mean["rmse_mean"], "f1_per_stack": [float(x["f1"]) for x in s]}


def best_threshold(found) -> float:
    """The threshold of :data:`GRID` with the best mean F1 (ties: the lowest)."""
    f1 = [scores(found, t)["f1"] for t in GRID]
    return float(GRID[int(np.argmax(f1))])


def fine_tune(folder: Path, run: Path, minutes: float) -> tuple[str, float, float]:
    """The user's commands: train from the shipped checkpoint, export. Returns (model path, threshold, seconds)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training", "train", "--config", str(CONFIG), "--data", str(folder),
                    "--out", str(run), "--init-from", str(CHECKPOINT), "--max-minutes", str(minutes)], cwd=ROOT,
                   check=True)
    seconds = time.perf_counter() - t0
    model = run / "model.onnx"
    subprocess.run([sys.executable, "-m", "export", str(run / "best.pt"), "-o", str(model)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    from dmdet_infer.model import Model

    return str(model), float(Model(str(model), device="cpu").info.threshold), seconds


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["condition"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (key, label) in enumerate((("before", "shipped model"), ("retuned", "shipped, threshold re-tuned"),
                                      ("after", "fine-tuned"))):
        vals = [r.get(key, {}).get("f1", np.nan) for r in rows]
        ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=label)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("F1 (held-out stacks)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Out of distribution: before and after fine-tuning on a handful of stacks")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def markdown(rows: list[dict], args) -> str:
    ref = rows[0]["before"]["f1"]
    lines = [
        f"Held-out stacks per condition: {rows[0]['n_test']} ({args.shape[0]}x{args.shape[1]}x{args.shape[2]}, "
        f"SNR 2 and 4, ~500 spots per 512x512x10); fine-tuning on {rows[0]['n_train']} stacks, validation on "
        f"{rows[0]['n_val']}, at most {args.minutes} min each. F1 mean over stacks (RMSE in voxels).",
        "",
        "| condition | before (shipped) | drop | before, threshold re-tuned | after fine-tuning | recovered | "
        "fine-tune s | thresholds (shipped / re-tuned / after) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        b, t = r["before"], r["retuned"]
        cells = [r["condition"], f"{b['f1']:.3f} ({b['rmse']:.2f})", f"{ref - b['f1']:.3f}",
                 f"{t['f1']:.3f} ({t['rmse']:.2f})"]
        if "after" in r:
            a = r["after"]
            cells += [f"{a['f1']:.3f} ({a['rmse']:.2f})", f"{r['recovered']:.2f}" if r["recovered"] is not None
                      else "n/a", f"{r['fine_tune_s']:.0f}",
                      f"{r['threshold_before']:.2f} / {r['threshold_retuned']:.2f} / {r['threshold_after']:.2f}"]
        else:
            cells += ["(reference)", "", "", f"{r['threshold_before']:.2f} / {r['threshold_retuned']:.2f} / -"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny stacks and 20 s of fine-tuning (a smoke run)")
    ap.add_argument("--minutes", type=float, default=None, help="fine-tuning budget per condition (default 4)")
    ap.add_argument("--n-per-snr", type=int, default=None, help="stacks per SNR level per condition (default 8)")
    ap.add_argument("--shape", default=None, help="Z,Y,X of the stacks (default 10,512,512)")
    ap.add_argument("--conditions", default=None, help="comma-separated subset of the condition names")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--dir", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output prefix (default benchmarks/results/ood, or ood_small with --small)")
    args = ap.parse_args(argv)
    args.minutes = args.minutes if args.minutes is not None else (0.34 if args.small else 4.0)
    args.n_per_snr = args.n_per_snr or (4 if args.small else 8)
    args.shape = tuple(int(v) for v in (args.shape or ("10,64,64" if args.small else "10,512,512")).split(","))
    names = list(CONDITIONS) if args.conditions is None else [c.strip() for c in args.conditions.split(",")]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        ap.error(f"unknown condition(s) {unknown}; choose from {list(CONDITIONS)}")
    args.names = ["training-like"] + [n for n in names if n != "training-like"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from dmdet_infer.model import Model

    shipped = float(Model(None, device="cpu").info.threshold)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for name in args.names:
            folder = Path(tmp) / name.replace(" ", "_").replace("+", "and")
            write_stacks(folder, CONDITIONS[name], args.n_per_snr, args.shape, args.seed)
            parts = split(folder)
            val, test = detections(None, parts["val"]), detections(None, parts["test"])
            retuned = best_threshold(val)
            row = {"condition": name, "overrides": CONDITIONS[name], "n_train": len(parts["train"]),
                   "n_val": len(parts["val"]), "n_test": len(parts["test"]), "threshold_before": shipped,
                   "threshold_retuned": retuned, "before": scores(test, shipped), "retuned": scores(test, retuned)}
            if name != "training-like":
                model, thr, seconds = fine_tune(folder, Path(tmp) / f"run_{folder.name}", args.minutes)
                row.update(threshold_after=thr, fine_tune_s=seconds, after=scores(detections(model, parts["test"]),
                                                                                   thr))
                lost = rows[0]["before"]["f1"] - row["before"]["f1"]
                row["recovered"] = (row["after"]["f1"] - row["before"]["f1"]) / lost if lost > 0.005 else None
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("condition", "before", "retuned", "after") if k in row},
                             default=float), flush=True)
    out = args.out or ROOT / "benchmarks" / "results" / f"ood{'_small' if args.small else ''}"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, args)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "args": {k: v for k, v in vars(args).items() if k not in ("dir", "out")},
              "checkpoint": str(CHECKPOINT.relative_to(ROOT)), "rows": rows}
    for suffix, data in ((".md", text), (".json", json.dumps(report, indent=1, default=float) + "\n")):
        tmp_path = Path(f"{out}{suffix}.tmp")
        tmp_path.write_text(data)
        os.replace(tmp_path, f"{out}{suffix}")
    figure(rows, Path(f"{out}.png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
