#!/usr/bin/env bash
# A training run on a lent GPU, in the background so that the same lease can carry other files meanwhile.
#
#   CONFIG=training/configs/X.json bash training/gpu_train.sh start  # copies the repo to $WORK/repo, trains there
#   bash training/gpu_train.sh wait DEST  # waits for the end, then writes DEST/run.tar.gz (run dir + log)
#
# CONFIG defaults to stage 5 of the default model (issue 14, training/configs/general_w8_gpu.json, the shipped
# dmdet-w8-general2; this script was training/gpu_stage5.sh then). Stage 6 (issues 14 and 15): the half-resolution
# network, CONFIG=training/configs/stem_w8_gpu.json.
#
# Several configs, comma-separated, train side by side on the one GPU (small networks leave most of it idle): their
# data pool (the first config's, which the others must share) is simulated once with every core into
# $WORK/cache, then each run reads it with its own process, into $WORK/run1, $WORK/run2, ... For issue 15:
#   CONFIG=training/configs/stem_w8_gpu.json,training/configs/stem_w8_gt_gpu.json,training/configs/stem_w8_lr3_gpu.json \
#     bash training/gpu_train.sh start
# The distilled runs compute their teacher's maps once before the first step (teacher_precompute; stem_w8_gt_gpu
# trains on the truth alone), and each run trains for 5 minutes: about 10 minutes in all with the pool and the
# final threshold tuning, within a session's 15 minutes of device time.
#
# Stage 5: a pool of 8000 mixed stacks 16x128x128 (2/3 microscopy-like with 1 in 10 very bright, 1/3 challenge
# scenario) simulated with every core, then from dmdet-w8-general's weights, frozen norms, AMSGrad lr 5e-4, batch
# 32, validation every 1500 steps on 240 stacks, until 9000 steps or 5 minutes; the threshold is then tuned on the
# validation split. Extra `train` options may be given in $EXTRA (e.g. "--set data.n_stacks=64 --max-steps 20").
set -u
WORK=${WORK:-/tmp/gpu_train}
CONFIG=${CONFIG:-training/configs/general_w8_gpu.json}
case "${1:-}" in
  start)
    rm -rf "$WORK" && mkdir -p "$WORK"
    tar cf - --exclude=./.whl --exclude=./.venv --exclude=./runs . | (mkdir -p "$WORK/repo" && cd "$WORK/repo" && tar xf -)
    cd "$WORK/repo" || exit 1
    IFS=, read -r -a configs <<< "$CONFIG"
    if [ "${#configs[@]}" -eq 1 ]; then
      runs="python3 -m training train --config $CONFIG --out $WORK/run ${EXTRA:-} > $WORK/train.log 2>&1"
    else
      shared="--set data.cache_dir=$WORK/cache"
      pool_extra=""  # the pool takes only EXTRA's --set overrides
      read -r -a words <<< "${EXTRA:-}"
      for ((k = 0; k < ${#words[@]}; k++)); do
        [ "${words[$k]}" = --set ] && pool_extra+=" --set ${words[$((k + 1))]}"
      done
      runs="python3 -m training pool --config ${configs[0]} $shared $pool_extra > $WORK/pool.log 2>&1 && (pids=;"
      for i in "${!configs[@]}"; do
        runs+=" python3 -m training train --config ${configs[$i]} --out $WORK/run$((i + 1)) $shared \
          --set data_workers=$((16 / ${#configs[@]})) ${EXTRA:-} > $WORK/train$((i + 1)).log 2>&1 & pids+=\" \$!\";"
      done
      # non-zero when any run failed (a bare wait would report 0 whatever the runs did)
      runs+=" rc=0; for p in \$pids; do wait \$p || rc=\$?; done; cat $WORK/train*.log > $WORK/train.log; exit \$rc)"
    fi
    # shellcheck disable=SC2086
    setsid nohup bash -c "export PYTHONUNBUFFERED=1 NUMBA_NUM_THREADS=8; \
      (nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 15 > $WORK/gpu_use.csv 2>&1 &); \
      python3 -c 'from dmdet_infer.peaks import warmup; warmup()'; \
      $runs; echo \$? > $WORK/done" > "$WORK/nohup.log" 2>&1 < /dev/null &
    sleep 2
    echo "$CONFIG started in $WORK"
    ;;
  wait)
    dest=${2:?destination folder}
    for _ in $(seq 1 "${WAIT_S:-560}"); do
      [ -f "$WORK/done" ] && break
      sleep 1
    done
    mkdir -p "$dest"
    echo "exit status: $(cat "$WORK/done" 2>/dev/null || echo 'still running')"
    for log in "$WORK"/train*.log; do
      [ "$log" = "$WORK/train.log" ] && [ -f "$WORK/train1.log" ] && continue
      echo "== $log"
      tr '\r' '\n' < "$log" | grep -v '^\s*$' | tail -n 25
    done
    (cd "$WORK" && tar czf "$dest/run.tar.gz" --ignore-failed-read run run[0-9]* train*.log pool.log gpu_use.csv \
      2>/dev/null)
    ls -la "$dest"
    ;;
  *)
    echo "usage: $0 start | wait DEST" >&2
    exit 2
    ;;
esac
