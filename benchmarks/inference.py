"""dmdet side by side with the classical detectors on a CPU, on one 10x512x512 stack (issue 15).

    python benchmarks/inference.py [--model NAME=PATH ...] [--runtimes onnxruntime,openvino:fp32,...] [--repeats 5]
                                   [--out benchmarks/results/inference]
    python benchmarks/inference.py --torch [--checkpoint runs/w8/best.pt] [--width 16]   # runtimes (below)

Default job, in one process, on one simulated SNR-4 stack (500 particles, background 10, uint16), after a warm-up,
interleaved rounds so that other load hits every method alike, the median of ``repeats``: ``Detector.detect`` of
every model (``--model``; default: the one shipped in the package) on every runtime and precision (``--runtimes``;
default: ONNX Runtime, and when OpenVINO is installed OpenVINO in fp32 and in its automatic precision, what users
get: bf16 where the CPU has it), each with everything a user gets by default, and how far their spots agree; that
model's network alone (``Detector.density``: normalisation and the tiled network) and
its GFLOP/s (2 x the convolutions' multiply-adds, counted on the ONNX graph, per second); Big-FISH ``detect_spots``
with its automatic threshold (voxel size 1, spot radius the stack's sigma); SEF3D (training/sef3d.py with Table 1's
tuned sigmas and k). Then each method's peak resident memory, every one alone in a fresh process (``VmHWM``:
imports, stack and one detection; ``ru_maxrss`` would count the forking parent's). Writes OUT.md and OUT.json.

``--torch``: ONNX Runtime (CPU) against PyTorch eager for the same network, and the end-to-end CLI:

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
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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


def runtimes(args: argparse.Namespace) -> None:
    """``--torch``: ONNX Runtime against PyTorch eager, and the end-to-end CLI."""
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


# ------------------------------------------------------------------------------------------ side by side (default)

SIGMA_ZYX = (1.0, 1.5, 1.5)  #: the simulated stack's PSF sigma, voxels
SEF3D_PARAMS = {"sigma_zyx": (1.25, 1.875, 1.875), "k": 4.5, "refine": "none", "min_distance": (1.0, 1.0, 1.0)}


def onnx_gmac(path: Path, shape: tuple[int, int, int]) -> float:
    """Multiply-adds (GMAC) of the convolutions of an ONNX network on one volume of ``shape``."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    for d, n in zip(dims, (1, 1, *shape)):
        d.ClearField("dim_param")
        d.dim_value = n
    graph = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.output, *graph.input)}
    weights = {w.name: list(w.dims) for w in graph.initializer}
    macs = 0
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = weights[node.input[1]]
            if node.op_type == "Conv":  # each output element: in/group channels x kernel (weights: out, in/group, k)
                macs += int(np.prod(shapes[node.output[0]])) * (w[1] * int(np.prod(w[2:])))
            else:  # each input element is spread over out/group channels x kernel
                macs += int(np.prod(shapes[node.input[0]])) * (w[1] * int(np.prod(w[2:])))
    return macs / 1e9


def simulated_stack() -> np.ndarray:
    """The benchmark's stack: SNR 4, 500 particles, uint16 (what a camera gives)."""
    from training.simulate import SimParams, simulate

    volume, _ = simulate(SimParams(shape=SHAPE, n_particles=500, snr=4.0), np.random.default_rng(7))
    return np.rint(volume).astype(np.uint16)


def _engine(runtime: str) -> tuple[str, str]:
    """(runtime, precision) of a ``RUNTIME[:PRECISION]`` spec such as "openvino:bf16" (no precision: "auto")."""
    engine, _, precision = runtime.partition(":")
    return engine, precision or "auto"


