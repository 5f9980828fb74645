#!/usr/bin/env bash
# Issue 17's generators on the 10 % D1 protocol (the generative campaign's slice: stratified
# 10 % of D1's training split, split_seed 0): the autoregressive packet transformer
# (configs/experiment/fgnet_transformer.yaml), trained for TRAIN_SECONDS of wall time, sampled
# at 200 flows per app, and measured as experiments/generator_comparison/ measures the cGAN and
# diffusion configs: converged TSTR / TRTR (3 seeds, early stopping on the real validation
# split, patience 5), the GB and GRU discriminative scores, latent precision/recall and
# memorisation in the guide's latent space (runs/gen/guide).
# Usage (repository root): bash experiments/generators/run.sh [TRAIN_SECONDS=2100] [GEN=runs/gen] [OUT=runs/generators]
set -euo pipefail
T=${1:-2100}
GEN=${2:-runs/gen}
OUT=${3:-runs/generators}
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HMS=$(printf '00:%02d:%02d:%02d' $((T / 3600)) $((T % 3600 / 60)) $((T % 60)))
mkdir -p "$OUT"
if [ ! -f "$GEN/transformer/.done" ]; then
  tsda fit -c configs/experiment/fgnet_transformer.yaml --data.train_fraction 0.1 --trainer.max_epochs 100000 \
    --trainer.max_time "$HMS" --trainer.enable_progress_bar false --run_dir "$GEN/transformer" > "$GEN/transformer.log" 2>&1
  touch "$GEN/transformer/.done"
fi
[ -f "$OUT/transformer.parquet" ] || tsda sample --ckpt "$GEN/transformer/checkpoints/last.ckpt" --per-class 200 \
  --seed 0 --no-progress --out "$OUT/transformer.parquet"
tsda evaluate --data.path "$DATA" --data.invalid_rows drop --data.train_fraction 0.1 \
  --classifier "$GEN/guide/checkpoints/best.ckpt" --accelerator "${ACCELERATOR:-auto}" \
  --tstr_seeds "${SEEDS:-3}" --tstr_patience 5 --tstr_max_epochs 200 --real_plus_synthetic false \
  --synthetic "$OUT/transformer.parquet" --names transformer --wandb.group generators --out "$OUT"
