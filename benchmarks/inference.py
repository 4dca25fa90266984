"""ONNX Runtime (CPU) against PyTorch eager for the same network, and the end-to-end CLI, on 10x512x512.

    python benchmarks/inference.py                                  # the shipped model + a width-16 network
    python benchmarks/inference.py --checkpoint runs/w8/best.pt --width 16 --repeats 5

For every network: parameters, GMAC per volume, median seconds per 10x512x512 forward in PyTorch eager
(``torch.no_grad``, eval mode, running-statistics norms) and in ONNX Runtime CPU (the exported file), their ratio,
and the largest difference between the two outputs. Then the wall time of ``dmdet-infer stack.tif -o spots.csv``
in a fresh process on one simulated SNR-4 stack (reading, normalisation, network, peaks, CSV; numba cache warm),
and the Python-API time for the same stack after ``warmup()``. Both runtimes use all cores of the machine.
Writes a markdown table and JSON to benchmarks/results/inference.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = (10, 512, 512)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, algorithm choice)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _random_checkpoint(width: int, path: Path) -> Path:
    """A checkpoint of an untrained network of ``width`` (speed does not depend on the weights)."""
    import torch

    from training.config import TrainConfig
    from training.train import build_model

    cfg = TrainConfig(name=f"random-w{width}", width=width)
    model = build_model(cfg)
    torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "step": 0, "threshold": 0.5}, path)
    return path


def bench_network(checkpoint: Path, label: str, volume: np.ndarray, repeats: int, tmp: Path) -> dict:
    import onnxruntime as ort
    import torch

    from export.onnx_export import export_checkpoint
    from training.network import count_params, gflops
    from training.train import model_from_checkpoint

    model, cfg, _ = model_from_checkpoint(checkpoint)
    onnx_path = tmp / f"{label}.onnx"
    export_checkpoint(checkpoint, onnx_path)
    x = volume[None, None]
    with torch.no_grad():
        xt = torch.from_numpy(x)
        t_torch = _median_time(lambda: model(xt), repeats)
        ref = model(xt).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    t_ort = _median_time(lambda: session.run(None, {name: x}), repeats)
    out = session.run(None, {name: x})[0]
    macs = gflops(model, SHAPE)
    return {
        "network": label, "width": cfg.width, "params": count_params(model), "gmac": round(macs, 1),
        "torch_eager_s": round(t_torch, 3), "ort_cpu_s": round(t_ort, 3),
        "ort_speedup_vs_torch": round(t_torch / t_ort, 2),
        "ort_gflop_per_s": round(2 * macs / t_ort, 1),
        "max_abs_diff": float(np.abs(out - ref).max()), "onnx_bytes": onnx_path.stat().st_size,
        "onnx_path": str(onnx_path),
    }


def bench_cli(model_path: Path | None, tmp: Path, repeats: int) -> dict:
    import tifffile

    from training.simulate import SimParams, simulate

    volume, _ = simulate(SimParams(shape=SHAPE, n_particles=500, snr=4.0), np.random.default_rng(7))
    stack = tmp / "stack.tif"
    tifffile.imwrite(stack, np.rint(volume).astype(np.uint16), imagej=True, metadata={"axes": "ZYX"})
    cmd = [sys.executable, "-m", "dmdet_infer.cli", str(stack), "-o", str(tmp / "spots.csv"), "-q"]
    if model_path is not None:
        cmd += ["--model", str(model_path)]
    times = []
    for _ in range(repeats + 1):  # the first run fills the numba cache if it is cold
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        times.append(time.perf_counter() - t)
    n_spots = len((tmp / "spots.csv").read_text().splitlines()) - 1

    from dmdet_infer import Detector

    detector = Detector(model_path, device="cpu")
    detector.warmup()
    t_api = _median_time(lambda: detector.detect(volume), repeats)
    return {"cli_wall_s": round(statistics.median(times[1:]), 3), "cli_first_s": round(times[0], 3),
            "api_detect_s": round(t_api, 3), "spots": n_spots}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint of the shipped model (default: runs/w8)")
    parser.add_argument("--width", type=int, nargs="*", default=[16], help="also time untrained networks of these "
                        "widths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference")
    args = parser.parse_args()

    import onnxruntime
    import torch

    volume = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        nets = []
        checkpoint = args.checkpoint or (ROOT / "runs" / "w8" / "best.pt")
        if checkpoint.exists():
            nets.append((checkpoint, "shipped"))
        nets += [(_random_checkpoint(w, tmp / f"w{w}.pt"), f"w{w}") for w in args.width]
        for path, label in nets:
            print(f"timing {label} ...", file=sys.stderr)
            rows.append(bench_network(path, label, volume, args.repeats, tmp))
        default = ROOT / "dmdet_infer" / "models" / "default.onnx"
        model_for_cli = None if default.exists() else Path(rows[0]["onnx_path"])
        print("timing the CLI ...", file=sys.stderr)
        cli = bench_cli(model_for_cli, tmp, args.repeats)
    for row in rows:
        row.pop("onnx_path")
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "torch_threads": torch.get_num_threads()},
        "shape": list(SHAPE), "repeats": args.repeats, "networks": rows, "end_to_end": cli,
        "cli_model": "shipped default" if model_for_cli is None else rows[0]["network"],
    }
    lines = [
        f"Network forward on one {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} float32 volume, median of {args.repeats} "
        f"after a warm-up; {os.cpu_count()} CPUs, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}.",
        "",
        "| network | params | GMAC | PyTorch eager s | ORT CPU s | ORT speed-up | ORT GFLOP/s | max abs diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['network']} (width {r['width']}) | {r['params']:,} | {r['gmac']} | {r['torch_eager_s']} "
                     f"| {r['ort_cpu_s']} | {r['ort_speedup_vs_torch']}x | {r['ort_gflop_per_s']} "
                     f"| {r['max_abs_diff']:.1e} |")
    lines += ["", f"End to end, one simulated SNR-4 stack (500 particles), model: {result['cli_model']}:", "",
              "| measurement | seconds |", "| --- | --- |",
              f"| `dmdet-infer stack.tif -o spots.csv` wall time (fresh process, median) | {cli['cli_wall_s']} |",
              f"| same, first run | {cli['cli_first_s']} |",
              f"| `Detector.detect(volume)` after `warmup()` (median) | {cli['api_detect_s']} |",
              f"| spots found | {cli['spots']} |"]
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
