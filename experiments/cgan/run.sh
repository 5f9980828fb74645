#!/usr/bin/env bash
# The cGAN study on FG-Net D1 (experiments/cgan/README.md): train the variants side by side,
# sample 200 flows per class from each (fitted and standard noise prior), evaluate them all
# against the same real splits. Run from the repository root:
#   bash experiments/cgan/run.sh [TRAIN_SECONDS=400] [OUT=runs/cgan_study]
# Environment: DATA (default ../shared/data/fgnet/d1.parquet), GUIDE (a ClassifierModule
# checkpoint; default: trained here on the same 10 % training split), VARIANTS (a subset).
set -euo pipefail
T=${1:-400}
OUT=${2:-runs/cgan_study}
DATA=${DATA:-../shared/data/fgnet/d1.parquet}
GUIDE=${GUIDE:-$OUT/guide/checkpoints/best.ckpt}
export WANDB_MODE=${WANDB_MODE:-offline}
HMS=$(printf '00:%02d:%02d:%02d' $((T / 3600)) $((T % 3600 / 60)) $((T % 60)))
FRACTION="--data.train_fraction 0.1"  # the TSTR protocol: generator and TRTR see the same 10 %
M=--model.init_args
declare -A ARGS=(
  [adversarial]="-c configs/experiment/fgnet_cgan.yaml $M.w_recon 0"
  [cvae]="-c configs/experiment/fgnet_cgan.yaml"
  [latent]="-c configs/experiment/fgnet_cgan_latent.yaml $M.classifier_ckpt $GUIDE"
  [latent_w0]="-c configs/experiment/fgnet_cgan_latent.yaml $M.classifier_ckpt $GUIDE $M.w_class 0 $M.w_latent 0"
)
VARIANTS=${VARIANTS:-${!ARGS[*]}}
mkdir -p "$OUT"
if [ ! -f "$GUIDE" ]; then
  tsda fit -c configs/experiment/fgnet_baseline.yaml --data.path "$DATA" $FRACTION --run_dir "$OUT/guide" \
    > "$OUT/guide.log" 2>&1
fi
for v in $VARIANTS; do
  tsda fit ${ARGS[$v]} --data.path "$DATA" $FRACTION --trainer.max_epochs 100000 --trainer.max_time "$HMS" \
    --trainer.check_val_every_n_epoch 5 --trainer.enable_progress_bar false --run_dir "$OUT/$v" \
    > "$OUT/$v.fit.log" 2>&1 &
done
wait
for v in $VARIANTS; do
  for prior in fitted standard; do
    tsda sample --ckpt "$OUT/$v/checkpoints/last.ckpt" --per_class 200 --seed 0 --option prior=$prior \
      --no_progress --out "$OUT/$v/synthetic_$prior.parquet" > "$OUT/$v/sample_$prior.log" 2>&1
    echo "== $v, $prior noise prior"
    tsda evaluate --data.path "$DATA" --data.invalid_rows drop --data.train_fraction 0.1 --classifier "$GUIDE" --plots false \
      --synthetic "$OUT/$v/synthetic_$prior.parquet" --out "$OUT/$v/fidelity_$prior" \
      2> "$OUT/$v/evaluate_$prior.log" | tail -n 2
  done
done
