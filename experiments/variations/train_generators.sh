#!/usr/bin/env bash
# The three generators the variations study varies flows with, all trained on the study's
# training flows (a stratified 10 % of FG-Net D1's training split, split seed 0: 10,607 flows),
# side by side with one torch thread each, for at most TRAIN_TIME (dd:hh:mm:ss) of wall time:
#   OUT/cgan         cVAE-GAN (configs/experiment/fgnet_cgan.yaml): its encoder makes it vary
#   OUT/diffusion    class-conditional DDPM with classifier-free guidance (fgnet_diffusion.yaml)
#   OUT/transformer  packet transformer (fgnet_transformer.yaml + fgnet_transformer_10pct.yaml)
# Usage (repository root): bash experiments/variations/train_generators.sh [TRAIN_TIME] [OUT]
set -uo pipefail
T=${1:-00:00:25:00}
OUT=${2:-runs/variations-gen}
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--data.path "$DATA" --data.train_fraction 0.1 --trainer.enable_progress_bar false --trainer.max_time "$T")
mkdir -p "$OUT"
train() {  # name, tsda fit arguments...
  local name=$1; shift
  [ -f "$OUT/$name.rc" ] && [ "$(cat "$OUT/$name.rc")" = 0 ] && return 0
  tsda fit "$@" "${COMMON[@]}" --run_dir "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo $? > "$OUT/$name.rc"
}
train cgan -c configs/experiment/fgnet_cgan.yaml --trainer.max_epochs 100000 --trainer.check_val_every_n_epoch 10 &
train diffusion -c configs/experiment/fgnet_diffusion.yaml --trainer.max_epochs 100000 \
  --trainer.check_val_every_n_epoch 10 &
train transformer -c configs/experiment/fgnet_transformer.yaml -c configs/experiment/fgnet_transformer_10pct.yaml &
wait
grep -H . "$OUT"/*.rc
