#!/usr/bin/env bash
# Issue 17's generators on the 10 % D1 protocol (the generative campaign's slice: stratified
# 10 % of D1's training split, split_seed 0): the autoregressive packet transformer
# (configs/experiment/fgnet_transformer.yaml) in the variants below, each trained with its
# overrides (at most MAX_SECONDS of wall time), sampled from checkpoints/${CKPT:-last}.ckpt at
# 200 flows per app, and all measured in one
# `tsda evaluate` as experiments/generator_comparison/ measures the cGAN and diffusion configs:
# converged TSTR / TRTR (3 seeds, early stopping on the real validation split, patience 5; TRTR
# trained once for all), the GB and GRU discriminative scores, latent precision/recall and
# memorisation in the guide's latent space (runs/gen/guide).
# Usage (repository root): bash experiments/generators/run.sh [MAX_SECONDS=2400] [GEN=runs/gen] [OUT=runs/generators-es]
# Variants: VARIANTS="name:overrides,..." (overrides space-separated; default: the 10 % recipe,
# configs/experiment/fgnet_transformer_10pct.yaml).
# RESULTS.md's transformer_es / transformer_drop rows ran at commit 79d2c6b with
# VARIANTS="transformer_es:--model.init_args.dropout 0.0,transformer_drop:--model.init_args.dropout 0.1"
# CKPT=best, when val_loss was
# the module's monitor: `tsda fit` stopped 5 epochs after the lowest validation NLL and
# best.ckpt was sampled. The module has no monitor since (that measurement is
# why): at later commits the same variants train to --trainer.max_epochs and CKPT=last.
set -euo pipefail
T=${1:-2400}
GEN=${2:-runs/gen}
OUT=${3:-runs/generators-es}
VARIANTS=${VARIANTS:-"transformer_10pct:--model.init_args.dropout 0.1 --trainer.max_epochs 40"}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HMS=$(printf '00:%02d:%02d:%02d' $((T / 3600)) $((T % 3600 / 60)) $((T % 60)))
pairs=()
IFS=, read -ra specs <<< "$VARIANTS"
for spec in "${specs[@]}"; do
  name=${spec%%:*} overrides=${spec#*:}
  if [ ! -f "$GEN/$name/.done" ]; then
    # shellcheck disable=SC2086  # the overrides are words
    tsda fit -c configs/experiment/fgnet_transformer.yaml --data.train_fraction 0.1 --trainer.max_epochs 200 \
      --trainer.max_time "$HMS" --trainer.enable_progress_bar false $overrides --run_dir "$GEN/$name" \
      > "$GEN/$name.log" 2>&1
    touch "$GEN/$name/.done"
  fi
  pairs+=("$name=$GEN/$name/checkpoints/${CKPT:-last}.ckpt")
done
bash experiments/generators/evaluate.sh "$GEN" "$OUT" "${pairs[@]}"
