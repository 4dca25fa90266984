"""GPU inference: ONNX Runtime CUDA (fp32, fp16) beside PyTorch eager, autocast and ``torch.compile``, and end to end.

    python benchmarks/gpu.py --out benchmarks/results/gpu                      # on a GPU machine
    python benchmarks/gpu.py --device cpu --shape 10,64,64 --frames 3 --repeats 2 --out /tmp/gpu   # code paths

1. Network alone, one ZYX volume of ``--shape`` (default 10x512x512), input already normalised (standard normal),
   median of ``--repeats`` after warm-ups: ORT sessions of the shipped model (fp32 with and without TF32) and of
   its fp16 export through :class:`dmdet_infer.model.Model` (IO binding on CUDA: host in, host out), and the same
   sessions with input and output resident on the device (the network's own rate); PyTorch eager fp32, eager
   under autocast fp16/bf16, and ``torch.compile`` of the same network from its checkpoint.
2. Achieved TFLOP/s from the network's multiply-accumulates (2 FLOP per MAC) against the H200's dense peaks.
3. End to end: ``Detector.detect_frames`` (Python API, after ``warmup()``) and ``python -m dmdet_infer.cli`` (a fresh
   process: start-up, model load, cuDNN search, reading, writing CSV) on a simulated ``--frames``-frame TZYX
   uint16 time-lapse; frames per second and the ratio to the network-alone rate.

Every part is guarded: one that fails records its error in the JSON and the others still run; results are
written after every part, so a run cut short by a time limit still leaves them. ``--budget`` seconds bound the
whole run (the CLI's frame count is reduced, and said so, when the API rate shows 100 frames would not fit).
Writes ``gpu.md`` and ``gpu.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: NVIDIA H200 (SXM) dense peaks, TFLOP/s.
PEAK_TFLOPS = {"fp16": 989.0, "bf16": 989.0, "tf32": 494.0, "fp32": 67.0}
DEFAULT_CHECKPOINT = ROOT / "training" / "checkpoints" / "dmdet-w8-general2.pt"


class Run:
    """The result being built: parts in order, each a dict or ``{"error": ...}``; saved after every part."""

    def __init__(self, out: Path, budget: float) -> None:
        self.out = out
        self.start = time.perf_counter()
        self.budget = budget
        self.result: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def part(self, key: str, fn: Callable[[], Any], need: float = 0.0) -> Any:
        """``result[key] = fn()``, or the error; skipped when fewer than ``need`` seconds of the budget are left."""
        if self.left() < need:
            self.result[key] = {"error": f"skipped: {self.left():.0f} s of the time budget left, {need:.0f} needed"}
            print(f"[gpu] {key}: skipped (time budget)", flush=True)
            self.save()
            return None
        t = time.perf_counter()
        print(f"[gpu] {key} ...", flush=True)
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001 - a benchmark part must never stop the others
            if isinstance(exc, KeyboardInterrupt):
                raise
            value = {"error": f"{type(exc).__name__}: {str(exc).strip()[:600]}",
                     "traceback": traceback.format_exc(limit=6)[-2000:]}
            print(f"[gpu] {key}: FAILED {value['error']}", flush=True)
        self.result[key] = value
        print(f"[gpu] {key}: {time.perf_counter() - t:.1f} s", flush=True)
        self.save()
        return value

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.result["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        (self.out / "gpu.json").write_text(json.dumps(self.result, indent=2, default=str) + "\n")
        (self.out / "gpu.md").write_text(table(self.result) + "\n")


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 3, sync: Callable[[], None] | None = None,
                ) -> dict[str, float]:
    """Median (and min) seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls; ``sync`` after each."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def rates(timing: dict[str, float], gflop: float | None, peak: str | None) -> dict[str, Any]:
    """Volumes/s, achieved TFLOP/s and the fraction of the ``peak`` precision's dense peak."""
    s = timing["median_s"]
    row: dict[str, Any] = {"s": round(s, 6), "min_s": round(timing["min_s"], 6), "volumes_per_s": round(1 / s, 2),
                           "repeats": timing["repeats"]}
    if gflop:
        row["tflops"] = round(gflop / s / 1e3, 2)
        if peak:
            row["peak"] = peak
            row["peak_tflops"] = PEAK_TFLOPS[peak]
            row["fraction_of_peak"] = round(gflop / s / 1e3 / PEAK_TFLOPS[peak], 4)
    return row