def methods(models: dict[str, Path | None], only: str | None = None,
            runtimes: tuple[str, ...] = ("onnxruntime",)) -> dict[str, Callable[[np.ndarray], Any]]:
    """name -> detect(volume), each ready (models loaded and warmed up); ``only``: just that one. dmdet's names are
    ``dmdet:MODEL:RUNTIME`` and ``network:MODEL:RUNTIME``."""
    out: dict[str, Callable[[np.ndarray], Any]] = {}
    for name, path in models.items():
        for runtime in runtimes:
            if only in (None, f"dmdet:{name}:{runtime}", f"network:{name}:{runtime}"):
                from dmdet_infer import Detector

                engine, precision = _engine(runtime)
                det = Detector(path, device="cpu", runtime=engine, precision=precision)
                det.warmup()
                out[f"dmdet:{name}:{runtime}"] = det.detect
                out[f"network:{name}:{runtime}"] = det.density
    if only in (None, "bigfish_auto"):
        from bigfish.detection import detect_spots

        out["bigfish_auto"] = lambda v: detect_spots(np.asarray(v, np.float32), voxel_size=(1, 1, 1),
                                                     spot_radius=SIGMA_ZYX)
    if only in (None, "sef3d"):
        from training.sef3d import sef3d_detect

        out["sef3d"] = lambda v: sef3d_detect(np.asarray(v, np.float32), SEF3D_PARAMS["sigma_zyx"],
                                              SEF3D_PARAMS["k"], SEF3D_PARAMS["refine"], SEF3D_PARAMS["min_distance"])
    return out


