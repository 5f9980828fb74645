#!/usr/bin/env bash
# Sampling temperature of the 10 % transformer (GEN/transformer_10pct, last.ckpt): 200 flows per
# app at temperature 0.9 and 0.8 (packet and gap tokens alike), then 0.95 and 0.9 with top-k 50,
# measured as run.sh measures.
# Usage (repository root): bash experiments/generators/run_temperature.sh [GEN=runs/gen] [OUT=runs/generators-temperature]
set -euo pipefail
GEN=${1:-runs/gen}
OUT=${2:-runs/generators-temperature}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
CKPT=$GEN/transformer_10pct/checkpoints/last.ckpt
bash experiments/generators/evaluate.sh "$GEN" "$OUT" "t09=$CKPT,temperature=0.9" "t08=$CKPT,temperature=0.8"
# then, around the best of those two:
bash experiments/generators/evaluate.sh "$GEN" "${OUT}2" "t095=$CKPT,temperature=0.95" "t09k50=$CKPT,temperature=0.9,top_k=50"
