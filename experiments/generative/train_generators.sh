#!/usr/bin/env bash
# Trains what the generative campaign augments with, all on the same stratified 10 % of
# FG-Net D1's training split that the campaign's classifiers train on (split_seed 0):
#   OUT/guide             the guiding 1D-CNN (fgnet_baseline.yaml, to early stopping)
#   OUT/cgan              cVAE-GAN, no classifier          (fgnet_cgan.yaml)
#   OUT/cgan_latent       latent-guided cVAE-GAN            (fgnet_cgan_latent.yaml + guide)
#   OUT/diffusion         class-conditional DDPM, CFG       (fgnet_diffusion.yaml)
#   OUT/diffusion_latent  latent-conditioned DDPM + guide   (fgnet_diffusion_guided.yaml + guide)
#   OUT/transformer_10pct packet transformer, after the others (fgnet_transformer.yaml +
#                         fgnet_transformer_10pct.yaml: 40 epochs, not a wall time; ~24 min on one core)
# (OUT/transformer, the campaign's `transformer` condition, is experiments/generators/run.sh at e03cdd7.)
# Usage (repository root): bash experiments/generative/train_generators.sh [TRAIN_SECONDS=2100] [OUT=runs/gen]
# The four generators train side by side, one torch thread each, for TRAIN_SECONDS of wall time.
set -euo pipefail
T=${1:-2100}
OUT=${2:-runs/gen}
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HMS=$(printf '00:%02d:%02d:%02d' $((T / 3600)) $((T % 3600 / 60)) $((T % 60)))
COMMON="--data.path $DATA --data.train_fraction 0.1 --trainer.enable_progress_bar false"
GUIDE=$OUT/guide/checkpoints/best.ckpt
mkdir -p "$OUT"
train() {  # name, config, extra args...
  local name=$1 config=$2; shift 2
  [ -f "$OUT/$name/checkpoints/last.ckpt" ] && [ -f "$OUT/$name/.done" ] && return 0
  tsda fit -c "$config" $COMMON --trainer.max_epochs 100000 --trainer.max_time "$HMS" \
    --trainer.check_val_every_n_epoch 10 --run_dir "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  touch "$OUT/$name/.done"
}
train cgan configs/experiment/fgnet_cgan.yaml &
train diffusion configs/experiment/fgnet_diffusion.yaml &
if [ ! -f "$GUIDE" ]; then
  tsda fit -c configs/experiment/fgnet_baseline.yaml $COMMON --trainer.max_epochs 200 --latent_plot false \
    --run_dir "$OUT/guide" > "$OUT/guide.log" 2>&1
fi
train cgan_latent configs/experiment/fgnet_cgan_latent.yaml --model.init_args.classifier_ckpt "$GUIDE" &
train diffusion_latent configs/experiment/fgnet_diffusion_guided.yaml --model.init_args.classifier_ckpt "$GUIDE" &
wait
if [ ! -f "$OUT/transformer_10pct/.done" ]; then
  tsda fit -c configs/experiment/fgnet_transformer.yaml -c configs/experiment/fgnet_transformer_10pct.yaml \
    --data.path "$DATA" --trainer.enable_progress_bar false --run_dir "$OUT/transformer_10pct" \
    > "$OUT/transformer_10pct.log" 2>&1
  touch "$OUT/transformer_10pct/.done"
fi
