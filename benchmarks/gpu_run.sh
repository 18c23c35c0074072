#!/usr/bin/env bash
# One GPU session's checks, in the order they matter, each under its own time limit, every result
# copied to $OUT as soon as it exists (a lent GPU may be taken back at any time):
#   1. the definitive learning curve (sweeps/learning_curve_gpu.yaml: N 12/20/30, 5 seeds, to the
#      plateau or max_time) on both built-in tasks at once, 30 trials each, $WORKERS worker
#      processes per task sharing the one GPU, then both studies' reports (CPU, seconds);
#   2. `make bench` on the idle GPU;
#   3. the speed switches of issue 7 (benchmarks/speedups.py).
# Usage (repo root, hydralab importable):  OUT=runs/gpu benchmarks/gpu_run.sh [sweep_seconds]
set -uo pipefail
OUT=${OUT:-runs/gpu}
SWEEP_S=${1:-540}
WORKERS=${WORKERS:-10}
SWEEP_SET=${SWEEP_SET:-}   # extra --set options, e.g. for a smoke run on a CPU
mkdir -p "$OUT"
BENCH_ARGS=${BENCH_ARGS:---repeats 5}
SPEEDUP_ARGS=${SPEEDUP_ARGS:-}
export PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c 'import torch, lightning; print("torch", torch.__version__, "lightning", lightning.__version__)'
  nproc; } 2>&1 | tee "$OUT/machine.txt"

for task in blobs lesions; do
  [ -f "data/$task/dataset.csv" ] || python3 -m hydralab.cli make-data "$task" "data/$task" >/dev/null
done

start=$(date +%s)
for task in blobs lesions; do
  study=learning-curve-gpu; [ "$task" = lesions ] && study=learning-curve-lesions-gpu
  # shellcheck disable=SC2086  # SWEEP_SET is a list of options
  OMP_NUM_THREADS=2 timeout "$SWEEP_S" python3 -m hydralab.cli sweep sweeps/learning_curve_gpu.yaml \
    --workers "$WORKERS" --study "$study" \
    --set "data.csv=$PWD/data/$task/dataset.csv" --set tracking.wandb_mode=disabled $SWEEP_SET \
    >"$OUT/sweep-$task.log" 2>&1 &
done
wait
pkill -f multiprocessing.spawn && sleep 3   # workers of a sweep stopped by its timeout
echo "sweeps: $(($(date +%s) - start)) s" | tee -a "$OUT/machine.txt"
for study in learning-curve-gpu learning-curve-lesions-gpu; do
  cp "runs/sweeps/$study/study.db" "$OUT/$study.db"
done
# per-trial predictions and metrics (no checkpoints), for the report's bootstrap and plots
tar czf "$OUT/trials.tar.gz" --exclude='*.ckpt' runs/sweeps 2>/dev/null
for study in learning-curve-gpu learning-curve-lesions-gpu; do
  timeout 120 python3 -m hydralab.cli report --storage "sqlite:///$PWD/runs/sweeps/$study/study.db" \
    --study "$study" --out "$OUT/report-$study" >"$OUT/report-$study.log" 2>&1
done
echo "repo root: $PWD" >>"$OUT/machine.txt"

# shellcheck disable=SC2086
timeout 90 python3 benchmarks/bench.py $BENCH_ARGS 2>&1 | tee "$OUT/bench.md"
# shellcheck disable=SC2086
timeout 110 python3 benchmarks/speedups.py $SPEEDUP_ARGS 2>&1 | tee "$OUT/speedups.md"
