"""CPU time of candidate network architectures, untrained, side by side (issue 15).

    python benchmarks/architectures.py [--repeats 3] [--threads 2] [--runtime onnxruntime|openvino]
                                       [--out benchmarks/results/architectures]

Each variant of ``training.network.DetNet3D`` is exported as the product exports it (norms folded, opset 17,
dynamic shapes) and run by ONNX Runtime's CPU provider (or, ``--runtime openvino``, by OpenVINO as
``dmdet_infer.model.OpenVINONetwork`` runs it) on one 1x1x10x512x512 input, in one process, rounds interleaved,
median of ``--repeats`` after a warm-up. The weights are random: this measures cost only, which does
not depend on them. Writes OUT.json and OUT.md atomically and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name -> DetNet3D keyword arguments
VARIANTS = {
    "w8 L3 (shipped)": {"width": 8, "levels": 3},
    "w6 L3": {"width": 6, "levels": 3},
    "w4 L3": {"width": 4, "levels": 3},
    "stem w8 L3": {"width": 8, "levels": 3, "stem": True},
    "stem w8 L2": {"width": 8, "levels": 2, "stem": True},
    "stem w6 L3": {"width": 6, "levels": 3, "stem": True},
    "stem w4 L3": {"width": 4, "levels": 3, "stem": True},
}
SHAPE = (10, 512, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/architectures (with openvino: "
                        "architectures_openvino)")
    args = parser.parse_args()
    if args.out is None:
        args.out = str(ROOT / "benchmarks/results" / ("architectures" + ("_openvino" if args.runtime == "openvino"
                                                                         else "")))
    import onnxruntime as ort
    import torch

    from training.network import DetNet3D, count_params, fold_norms, gflops

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    x = np.random.default_rng(0).standard_normal((1, 1, *SHAPE)).astype(np.float32)
    sessions, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in VARIANTS.items():
            torch.manual_seed(0)
            net = DetNet3D(**kwargs)
            path = os.path.join(tmp, f"{len(sessions)}.onnx")
            axes = {0: "b", 2: "z", 3: "y", 4: "x"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(fold_norms(net), (torch.zeros(1, 1, 8, 64, 64),), path, dynamo=False,
                                  opset_version=17, input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": axes, "y": axes})
            if args.runtime == "openvino":
                from dmdet_infer.model import OpenVINONetwork

                network = OpenVINONetwork(Path(path), args.threads)
                sessions[name] = lambda network=network: network.forward(x, None)
            else:
                session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                sessions[name] = lambda session=session: session.run(None, {"x": x})
            sessions[name]()  # warm-up
            rows[name] = {"config": kwargs, "params": count_params(net), "gmac": gflops(net, SHAPE), "seconds": []}
        for _ in range(args.repeats):
            for name, run in sessions.items():
                t0 = time.perf_counter()
                run()
                rows[name]["seconds"].append(time.perf_counter() - t0)
    base = float(np.median(rows["w8 L3 (shipped)"]["seconds"]))
    from dmdet_infer.model import openvino_version

    runtime = f"OpenVINO {openvino_version()}" if args.runtime == "openvino" else f"ONNX Runtime {ort.__version__}"
    lines = [f"{runtime}, CPU, {args.threads} threads, input 1x1x{'x'.join(map(str, SHAPE))}, "
             f"median of {args.repeats}; load average {os.getloadavg()[0]:.1f}", "",
             "| network | parameters | GMAC | seconds | / shipped | GFLOP/s |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        s = float(np.median(r["seconds"]))
        r["median_s"] = s
        lines.append(f"| {name} | {r['params']:,} | {r['gmac']:.1f} | {s:.3f} | {s / base:.2f} | "
                     f"{2 * r['gmac'] / s:.0f} |")
    table = "\n".join(lines)
    print(table)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(rows, indent=1)), (".md", table + "\n")):
        tmp_path = target.with_name(target.name + suffix + ".tmp")
        tmp_path.write_text(text)
        tmp_path.replace(target.with_name(target.name + suffix))


if __name__ == "__main__":
    main()
