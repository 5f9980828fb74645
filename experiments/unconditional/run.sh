#!/usr/bin/env bash
# Unconditional diffusion on the 10 % D1 protocol, trained on (a) the raw 10 % slice and (b) the
# same slice enlarged with Translation (K = 4 copies per flow, stored split: validation and
# test stay real originals), then labelled by the guide classifier (rejection sampling), and
# compared by converged TSTR with the class-conditional diffusion model of the generative
# campaign (runs/gen/diffusion: same slice, same config, same number of optimiser steps).
# Usage (repository root): bash experiments/unconditional/run.sh [STEPS=4711] [OUT=runs/unconditional]
# 4,711 steps = what runs/gen/diffusion trained (57 epochs of the raw slice at batch 128).
set -euo pipefail
STEPS=${1:-4711}
OUT=${2:-runs/unconditional}
GEN=${GEN:-runs/gen}
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
GUIDE=$GEN/guide/checkpoints/best.ckpt
mkdir -p "$OUT"
ENLARGED=$OUT/d1_10pct_translation_x4.parquet
[ -f "$ENLARGED" ] || tsda augment enlarge --data.path "$DATA" --data.invalid_rows drop --data.train_fraction 0.1 \
  --augment translation --copies 4 --seed 0 --out "$ENLARGED"
train() {  # name, data args...
  local name=$1; shift
  [ -f "$OUT/$name/.done" ] && return 0
  tsda fit -c configs/experiment/fgnet_diffusion.yaml "$@" --model.init_args.conditional false \
    --data.sampler none --trainer.max_epochs 100000 --trainer.max_steps "$STEPS" \
    --trainer.check_val_every_n_epoch 10 --trainer.enable_progress_bar false --run_dir "$OUT/$name" \
    > "$OUT/$name.log" 2>&1
  touch "$OUT/$name/.done"
}
train raw --data.path "$DATA" --data.invalid_rows drop --data.train_fraction 0.1 &
train enlarged --data.path "$ENLARGED" --data.split column &
wait
for name in raw enlarged; do
  [ -f "$OUT/$name.parquet" ] || tsda sample --ckpt "$OUT/$name/checkpoints/last.ckpt" --label_with "$GUIDE" \
    --per_class "${PER_CLASS:-100}" --min_confidence "${MIN_CONFIDENCE:-0.5}" --max_draws "${MAX_DRAWS:-60000}" \
    --sampler dpmpp --steps 10 --seed 0 --no_progress --out "$OUT/$name.parquet" > "$OUT/sample_$name.log" 2>&1
done
[ -f "$OUT/evaluate/comparison.md" ] || tsda evaluate --data.path "$DATA" --data.invalid_rows drop \
  --data.train_fraction 0.1 --classifier "$GUIDE" \
  --tstr_seeds "${SEEDS:-3}" --tstr_patience 5 --tstr_max_epochs 200 --real_plus_synthetic false \
  --synthetic "$OUT/raw.parquet" "$OUT/enlarged.parquet" --names unconditional_raw unconditional_enlarged \
  --wandb.group unconditional --out "$OUT/evaluate"
# the other way of getting labelled flows: latent guidance of the raw model toward the classes
# still short, by the labeller (the same quotas, confidence and draw budget)
[ -f "$OUT/raw_guided.parquet" ] || tsda sample --ckpt "$OUT/raw/checkpoints/last.ckpt" --label_with "$GUIDE" \
  --per_class "${PER_CLASS:-100}" --min_confidence "${MIN_CONFIDENCE:-0.5}" --max_draws "${MAX_DRAWS:-60000}" \
  --latent_guidance_scale "${GUIDANCE:-2.0}" --guide labeller \
  --sampler dpmpp --steps 10 --seed 0 --no_progress --out "$OUT/raw_guided.parquet" > "$OUT/sample_raw_guided.log" 2>&1
[ -f "$OUT/evaluate_guided/comparison.md" ] || tsda evaluate --data.path "$DATA" --data.invalid_rows drop \
  --data.train_fraction 0.1 --classifier "$GUIDE" \
  --tstr_seeds "${SEEDS:-3}" --tstr_patience 5 --tstr_max_epochs 200 --real_plus_synthetic false \
  --synthetic "$OUT/raw_guided.parquet" --names unconditional_raw_guided \
  --wandb.group unconditional --out "$OUT/evaluate_guided"
# as an augmentation of the classifier (the labelled files as pools; 5 seeds, to early stopping)
tsda campaign run experiments/generative/campaign.yaml --out runs/generative --seeds 0-4 \
  --conditions unconditional_raw,unconditional_enlarged --executor ensemble
