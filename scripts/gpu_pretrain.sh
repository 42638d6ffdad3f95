#!/usr/bin/env bash
# Pre-train the bbmini candidates on one GPU, in parallel, and pack what comes back.
#
# Run from the repository root on a machine with the data folder already built on the CPU:
#   python -m bertbusters_nb.pretraining prepare --out .gpu/data
#   OUT=/tmp/gpu-out bash scripts/gpu_pretrain.sh
# Needs torch, transformers, tokenizers-free numpy/safetensors/pandas/tqdm; NOT datasets.
# Every knob is an environment variable, so the same script runs a seconds-long dry run on
# the CPU (DEVICE=cpu HIDDEN=32 ...) before it spends device time.
set -euo pipefail
PY=${PY:-python3}
OUT=${OUT:-runs/gpu-out}
RUNS=${RUNS:-runs/gpu}
DATA=${DATA:-.gpu/data}
DEVICE=${DEVICE:-auto}
TIME_LIMIT=${TIME_LIMIT:-270}
MAX_STEPS=${MAX_STEPS:-200000}
BATCH=${BATCH:-128}
HIDDEN=${HIDDEN:-256}
FFN=${FFN:-$((HIDDEN * 4))}
LOG_EVERY=${LOG_EVERY:-250}
SAVE_EVERY=${SAVE_EVERY:-2500}
BENCH_STEPS=${BENCH_STEPS:-300}
DRAWS=${DRAWS:-20}
ABL_SEQ=${ABL_SEQ:-512}
SNAPSHOTS=${SNAPSHOTS:-"0 250 500 750 1000 1500 2000 3000 4000 5000 6000 8000 10000 12000 16000 20000 24000 32000 40000 48000 64000"}
RUN_NAMES=${RUN_NAMES:-"h256l4s0 h256l6s0 h256l4s1"}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/main.log") 2>&1

# name -> extra flags (layers, seed)
flags() {
  case "$1" in
    h256l4s0) echo "--layers 4 --heads 4 --seed 0" ;;
    h256l6s0) echo "--layers 6 --heads 4 --seed 0" ;;
    h256l4s1) echo "--layers 4 --heads 4 --seed 1" ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

$PY - <<'EOF'
import torch, transformers, platform
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

echo "== solo throughput (h256l4, batch $BATCH)"
$PY -m bertbusters_nb.pretraining throughput --data-dir "$DATA" --device "$DEVICE" --hidden "$HIDDEN" \
  --intermediate "$FFN" --layers 4 --heads 4 --batch-size "$BATCH" --steps "$BENCH_STEPS" | tee "$OUT/throughput.txt"

train() {
  local name=$1
  # shellcheck disable=SC2046
  $PY -m bertbusters_nb.pretraining train --out "$RUNS/$name" --no-progress --data-dir "$DATA" --device "$DEVICE" \
    --hidden "$HIDDEN" --intermediate "$FFN" $(flags "$name") --batch-size "$BATCH" --max-steps "$MAX_STEPS" \
    --time-limit-s "$TIME_LIMIT" --log-every "$LOG_EVERY" --save-every "$SAVE_EVERY" --snapshot-steps $SNAPSHOTS \
    > "$RUNS/$name.log" 2>&1
  $PY -m bertbusters_nb.pretraining ablation --run "$RUNS/$name" --draws "$DRAWS" --max-sequences "$ABL_SEQ" \
    >> "$RUNS/$name.log" 2>&1
}

echo "== training $RUN_NAMES in parallel (time limit ${TIME_LIMIT}s each)"
pids=()
for name in $RUN_NAMES; do train "$name" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done

echo "== packing"
for name in $RUN_NAMES; do
  dir="$RUNS/$name"
  tail -n 3 "$dir.log" || true
  [ -f "$dir/final.safetensors" ] && cp "$dir/final.safetensors" "$OUT/$name.safetensors"
  cp "$dir.log" "$dir/run.log" 2>/dev/null || true
  tar czf "$OUT/$name.tgz" -C "$dir" $(cd "$dir" && ls config.json train_log.csv norm_trajectory.npz \
    ablation_trajectory.csv run.log 2>/dev/null) || status=1
  tail -n 2 "$dir/train_log.csv" || true
done
ls -la "$OUT"
exit $status