def environment(device: str, preload_notes: list[str]) -> dict[str, Any]:
    import onnxruntime as ort

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
                           "onnxruntime_file": ort.__file__, "ort_available_providers": ort.get_available_providers(),
                           "preload": preload_notes, "device_arg": device}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            env["cudnn"] = torch.backends.cudnn.version()
    except Exception as exc:
        env["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except Exception as exc:
        env["nvidia_smi"] = f"unavailable ({type(exc).__name__})"
    return env


def network_flops(checkpoint: Path, shape: tuple[int, int, int]) -> dict[str, Any]:
    """Parameters and GMAC of the checkpoint's network for one volume of ``shape`` (2 FLOP per MAC)."""
    from training.network import count_params, gflops
    from training.train import model_from_checkpoint

    model, cfg, _ = model_from_checkpoint(checkpoint)
    gmac = gflops(model, shape)
    return {"checkpoint": str(checkpoint), "width": cfg.width, "params": count_params(model),
            "gmac": round(gmac, 2), "gflop": round(2 * gmac, 2)}


def export_fp16(checkpoint: Path, model: Path, tmp: Path) -> Path:
    """The checkpoint exported in half precision, with the calibration of ``model`` (its fp32 export)."""
    from export.onnx_export import export_checkpoint

    out = tmp / "fp16.onnx"
    report = export_checkpoint(checkpoint, out, fp16=True, calibration_from=model)
    print(f"[gpu] exported fp16 model: parity {report['parity_max_abs_diff']:.2e}", flush=True)
    return out


def twin_mismatch(fp32: Path, fp16: Path) -> str | None:
    """Why ``fp16`` is not the half-precision twin of ``fp32`` (None when it is): its precision, or its output
    on a random input (ONNX Runtime CPU) further than 1e-2 from the fp32 model's."""
    from dmdet_infer.model import Model

    a, b = Model(fp32, device="cpu"), Model(fp16, device="cpu")
    if b.info.precision != "fp16":
        return f"{fp16} has precision {b.info.precision}"
    x = np.random.default_rng(1).standard_normal((8, 64, 64)).astype(np.float32)
    diff = float(np.abs(a.run(x) - b.run(x)).max())
    return None if diff <= 1e-2 else f"outputs differ by {diff:.3g}: another network"


def bench_ort(path: Path, device: str, tf32: bool, x: np.ndarray, repeats: int, gflop: float | None,
              peak: str | None, reference: np.ndarray | None = None) -> dict[str, Any]:
    """One ORT session through dmdet_infer's Model: host in/out (IO binding on CUDA) and, on CUDA, device-resident."""
    import onnxruntime as ort

    from dmdet_infer.model import Model

    t = time.perf_counter()
    model = Model(path, device=device, tf32=tf32)
    first = time.perf_counter()
    out = model.run(x)  # the first run pays cuDNN's exhaustive algorithm search
    row: dict[str, Any] = {"model": str(path), "precision": model.info.precision,
                           "providers": model.providers, "session_s": round(first - t, 3),
                           "first_run_s": round(time.perf_counter() - first, 3)}
    if model.on_cuda:
        row["provider_options"] = model.session.get_provider_options().get("CUDAExecutionProvider", {})
    row["host_io"] = rates(median_time(lambda: model.run(x), repeats), gflop, peak)
    row["io_binding"] = model.io_binding
    row["io_binding_error"] = model.io_binding_error
    if reference is not None:
        row["max_abs_diff_vs_first_session"] = float(np.abs(out - reference).max())
    if model.on_cuda:
        binding = model.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x)[None, None], "cuda", 0)
        binding.bind_ortvalue_input(model.input_name, value)
        binding.bind_output(model.output_name, "cuda", 0)

        def resident() -> None:
            model.session.run_with_iobinding(binding)

        row["device_resident"] = rates(median_time(resident, repeats, sync=binding.synchronize_outputs),
                                       gflop, peak)
    row["_out"] = out
    return row


