#!/usr/bin/env bash
# experiments/cpu_speed: accuracy parity of the CPU speed modes, from the repository root.
# fp32 and bf16-mixed seeds come from experiments/autoaugment (runs/autoaugment) and
# experiments/variations (runs/variations); step 1 checks that a recorded fp32 run reproduces
# (with today's code: the CNN's convolutions in their Conv2d form, runs in warm workers).
set -euo pipefail
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=(--executor local --workers 2 --data.train_fraction 0.1 --trainer.max_epochs 300 --latent_plot false)
# 1. fp32, seed 0: must equal runs/autoaugment's no_aug_batch_b and wrap seed 0 to the digit
tsda campaign run experiments/cpu_speed/campaign.yaml --out runs/cpu_speed-fp32-conv2d --seeds 0 "${RUN[@]}"
# 2. the fast mode (bf16-mixed, compiled, channels-last), 5 seeds; runs/cpu_speed-fast holds
#    the fast mode of the Conv1d form (the previous measurement)
tsda campaign run experiments/cpu_speed/campaign.yaml --out runs/cpu_speed-fast-conv2d --seeds 0-4 "${RUN[@]}" \
    --trainer.precision bf16-mixed --compile true
python experiments/cpu_speed/parity.py runs/autoaugment runs/variations runs/cpu_speed-fast-conv2d
