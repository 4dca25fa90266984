#!/usr/bin/env bash
# Width comparison trained side by side on one GPU (issue 3): every config in VARIANTS trains in its own process.
#
#   bash training/gpu_widths.sh            # on a machine with a CUDA GPU and >= 16 cores
#   OUT=runs/gpu M1=4.5 M2=1.5 VARIANTS="gpu_w8 gpu_w16" bash training/gpu_widths.sh
#
# 1. `python -m training pool` simulates the shared pool (6400 stacks 10x128x128: 6000 train / 200 val / 200 test)
#    into data.cache_dir once, with every core.
# 2. Stage 1, per variant: instance norm, AMSGrad lr 1e-3, batch 16, M1 minutes, best validation F1 kept.
# 3. Stage 2, per variant: from stage 1's best, trained in the exported mode (frozen running statistics) at
#    lr 2e-4 for M2 minutes, then the threshold is tuned on the validation split (the shipped model's recipe).
# Each variant's two run directories (best.pt, log.json, loss_curve.png) and logs go to $OUT/<variant>.tar.
set -u
OUT=${OUT:-runs/gpu}
M1=${M1:-4.5}
M2=${M2:-1.5}
VARIANTS=${VARIANTS:-"gpu_w8 gpu_w16 gpu_w16_sharp"}
EXTRA=${EXTRA:-}  # e.g. "--set data.n_stacks=64" for a quick check
RUNS=${RUNS:-runs/gpu-runs}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$RUNS"
export NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-4} PYTHONUNBUFFERED=1
first=$(echo "$VARIANTS" | awk '{print $1}')
start=$(date +%s)
smi=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 20 >"$OUT/gpu_use.csv" 2>&1 &
  smi=$!
fi
pids=()
# shellcheck disable=SC2086
"$PY" -m training pool --config "training/configs/$first.json" $EXTRA 2>&1 | tail -1
"$PY" -c "from dmdet_infer.peaks import warmup; warmup()"  # compile the numba kernels once (cached)
echo "pool ready after $(( $(date +%s) - start )) s"
for v in $VARIANTS; do
  (
    # shellcheck disable=SC2086
    "$PY" -m training train --config "training/configs/$v.json" --out "$RUNS/$v" --max-minutes "$M1" \
      --no-final-tuning $EXTRA >"$RUNS/$v.stage1.log" 2>&1
    # shellcheck disable=SC2086
    "$PY" -m training train --config "training/configs/$v.json" --out "$RUNS/$v-ft" --max-minutes "$M2" \
      --init-from "$RUNS/$v/best.pt" --set norm=frozen --set lr=2e-4 $EXTRA >"$RUNS/$v.stage2.log" 2>&1
    rc=$?
    echo "$v done after $(( $(date +%s) - start )) s, stage 2 exit $rc"
    "$PY" - "$RUNS/$v/best.pt" "$RUNS/$v-ft/best.pt" <<'PY'  # keep the weights, drop the optimizer moments
import sys, torch
for path in sys.argv[1:]:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        continue
    ck.pop("optimizer", None)
    torch.save(ck, path)
PY
    tar -cf "$OUT/$v.tar" --exclude=last.pt -C "$RUNS" "$v" "$v-ft" "$v.stage1.log" "$v.stage2.log"
  ) &
  pids+=($!)
done
wait "${pids[@]}"
[ -n "$smi" ] && kill "$smi"
echo "all done after $(( $(date +%s) - start )) s"