def bench_torch(checkpoint: Path, device: str, x: np.ndarray, repeats: int, gflop: float | None,
                compile_only: bool = False) -> dict[str, Any]:
    """PyTorch eager fp32, autocast fp16/bf16 (or, with ``compile_only``, ``torch.compile`` fp32 and fp16)."""
    import torch

    from training.train import model_from_checkpoint

    model, _, _ = model_from_checkpoint(checkpoint)
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    model = model.eval().to(dev)
    torch.backends.cudnn.benchmark = True
    xt = torch.from_numpy(np.ascontiguousarray(x)[None, None]).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    try:
        tf32 = bool(torch.backends.cudnn.allow_tf32)
    except Exception:  # newer torch: torch.backends.cudnn.conv.fp32_precision
        tf32 = str(getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", "")) == "tf32"
    out: dict[str, Any] = {"device": str(dev), "cudnn_allow_tf32": tf32, "cudnn_benchmark": True}
    fp32_peak = "tf32" if dev.type == "cuda" and tf32 else "fp32"
    variants: list[tuple[str, Any, torch.dtype | None, str]]
    if compile_only:
        variants = [("compile_fp32", "compile", None, fp32_peak), ("compile_fp16", "compile", torch.float16, "fp16")]
    else:
        variants = [("eager_fp32", model, None, fp32_peak), ("eager_autocast_fp16", model, torch.float16, "fp16"),
                    ("eager_autocast_bf16", model, torch.bfloat16, "bf16")]
    compiled = None
    for name, net, dtype, peak in variants:
        try:
            if net == "compile":
                if compiled is None:
                    t = time.perf_counter()
                    compiled = torch.compile(model)
                    out["compile_mode"] = "default"
                    out[f"{name}_first_call_s"] = None
                net = compiled
            else:
                t = None

            def call(net=net, dtype=dtype):
                with torch.inference_mode():
                    if dtype is None:
                        return net(xt)
                    with torch.autocast(dev.type, dtype=dtype):
                        return net(xt)

            if t is not None:
                call()
                if sync:
                    sync()
                out[f"{name}_first_call_s"] = round(time.perf_counter() - t, 2)
            out[name] = rates(median_time(call, repeats, sync=sync), gflop, peak)
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:600]}"}
            print(f"[gpu] torch {name}: FAILED {out[name]['error'][:200]}", flush=True)
    return out


def simulate_timelapse(path: Path, frames: int, shape: tuple[int, int, int], seed: int = 0) -> dict[str, Any]:
    """A cheap TZYX uint16 time-lapse: Poisson background (camera offset 100) and 150 Gaussian spots per frame that
    drift a little between frames; written uncompressed (memory-mapped by the CLI)."""
    import tifffile

    rng = np.random.default_rng(seed)
    n = 150
    centres = rng.uniform([1, 6, 6], [shape[0] - 1, shape[1] - 6, shape[2] - 6], (n, 3))
    amplitude = rng.uniform(20, 80, n)
    r = (3, 5, 5)
    grid = np.mgrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1].astype(np.float32)
    data = np.empty((frames, *shape), np.uint16)
    for t in range(frames):
        image = rng.poisson(100.0, shape).astype(np.float32)
        moved = np.clip(centres + rng.normal(0, 0.3, centres.shape), [0, 0, 0], np.array(shape) - 1)
        for c, a in zip(moved, amplitude):
            v = np.rint(c).astype(int)
            lo = np.maximum(v - r, 0)
            hi = np.minimum(v + np.array(r) + 1, shape)
            d = c - v
            g = np.exp(-0.5 * (((grid[0] - d[0]) / 1.0) ** 2 + ((grid[1] - d[1]) / 1.5) ** 2
                               + ((grid[2] - d[2]) / 1.5) ** 2))
            w = tuple(slice(int(l0 - v0 + rr), int(h0 - v0 + rr)) for l0, h0, v0, rr in zip(lo, hi, v, r))
            image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += rng.poisson(a * g[w]).astype(np.float32)
        data[t] = np.clip(image, 0, 65535).astype(np.uint16)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZYX"})
    return {"path": str(path), "frames": frames, "shape": list(shape), "bytes": path.stat().st_size,
            "spots_per_frame": n}


