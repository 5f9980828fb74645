#!/usr/bin/env bash
# The measurement of run.sh and run_epochs.sh: sample 200 flows per app from each checkpoint
# (seed 0) and measure all in one `tsda evaluate` on the 10 % D1 protocol: converged TSTR /
# TRTR (SEEDS=3 seeds, patience 5, at most 200 epochs; TRTR trained once for all), GB and GRU
# discriminative scores, latent metrics and memorisation in the guide's space (GEN/guide).
# Usage: bash experiments/generators/evaluate.sh GEN OUT NAME=CHECKPOINT[,OPTION...] [...]
# (OPTIONs go to the generator's sample: NAME=ckpt,temperature=0.9,top_k=50)
set -euo pipefail
GEN=$1 OUT=$2
shift 2
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
mkdir -p "$OUT"
files=() names=()
for pair in "$@"; do
  name=${pair%%=*}
  IFS=, read -ra parts <<< "${pair#*=}"
  options=()
  for option in "${parts[@]:1}"; do options+=(--option "$option"); done
  [ -f "$OUT/$name.parquet" ] || tsda sample --ckpt "${parts[0]}" --per_class 200 --seed 0 --no_progress \
    "${options[@]}" --out "$OUT/$name.parquet"
  files+=("$OUT/$name.parquet") names+=("$name")
done
tsda evaluate --data.path "$DATA" --data.invalid_rows drop --data.train_fraction 0.1 \
  --classifier "$GEN/guide/checkpoints/best.ckpt" --accelerator "${ACCELERATOR:-auto}" \
  --tstr_seeds "${SEEDS:-3}" --tstr_patience 5 --tstr_max_epochs 200 --real_plus_synthetic false \
  --synthetic "${files[@]}" --names "${names[@]}" --wandb.group generators --out "$OUT"
