#!/usr/bin/env bash
# Does the transformer's validation NLL pick the checkpoint that samples best? Train the dropout
# 0.1 variant of run.sh for a fixed 40 epochs (at commit 4d5799d, where this ran, with
# --patience 1000 against the then monitor; the module has none since), keep the checkpoints of epochs
# 20, 30 and 40 (experiments/generators/epochs.yaml), sample 200 flows per app from each and
# measure them in one `tsda evaluate` (TSTR/TRTR 3 seeds, patience 5; GB and GRU scores; latent
# metrics in the guide's space), as run.sh does.
# Usage (repository root): bash experiments/generators/run_epochs.sh [GEN=runs/gen] [OUT=runs/generators-epochs]
set -euo pipefail
GEN=${1:-runs/gen}
OUT=${2:-runs/generators-epochs}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=$GEN/transformer_long  # the checkpoint folder of epochs.yaml
if [ ! -f "$RUN/.done" ]; then
  tsda fit -c configs/experiment/fgnet_transformer.yaml -c experiments/generators/epochs.yaml \
    --data.train_fraction 0.1 --trainer.max_epochs 40 --model.init_args.dropout 0.1 \
    --trainer.enable_progress_bar false --run_dir "$RUN" > "$RUN.log" 2>&1
  touch "$RUN/.done"
fi
pairs=()
for e in 019 029 039; do  # the checkpoints at the end of epochs 20, 30, 40
  pairs+=("transformer_drop_e$((10#$e + 1))=$RUN/checkpoints/epochs/e$e.ckpt")
done
bash experiments/generators/evaluate.sh "$GEN" "$OUT" "${pairs[@]}"
