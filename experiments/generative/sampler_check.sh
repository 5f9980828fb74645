#!/usr/bin/env bash
# DPM-Solver++ 10 steps against DDIM 25 on the campaign's class-conditional diffusion
# checkpoint (classifier-free guidance 2), as TSTR trained to early stopping: the campaign's
# classifier (base.yaml) with the generator augmentation under policy `replace`,
# augment_p 1, so every training flow is replaced by a pool flow of its class (200 per
# class, sampled once): it learns from synthetic flows only, early-stops on the real
# validation split and is tested on the real test split. Its real-data reference is the
# campaign's `no_aug_batch_b` (same batch, sampler, protocol). Both settings run side by side.
# Usage (repository root): bash experiments/generative/sampler_check.sh [GEN=runs/gen] [SEEDS="0"]
set -euo pipefail
GEN=${1:-runs/gen}
SEEDS=${2:-0}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OUT=$GEN/sampler_check
A=--model.init_args.augmentation
mkdir -p "$OUT"
for seed in $SEEDS; do
  for setting in dpmpp:10 ddim:25; do
    sampler=${setting%%:*} steps=${setting##*:}
    run=$OUT/${sampler}${steps}_seed$seed
    [ -f "$run/metrics.json" ] && continue
    tsda fit -c experiments/generative/base.yaml $A configs/augment/generator.yaml \
      $A.init_args.ckpt "$GEN/diffusion/checkpoints/last.ckpt" $A.init_args.pool_per_class 200 \
      $A.init_args.options "{sampler: $sampler, steps: $steps, cfg_scale: 2.0}" $A.init_args.progress false \
      --model.init_args.policy replace --model.init_args.augment_p 1.0 --seed_everything "$seed" \
      --run_dir "$run" > "$run.log" 2>&1 &
  done
  wait
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
print(f"{'run':<18} {'pool s':>7} {'epochs':>6} {'test wF1':>9} {'test mF1':>9}")
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if (p / "metrics.json").is_file()):
    m = json.loads((run / "metrics.json").read_text())
    print(f"{run.name:<18} {m['augment_pool_seconds']:>7.1f} {m['epochs']:>6} {m['test_weighted_f1']:>9.4f} "
          f"{m['test_macro_f1']:>9.4f}")
PY
