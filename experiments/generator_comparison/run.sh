#!/usr/bin/env bash
# The committed generator configs side by side on the 10 % D1 protocol: every generator of
# experiments/generative/train_generators.sh (trained on the same stratified 10 % of D1's
# training split, split_seed 0) sampled at 200 flows per app, then one `tsda evaluate` over
# all of them: converged TSTR / TRTR / real + synthetic (3 seeds each, early stopping on the
# real validation split, patience 5), both discriminative scores, latent metrics in the
# guide's latent space.
# Usage (repository root): bash experiments/generator_comparison/run.sh [GEN=runs/gen] [OUT=runs/generator_comparison]
set -euo pipefail
GEN=${1:-runs/gen}
OUT=${2:-runs/generator_comparison}
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
SEEDS=${SEEDS:-3}
export WANDB_MODE=${WANDB_MODE:-offline}
mkdir -p "$OUT"
sample() {  # name, generator options...
  local name=$1; shift
  [ -f "$OUT/$name.parquet" ] || tsda sample --ckpt "$GEN/$name/checkpoints/last.ckpt" --per_class 200 --seed 0 \
    --no_progress --out "$OUT/$name.parquet" "$@"
}
sample cgan
sample cgan_latent
sample diffusion --sampler dpmpp --steps 10 --cfg_scale 2
sample diffusion_latent --sampler dpmpp --steps 10 --cfg_scale 1 --latent_guidance_scale 0.1
tsda evaluate --data.path "$DATA" --data.invalid_rows drop --data.train_fraction 0.1 \
  --classifier "$GEN/guide/checkpoints/best.ckpt" --accelerator "${ACCELERATOR:-auto}" \
  --tstr_seeds "$SEEDS" --tstr_patience 5 --tstr_max_epochs 200 ${EXTRA:-} \
  --synthetic "$OUT/cgan.parquet" "$OUT/cgan_latent.parquet" "$OUT/diffusion.parquet" "$OUT/diffusion_latent.parquet" \
  --names cgan cgan_latent diffusion diffusion_latent --wandb.group generator_comparison --out "$OUT"