def bench_api(model: Path, device: str, stack_path: Path, frames: int, overlap: bool | None) -> dict[str, Any]:
    """``Detector.detect_frames`` over the first ``frames`` frames of the time-lapse (in memory), after warm-up."""
    import tifffile

    from dmdet_infer import Detector

    data = tifffile.imread(stack_path)[:frames]
    detector = Detector(model, device=device, overlap=overlap)
    detector.warmup()
    detector.detect(data[0])  # cuDNN search for the frame's tile shape, numba caches
    t = time.perf_counter()
    spots = sum(len(s) for s in detector.detect_frames(data))
    s = time.perf_counter() - t
    return {"frames": int(len(data)), "s": round(s, 3), "frames_per_s": round(len(data) / s, 3), "spots": spots,
            "overlap": detector.overlap, "io_binding": detector.model.io_binding,
            "providers": detector.model.providers, "tiles_per_frame": len(detector.cores(data.shape[1:]))}


def cuda_library_path() -> str:
    """LD_LIBRARY_PATH for a child process: the nvidia-* pip packages' library folders (CUDA, cuBLAS, cuDNN)
    and torch's, ahead of what was set."""
    dirs: list[str] = []
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        for base in list(nvidia.__path__):
            for f in sorted(glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True)):
                d = os.path.dirname(f)
                if d not in dirs:
                    dirs.append(d)
    except Exception:
        pass
    try:
        import torch

        d = os.path.join(os.path.dirname(torch.__file__), "lib")
        if os.path.isdir(d):
            dirs.append(d)
    except Exception:
        pass
    old = os.environ.get("LD_LIBRARY_PATH", "")
    return ":".join(dirs + ([old] if old else []))


def bench_cli(model: Path | None, device: str, stack_path: Path, frames: int, tmp: Path, timeout: float,
              ) -> dict[str, Any]:
    """``python -m dmdet_infer.cli stack.tif -o spots.csv --device DEVICE -q`` in a fresh process."""
    csv = tmp / "spots.csv"
    cmd = [sys.executable, "-m", "dmdet_infer.cli", str(stack_path), "-o", str(csv), "--device", device, "-q"]
    if model is not None:
        cmd += ["--model", str(model)]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = cuda_library_path()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))
    s = time.perf_counter() - t
    row: dict[str, Any] = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "frames": frames,
                           "s": round(s, 3), "frames_per_s": round(frames / s, 3)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip()[-1500:]
    else:
        row["spots"] = max(0, len(csv.read_text().splitlines()) - 1)
    return row