_RSS = ("import json, sys, numpy as np; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.inference import methods; from pathlib import Path; "
        "m = {k: (Path(v) if v else None) for k, v in json.loads(sys.argv[3]).items()}; "
        "methods(m, sys.argv[2], tuple(sys.argv[5:]))[sys.argv[2]](np.load(sys.argv[4])); "
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
_CLI_RSS = ("import runpy, sys; sys.argv = ['dmdet-infer', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('dmdet_infer.cli', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")


def peak_rss_mib(method: str, models: dict[str, Path | None], stack: Path,
                 runtimes: tuple[str, ...] = ("onnxruntime",)) -> float | None:
    """Peak resident memory (MiB) of a fresh process: ``dmdet-infer stack.tif`` for a model (what a user runs),
    else a process that imports the method alone and detects once; None for a network alone."""
    if method.startswith("network:"):
        return None
    if method.startswith("dmdet:"):
        _, name, runtime = method.split(":", 2)
        engine, precision = _engine(runtime)
        path = models[name]
        cmd = [sys.executable, "-c", _CLI_RSS, str(stack.with_suffix(".tif")), "-o", str(stack.with_suffix(".csv")),
               "-q", "--runtime", engine, "--precision", precision, *(["--model", str(path)] if path else [])]
    else:
        spec = json.dumps({k: (str(v) if v else None) for k, v in models.items()})
        cmd = [sys.executable, "-c", _RSS, str(ROOT), method, spec, str(stack), *runtimes]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
    return round(int(out[-1]) / 1024, 1)


def side_by_side(args: argparse.Namespace) -> None:
    """The default job (module docstring)."""
    from benchmarks.table1 import machine_info
    from dmdet_infer.model import default_model_path, openvino_installed
    from training.matching import match

    models: dict[str, Path | None] = {}
    for text in args.model or ["default"]:
        name, _, path = text.partition("=")
        models[name] = Path(path) if path else None
    runtimes = tuple(args.runtimes.split(",")) if args.runtimes else (
        ("onnxruntime", "openvino:fp32", "openvino:auto") if openvino_installed() else ("onnxruntime",))
    volume = simulated_stack()
    print("warming up ...", file=sys.stderr)
    fns = methods(models, runtimes=runtimes)
    found = {name: fn(volume) for name, fn in fns.items()}
    # per model: every runtime's spots against the first runtime's: equal (coordinates to 1e-4 voxel), and how
    # many are matched one to one within 0.5 voxel
    same_spots = {}
    for name in models:
        tables = [found[f"dmdet:{name}:{r}"].zyx for r in runtimes]
        same_spots[name] = {"spots": [len(t) for t in tables], "same": all(
            t.shape == tables[0].shape and np.allclose(t, tables[0], atol=1e-4) for t in tables),
            "matched_within_half_voxel": [len(match(t, tables[0], gate=0.5)[0]) for t in tables],
            "precision": [found[f"dmdet:{name}:{r}"].meta.get("precision") for r in runtimes]}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(args.repeats):
        print(f"round {r + 1}/{args.repeats} ...", file=sys.stderr)
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(volume)
            times[name].append(time.perf_counter() - t)
    median = {name: statistics.median(v) for name, v in times.items()}
    gmac = {name: onnx_gmac(path or default_model_path(), SHAPE) for name, path in models.items()}
    print("peak memory, each method alone ...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        import tifffile

        stack = Path(tmp) / "stack.npy"
        np.save(stack, volume)
        tifffile.imwrite(stack.with_suffix(".tif"), volume, imagej=True, metadata={"axes": "ZYX"})
        rss = {name: peak_rss_mib(name, models, stack, runtimes) for name in fns}
    bigfish = median["bigfish_auto"]
    rows = []
    for name in fns:
        row = {"method": name, "median_s": round(median[name], 3), "times_s": [round(t, 3) for t in times[name]],
               "vs_bigfish": round(median[name] / bigfish, 2), "peak_rss_mib": rss[name]}
        if name.startswith("network:"):
            row["gmac"] = round(gmac[name.split(":")[1]], 1)
            row["gflop_per_s"] = round(2 * row["gmac"] / median[name], 1)
        rows.append(row)
    # versions, what auto precision runs here, and the code that ran (its commit; whether the tree differed)
    machine = {**machine_info(), "node": platform.node(), "load_after": os.getloadavg()}
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shape": list(SHAPE),
              "repeats": args.repeats, "models": {k: str(v or default_model_path()) for k, v in models.items()},
              "runtimes": list(runtimes), "same_spots": same_spots, "machine": machine, "rows": rows}
    lines = [f"One simulated SNR-4 stack {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} uint16 (500 particles), one process, "
             f"interleaved rounds, median of {args.repeats} after a warm-up; {os.cpu_count()} CPUs "
             f"({platform.node()}, load {os.getloadavg()[0]:.1f} at the end), {result['date']}, commit "
             f"{(machine['git_commit'] or 'unknown')[:7]}{' (uncommitted changes)' if machine['git_dirty'] else ''}. "
             "Peak RSS: each method alone in a fresh process (dmdet: the whole `dmdet-infer stack.tif -o "
             "spots.csv`).", "",
             "| method | seconds | / Big-FISH | GMAC | GFLOP/s | peak RSS MiB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['median_s']} | {row['vs_bigfish']} | {row.get('gmac', '')} | "
                     f"{row.get('gflop_per_s', '')} | {row['peak_rss_mib'] or ''} |")
    if len(runtimes) > 1:
        lines += ["", f"Spots of each runtime ({', '.join(runtimes)}; what ran: precision), and how many of them "
                  f"match the first's within 0.5 voxel: " + "; ".join(
                      f"{name}: {' / '.join(map(str, v['spots']))} spots ({' / '.join(map(str, v['precision']))}), "
                      f"{' / '.join(map(str, v['matched_within_half_voxel']))} matched, all equal to 1e-4: "
                      f"{'yes' if v['same'] else 'no'}" for name, v in same_spots.items())]
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", metavar="NAME=PATH",
                        help="a model to time (repeatable; NAME alone: the shipped one); default: the shipped one")
    parser.add_argument("--torch", action="store_true", help="ONNX Runtime against PyTorch eager instead")
    parser.add_argument("--checkpoint", type=Path, help="--torch: trained checkpoint of the shipped model (default: "
                        "runs/w8)")
    parser.add_argument("--width", type=int, nargs="*", default=[16], help="--torch: also time untrained networks of "
                        "these widths")
    parser.add_argument("--runtimes", default=None, help="comma-separated runtimes for dmdet, each RUNTIME[:PRECISION] "
                        "(onnxruntime, openvino:fp32, openvino:bf16, openvino:auto); default: "
                        "onnxruntime, and when openvino is installed openvino in fp32 and auto (what users get: bf16 "
                        "where the CPU has it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/inference (or "
                        "runtimes with --torch)")
    args = parser.parse_args()
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / ("runtimes" if args.torch else "inference")
    runtimes(args) if args.torch else side_by_side(args)


if __name__ == "__main__":
    main()
