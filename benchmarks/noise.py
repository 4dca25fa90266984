"""False spots of the default detector on stacks with no particle at all (pure noise).

    python benchmarks/noise.py [--model PATH | --model NAME=PATH ...] [--stacks 10] [--shapes 10,64,64;10,512,512]
        [--noise poisson10,gauss100-grad] [--seed 20240] [--quick] [--out benchmarks/results/noise]

Every stack holds noise only, so every spot found is a false spot. The detector is the one ``dmdet-infer`` runs by
default: ``Detector(model)`` (auto threshold on score and photometric mass, lsq refinement, pairs split), called as
``det.detect(volume.astype(np.float32))``; the count is ``len(spots)``. One Detector per model, reused for all stacks;
``--model`` may be given several times (NAME=PATH) to compare models side by side (default: the shipped model).

Noise models (``--noise``, comma-separated keys; default all ten):

- ``poisson3``, ``poisson10``, ``poisson100``: Poisson photon counts of mean 3, 10, 100;
- ``gauss100``: Gaussian, mean 100, sd 5;
- ``camera10``: camera offset 100 + Poisson (mean 10 photons) + Gaussian read noise (sd 2);
- each of these with ``-grad``: a +-30 % illumination gradient across the field, the mean (for ``camera10`` the
  photon mean; the offset is electronic) multiplied by ``1 + 0.3 * u``, u going linearly from -1 to 1 along a random
  direction in YX (drawn per stack) and constant along Z.

Shapes (``--shapes``, Z,Y,X separated by ``;``): 10x64x64, 10x128x128, 20x128x128, 10x512x512, 40x256x256.
``--stacks`` stacks per cell (default 10); stack i of a cell uses
``SeedSequence([seed, crc32(noise key), Z, Y, X, i])``, so a stack does not depend on which subset of cells is run.
``--quick``: shape 10x64x64 and 2 stacks (a smoke run).

Acceptance criterion, per noise model x shape cell: at most 1 spot per 10^6 voxels on average (total spots / total
voxels of the cell's stacks) and no stack with more than 5 spots.

Prints a table (per model, noise model and shape: mean spots per stack, max spots in a stack, spots per 10^6 voxels,
pass/fail; then a summary per model: cells passing, overall spots per 10^6 voxels, worst stack) and writes OUT.md and
OUT.json (per-stack counts, the highest score of a false spot, timing, machine info). One progress line per cell goes
to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.table1 import _clean, _write_atomic, machine_info  # noqa: E402

MAX_PER_MVOX = 1.0  # mean spots per 10^6 voxels, at most
MAX_PER_STACK = 5  # spots in any one stack, at most
GRADIENT = 0.3  # illumination gradient: mean x (1 + GRADIENT * u), u in [-1, 1]

# key -> (label, kind, parameters). The mean of "camera" is the photon mean (offset and read noise added on top).
BASE_NOISE: dict[str, tuple[str, str, dict[str, float]]] = {
    "poisson3": ("Poisson 3", "poisson", {"mean": 3.0}),
    "poisson10": ("Poisson 10", "poisson", {"mean": 10.0}),
    "poisson100": ("Poisson 100", "poisson", {"mean": 100.0}),
    "gauss100": ("Gaussian 100, sd 5", "gauss", {"mean": 100.0, "sd": 5.0}),
    "camera10": ("offset 100 + Poisson 10 + read sd 2", "camera", {"mean": 10.0, "offset": 100.0, "read_sd": 2.0}),
}
NOISE = list(BASE_NOISE) + [f"{k}-grad" for k in BASE_NOISE]
SHAPES: list[tuple[int, int, int]] = [(10, 64, 64), (10, 128, 128), (20, 128, 128), (10, 512, 512), (40, 256, 256)]
QUICK_SHAPES: list[tuple[int, int, int]] = [(10, 64, 64)]
QUICK_STACKS = 2


def noise_label(key: str) -> str:
    base, grad = _split_key(key)
    return BASE_NOISE[base][0] + (f", gradient ±{GRADIENT:.0%}" if grad else "")


def _split_key(key: str) -> tuple[str, bool]:
    base, grad = (key[:-5], True) if key.endswith("-grad") else (key, False)
    if base not in BASE_NOISE:
        raise ValueError(f"unknown noise model {key!r}; choose from {', '.join(NOISE)}")
    return base, grad


def illumination(shape_yx: tuple[int, int], rng: np.random.Generator, amplitude: float = GRADIENT) -> np.ndarray:
    """(Y, X) factor ``1 + amplitude * u``: u linear along a random YX direction, exactly -1 and 1 at the extremes."""
    theta = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.meshgrid(np.arange(shape_yx[0], dtype=np.float64), np.arange(shape_yx[1], dtype=np.float64),
                         indexing="ij")
    p = yy * np.sin(theta) + xx * np.cos(theta)
    span = p.max() - p.min()
    u = 2.0 * (p - p.min()) / span - 1.0 if span > 0 else np.zeros_like(p)
    return 1.0 + amplitude * u


def stack_seed(key: str, shape: tuple[int, int, int], index: int, seed: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(key.encode()), *shape, index])


def noise_volume(key: str, shape: tuple[int, int, int], index: int = 0, seed: int = 20240) -> np.ndarray:
    """Stack ``index`` of noise model ``key``: a float32 ZYX volume of pure noise (deterministic in its arguments)."""
    base, grad = _split_key(key)
    _, kind, par = BASE_NOISE[base]
    rng = np.random.default_rng(stack_seed(key, shape, index, seed))
    mean: float | np.ndarray = par["mean"]
    if grad:
        mean = np.broadcast_to(par["mean"] * illumination(shape[1:], rng), shape)
    if kind == "poisson":
        vol = rng.poisson(mean, size=shape).astype(np.float32)
    elif kind == "gauss":
        vol = rng.normal(mean, par["sd"], size=shape).astype(np.float32)
    else:  # camera
        vol = (par["offset"] + rng.poisson(mean, size=shape) + rng.normal(0.0, par["read_sd"], size=shape))
        vol = vol.astype(np.float32)
    return vol


# ------------------------------------------------------------------------------------------------ arguments


def _model_arg(text: str) -> tuple[str | None, str | None]:
    """``PATH`` or ``NAME=PATH`` -> (name or None, path)."""
    name, sep, path = text.partition("=")
    if sep and name and path and not Path(text).exists():
        return name, path
    if not text:
        raise argparse.ArgumentTypeError("--model needs PATH or NAME=PATH")
    return None, text


def _shapes_arg(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for part in text.replace("x", ",").split(";"):
        try:
            shape = tuple(int(v) for v in part.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise argparse.ArgumentTypeError(f"--shapes needs Z,Y,X[;Z,Y,X...] positive integers, got {text!r}")
        shapes.append(shape)
    return shapes  # type: ignore[return-value]


def _noise_arg(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in NOISE]
    if bad or not keys:
        raise argparse.ArgumentTypeError(f"unknown noise model(s) {bad}; choose from {', '.join(NOISE)}")
    return keys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", type=_model_arg, default=[], metavar="[NAME=]PATH",
                   help="an exported ONNX model (repeatable, NAME=PATH to compare); default: the shipped model")
    p.add_argument("--noise", type=_noise_arg, default=None, help=f"comma-separated subset of: {', '.join(NOISE)}")
    p.add_argument("--shapes", type=_shapes_arg, default=None,
                   help="Z,Y,X shapes separated by ';' (default: " + ";".join(",".join(map(str, s)) for s in SHAPES)
                   + ")")
    p.add_argument("--stacks", type=int, default=None, help="stacks per cell (default 10; --quick: 2)")
    p.add_argument("--seed", type=int, default=20240, help="noise seed (default 20240)")
    p.add_argument("--quick", action="store_true", help="tiny run: shape 10,64,64 and 2 stacks (unless given)")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"), help="ONNX Runtime device (auto)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/noise",
                   help="output prefix: writes OUT.md and OUT.json")
    args = p.parse_args(argv)
    args.noise = args.noise or list(NOISE)
    args.shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    args.stacks = args.stacks if args.stacks is not None else (QUICK_STACKS if args.quick else 10)
    if args.stacks < 1:
        p.error("--stacks must be >= 1")
    models = []
    for name, path in args.model or [(None, None)]:
        if name is None:
            name = "default" if path is None or len(args.model) == 1 else Path(path).stem
        models.append((name, path))
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        p.error(f"model names must be unique, got {names}; use NAME=PATH")
    args.models = models
    return args


# ------------------------------------------------------------------------------------------------ benchmark


def cell_result(counts: list[int], voxels: int, top_score: float | None) -> dict:
    """Statistics and pass/fail of one cell from its per-stack spot counts."""
    total = int(sum(counts))
    per_mvox = 1e6 * total / (voxels * len(counts))
    worst = int(max(counts))
    return {"counts": [int(c) for c in counts], "spots": total, "mean_spots": total / len(counts),
            "max_spots": worst, "spots_per_mvox": per_mvox, "max_score": top_score,
            "pass": bool(per_mvox <= MAX_PER_MVOX and worst <= MAX_PER_STACK)}


def summarise(cells: list[dict]) -> dict:
    spots = sum(c["spots"] for c in cells)
    voxels = sum(c["voxels"] * c["stacks"] for c in cells)
    worst = max(cells, key=lambda c: c["max_spots"])
    return {"cells": len(cells), "cells_passed": sum(c["pass"] for c in cells), "spots": spots,
            "stacks": sum(c["stacks"] for c in cells), "voxels": voxels, "spots_per_mvox": 1e6 * spots / voxels,
            "worst": {"noise": worst["noise"], "shape": worst["shape"], "stack": int(np.argmax(worst["counts"])),
                      "spots": worst["max_spots"]},
            "pass": all(c["pass"] for c in cells)}


def _shape_text(shape) -> str:
    return "×".join(map(str, shape))


def table(args: argparse.Namespace, cells: list[dict], summary: dict[str, dict], seconds: float,
          machine: dict) -> str:
    names = [n for n, _ in args.models]
    by = {(c["model"], c["noise"], tuple(c["shape"])): c for c in cells}
    lines = [f"# False spots on pure noise ({args.stacks} stacks per cell)", "",
             f"Criterion per cell: ≤ {MAX_PER_MVOX:g} spot per 10^6 voxels on average and ≤ {MAX_PER_STACK} spots in "
             "any stack. Detector: `Detector(model)` defaults (what `dmdet-infer` runs). Columns per model: mean "
             "spots per stack / max in a stack / spots per 10^6 voxels / pass.", ""]
    head = "| noise | shape | " + " | ".join(f"{n}: mean | max | /10^6 vox | ok" for n in names) + " |"
    lines += [head, "|" + "---|" * (2 + 4 * len(names))]
    for key in args.noise:
        for shape in args.shapes:
            row = [noise_label(key), _shape_text(shape)]
            for n in names:
                c = by[(n, key, tuple(shape))]
                row += [f"{c['mean_spots']:.2f}", str(c["max_spots"]), f"{c['spots_per_mvox']:.2f}",
                        "pass" if c["pass"] else "**FAIL**"]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| model | cells passing | spots | stacks | spots per 10^6 voxels | worst stack |",
              "|---|---|---|---|---|---|"]
    for n in names:
        s = summary[n]
        w = s["worst"]
        lines.append(f"| {n} | {s['cells_passed']}/{s['cells']} | {s['spots']} | {s['stacks']} | "
                     f"{s['spots_per_mvox']:.3f} | {w['spots']} ({noise_label(w['noise'])}, {_shape_text(w['shape'])}, "
                     f"stack {w['stack']}) |")
    lines += ["", "Models: " + ", ".join(f"{n} = {p or 'shipped default'}" for n, p in args.models),
              f"Run time {seconds:.0f} s on {machine.get('processor')} ({machine.get('cpus_usable')} usable CPUs), "
              f"{machine.get('date_utc')}, commit {str(machine.get('git_commit'))[:10]}"
              f"{' (dirty)' if machine.get('git_dirty') else ''}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dmdet_infer import Detector

    t_start = time.perf_counter()
    cells: list[dict] = []
    for name, path in args.models:
        t0 = time.perf_counter()
        det = Detector(path, device=args.device, threads=args.threads)
        load_s = time.perf_counter() - t0
        print(f"[{name}] model {path or 'shipped default'} loaded in {load_s:.1f} s", file=sys.stderr)
        for key in args.noise:
            for shape in args.shapes:
                t0 = time.perf_counter()
                counts, top = [], None
                for i in range(args.stacks):
                    vol = noise_volume(key, shape, i, args.seed)
                    spots = det.detect(vol.astype(np.float32))
                    counts.append(len(spots))
                    if len(spots):
                        top = max(top or 0.0, float(np.max(spots.score)))
                voxels = int(np.prod(shape))
                cell = {"model": name, "noise": key, "noise_label": noise_label(key), "shape": list(shape),
                        "voxels": voxels, "stacks": args.stacks, **cell_result(counts, voxels, top),
                        "seconds": time.perf_counter() - t0}
                cells.append(cell)
                print(f"[{name}] {key:<15} {_shape_text(shape):>11}: mean {cell['mean_spots']:.2f}, max "
                      f"{cell['max_spots']}, {cell['spots_per_mvox']:.2f}/10^6 vox "
                      f"{'pass' if cell['pass'] else 'FAIL'} ({cell['seconds']:.1f} s)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t_start
    summary = {n: summarise([c for c in cells if c["model"] == n]) for n, _ in args.models}
    machine = machine_info()
    text = table(args, cells, summary, seconds, machine)
    report = {
        "benchmark": "false spots on pure noise",
        "criterion": {"max_spots_per_mvox": MAX_PER_MVOX, "max_spots_per_stack": MAX_PER_STACK},
        "detector": "Detector(model) defaults; det.detect(volume.astype(np.float32))",
        "models": {n: p for n, p in args.models},
        "noise_models": {k: noise_label(k) for k in args.noise},
        "gradient": GRADIENT,
        "shapes": [list(s) for s in args.shapes],
        "stacks": args.stacks,
        "seed": args.seed,
        "cells": cells,
        "summary": summary,
        "seconds": seconds,
        "machine": machine,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(Path(f"{args.out}.md"), text.encode())
    _write_atomic(Path(f"{args.out}.json"), json.dumps(_clean(report), indent=1).encode())
    print(text)
    print(f"wrote {args.out}.md, {args.out}.json ({seconds:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