def table(result: dict[str, Any]) -> str:
    """The markdown report of whatever parts are in ``result``."""
    env = result.get("environment", {})
    net = result.get("network", {})
    shape = "x".join(str(v) for v in result.get("shape", []))
    lines = [f"GPU benchmark, {result.get('date', '')}: {env.get('gpu', env.get('nvidia_smi', 'no GPU'))}; "
             f"torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda', '?')}, cuDNN {env.get('cudnn', '?')}), "
             f"onnxruntime {env.get('onnxruntime', '?')}; device argument `{env.get('device_arg', '?')}`.", ""]
    if "error" in net:
        lines += [f"Network size: failed ({net['error']}).", ""]
    elif net:
        lines += [f"Network: width {net['width']}, {net['params']:,} parameters, {net['gmac']} GMAC = "
                  f"{net['gflop']} GFLOP per {shape} volume.", ""]
    lines += [f"Network alone, one {shape} volume (normalised input), median of the repeats after warm-up:", "",
              "| runtime | precision | volumes/s | ms | TFLOP/s | % of peak (peak) |",
              "| --- | --- | --- | --- | --- | --- |"]

    def row(label: str, precision: str, r: dict[str, Any] | None) -> None:
        if not r:
            return
        if "error" in r:
            lines.append(f"| {label} | {precision} | failed: {r['error'][:160]} | | | |")
            return
        pct = f"{100 * r['fraction_of_peak']:.1f} % ({r['peak']} {r['peak_tflops']:g})" if "peak" in r else ""
        lines.append(f"| {label} | {precision} | {r['volumes_per_s']} | {1e3 * r['s']:.2f} | {r.get('tflops', '')} "
                     f"| {pct} |")

    for key, label, precision in (("ort_fp32", "ORT CUDA", "fp32 (TF32 on)"),
                                  ("ort_fp32_no_tf32", "ORT CUDA", "fp32 (TF32 off)"),
                                  ("ort_fp16", "ORT CUDA", "fp16")):
        r = result.get(key)
        if r is None:
            continue
        if "error" in r:
            row(label, precision, r)
            continue
        provider = r["providers"][0].replace("ExecutionProvider", "")
        row(f"ORT {provider}, host in/out (IO binding: {r.get('io_binding')})", precision, r.get("host_io"))
        row(f"ORT {provider}, device-resident", precision, r.get("device_resident"))
    t = result.get("torch", {})
    if "error" in t:
        row("PyTorch", "", t)
    for key, label, precision in (("eager_fp32", "PyTorch eager", "fp32"),
                                  ("eager_autocast_fp16", "PyTorch eager, autocast", "fp16"),
                                  ("eager_autocast_bf16", "PyTorch eager, autocast", "bf16")):
        row(label, precision, t.get(key))
    c = result.get("torch_compile", {})
    if "error" in c:
        row("torch.compile", "", c)
    for key, label, precision in (("compile_fp32", "torch.compile (default mode)", "fp32"),
                                  ("compile_fp16", "torch.compile (default mode), autocast", "fp16")):
        row(label, precision, c.get(key))
    lines += ["", "Peaks (dense, TFLOP/s): " + ", ".join(f"{k} {v:g}" for k, v in PEAK_TFLOPS.items()) +
              " (H200). 2 FLOP per multiply-accumulate.", ""]
    e2e = [(k, result[k]) for k in ("api", "api_fp16", "api_no_overlap", "cli", "cli_fp16") if k in result]
    if e2e:
        stack = result.get("timelapse", {})
        lines += [f"End to end on a simulated {stack.get('frames', '?')}-frame TZYX uint16 time-lapse of {shape} "
                  f"frames (Poisson background, {stack.get('spots_per_frame', '?')} spots per frame):", "",
                  "| pipeline | frames | frames/s | network-alone rate / this |", "| --- | --- | --- | --- |"]
        for key, r in e2e:
            label = {"api": "Python API `detect_frames` (fp32 model, overlap default)",
                     "api_fp16": "Python API `detect_frames` (fp16 model)",
                     "api_no_overlap": "Python API `detect_frames`, overlap off",
                     "cli": "`python -m dmdet_infer.cli` (fresh process, fp32 model)",
                     "cli_fp16": "`python -m dmdet_infer.cli` (fresh process, fp16 model)"}[key]
            if "error" in r:
                lines.append(f"| {label} | | failed: {r['error'][:200]} | |")
                continue
            ratio = r.get("network_ratio")
            lines.append(f"| {label} | {r['frames']} | {r['frames_per_s']} | "
                         f"{'' if ratio is None else f'{ratio:.1f}x'} |")
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="fp32 ONNX model (default: the shipped one)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="its training checkpoint")
    parser.add_argument("--fp16-model", type=Path, default=None,
                        help="fp16 export of the same network (default: exported into a temporary folder)")
    parser.add_argument("--frames", type=int, default=100, help="frames of the end-to-end time-lapse")
    parser.add_argument("--api-frames", type=int, default=20, help="frames timed through the Python API")
    parser.add_argument("--shape", default="10,512,512", help="Z,Y,X of one volume")
    parser.add_argument("--repeats", type=int, default=20, help="timed forwards per measurement (median)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole run")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 3:
        parser.error("--shape needs Z,Y,X")

    from dmdet_infer.cuda import preload
    from dmdet_infer.model import default_model_path

    notes = preload() if args.device != "cpu" else ["--device cpu: nothing preloaded"]
    run = Run(args.out, args.budget)
    res = run.result
    res.update(shape=list(shape), args={k: str(v) for k, v in vars(args).items()}, notes=[])
    model = args.model or default_model_path()
    run.part("environment", lambda: environment(args.device, notes))
    print(json.dumps(res["environment"], indent=1, default=str), flush=True)
    net = run.part("network", lambda: network_flops(args.checkpoint, shape))
    gflop = net.get("gflop") if isinstance(net, dict) else None
    on_gpu = args.device != "cpu"

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        fp16 = args.fp16_model
        if fp16 is not None:
            why = run.part("fp16_twin_check", lambda: {"mismatch": twin_mismatch(model, fp16)})
            if not isinstance(why, dict) or why.get("mismatch") or "error" in why:
                res["notes"].append(f"--fp16-model {fp16} not used ({why}); exported afresh")
                fp16 = None
        if fp16 is None:
            made = run.part("fp16_export", lambda: str(export_fp16(args.checkpoint, model, tmp)))
            fp16 = Path(made) if isinstance(made, str) else None
        res["models"] = {"fp32": str(model), "fp16": None if fp16 is None else str(fp16)}

        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        first = run.part("ort_fp32", lambda: bench_ort(model, args.device, True, x, args.repeats, gflop,
                                                       "tf32" if on_gpu else None), need=10)
        reference = first.pop("_out", None) if isinstance(first, dict) else None
        for key, path, tf32, peak in (("ort_fp32_no_tf32", model, False, "fp32"), ("ort_fp16", fp16, True, "fp16")):
            if path is None:
                res[key] = {"error": "no fp16 model"}
                continue
            r = run.part(key, lambda p=path, t=tf32, k=peak: bench_ort(p, args.device, t, x, args.repeats, gflop,
                                                                       k if on_gpu else None, reference), need=10)
            if isinstance(r, dict):
                r.pop("_out", None)
        run.save()
        run.part("torch", lambda: bench_torch(args.checkpoint, args.device, x, args.repeats, gflop), need=15)

        # end to end
        def network_rate() -> float | None:
            r = res.get("ort_fp32", {})
            rate = (r.get("device_resident") or r.get("host_io") or {}).get("volumes_per_s")
            return float(rate) if rate else None

        stack_path = tmp / "timelapse.tif"
        made = run.part("timelapse", lambda: simulate_timelapse(stack_path, args.frames, shape), need=20)
        if isinstance(made, dict) and "error" not in made:
            for key, path, overlap, frames in (("api", model, None, args.api_frames),
                                               ("api_no_overlap", model, False, max(1, args.api_frames // 2)),
                                               ("api_fp16", fp16, None, args.api_frames)):
                if path is None:
                    continue
                r = run.part(key, lambda p=path, o=overlap, f=frames: bench_api(p, args.device, stack_path,
                                                                                min(f, args.frames), o), need=20)
                if isinstance(r, dict) and "frames_per_s" in r and network_rate():
                    r["network_ratio"] = round(network_rate() / r["frames_per_s"], 2)
            api = res.get("api", {})
            frames = args.frames
            if api.get("frames_per_s"):  # will the CLI's frames fit in what is left (plus ~30 s of start-up)?
                fit = int((run.left() - 45) * api["frames_per_s"])
                if fit < frames:
                    frames = max(1, fit)
                    res["notes"].append(f"CLI time-lapse cut to {frames} of {args.frames} frames to fit the time "
                                        f"budget (API rate {api['frames_per_s']} frames/s)")
            cli_stack = stack_path
            if frames < args.frames:
                import tifffile

                cli_stack = tmp / "timelapse_cut.tif"
                tifffile.imwrite(cli_stack, tifffile.imread(stack_path)[:frames], imagej=True,
                                 metadata={"axes": "TZYX"})
            for key, path in (("cli", None if args.model is None else model), ("cli_fp16", fp16)):
                if key == "cli_fp16" and (path is None or run.left() < 60):
                    continue
                r = run.part(key, lambda p=path, k=key: bench_cli(p, args.device, cli_stack, frames, tmp,
                                                                  max(30.0, run.left() - 10)), need=30)
                if isinstance(r, dict) and "frames_per_s" in r and network_rate():
                    r["network_ratio"] = round(network_rate() / r["frames_per_s"], 2)
        if not args.no_compile:
            run.part("torch_compile", lambda: bench_torch(args.checkpoint, args.device, x, args.repeats, gflop,
                                                          compile_only=True), need=40)
    run.save()
    print(table(res), flush=True)
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    print(f"[gpu] wrote {args.out / 'gpu.md'} and gpu.json in {res['elapsed_s']} s; failed parts: {failed or 'none'}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
