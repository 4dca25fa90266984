#!/usr/bin/env bash
# The one script for the lent GPU machine (issue 18), run from the repository root:
#
#     OUT=/some/folder bash benchmarks/gpu_device.sh [MODEL.onnx [CHECKPOINT.pt]]
#
# Needs: the onnxruntime-gpu wheel unpacked to /tmp/site (a folder holding the package onnxruntime/), and python3
# with torch (CUDA), numpy, scipy, numba, tifffile, click, onnx. Leaves under $OUT/gpu: gpu.md, gpu.json, and
# gpu_device.log (everything this script printed). Never stops at a failing step: each is reported and the next
# runs. MODEL/CHECKPOINT: benchmark another model than the shipped one (its fp16 twin is then exported there).
# STEPS (default "check,bench"): "check" = providers and the parity test, "bench" = benchmarks/gpu.py; separate
# them to run the checks while the GPU is busy with something else and the timings on a quiet GPU.
set -u
STEPS=${STEPS:-check,bench}
OUT=${OUT:?set OUT to the output folder}
DEST="$OUT/gpu"
mkdir -p "$DEST"
LOG="$DEST/gpu_device.log"
exec > >(tee -a "$LOG") 2>&1

MODEL=${1:-}
CHECKPOINT=${2:-training/checkpoints/dmdet-w8-general2.pt}
export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
step() { echo; echo "===== $(date -u +%H:%M:%S) $*"; }

step "machine"
nvidia-smi || echo "nvidia-smi failed"
python3 --version
ls /tmp/site | head -20

step "CUDA libraries of the nvidia-* pip packages -> LD_LIBRARY_PATH (for the CLI's child process too)"
# benchmarks.gpu.cuda_library_path: those folders and torch's, ahead of what was set
export LD_LIBRARY_PATH="$(python3 -c 'from benchmarks.gpu import cuda_library_path; print(cuda_library_path())')"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

if [[ $STEPS == *check* ]]; then
step "onnxruntime providers"
timeout 120 python3 - <<'EOF' || echo "provider check failed (rc $?)"
import numpy as np
import onnxruntime as ort
print("onnxruntime", ort.__version__, "from", ort.__file__)
print("available providers:", ort.get_available_providers())
from dmdet_infer.cuda import preload
print("preload:", preload())
from dmdet_infer.model import Model, working_providers
print("working providers:", working_providers())
m = Model(device="cuda")
print("session providers:", m.session.get_providers())
print("CUDA options:", m.session.get_provider_options().get("CUDAExecutionProvider"))
out = m.run(np.zeros((8, 64, 64), np.float32))
print("first run ok:", out.shape, out.dtype, "io_binding:", m.io_binding, m.io_binding_error or "")
EOF

step "CPU-against-CUDA parity test"
timeout 240 python3 -m pytest -q -rs -s tests/test_cuda_parity.py -p no:cacheprovider
echo "parity test rc $?"
fi

if [[ $STEPS == *bench* ]]; then
step "benchmark"
ARGS=(--out "$DEST" --checkpoint "$CHECKPOINT" --frames 100 --device cuda --budget 270)
if [ -n "$MODEL" ]; then
    ARGS+=(--model "$MODEL")  # its fp16 twin is exported by the benchmark
elif [ -f benchmarks/models/dmdet-w8-general2-fp16.onnx ]; then
    ARGS+=(--fp16-model benchmarks/models/dmdet-w8-general2-fp16.onnx)
fi
# GPU_BENCH_ARGS: extra arguments, last so that they win (a dry run elsewhere: "--device cpu --shape 10,64,64")
timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/gpu.py "${ARGS[@]}" ${GPU_BENCH_ARGS:-}
echo "benchmark rc $?"
fi

step "done"
ls -la "$DEST"
