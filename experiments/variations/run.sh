#!/usr/bin/env bash
# experiments/variations: every step of the study, from the repository root, in order.
# Each step resumes when run again (finished runs are kept).
set -euo pipefail
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=(--executor local --workers 2 --data.train_fraction 0.1 --trainer.max_epochs 300 --latent_plot false
     --trainer.precision bf16-mixed)

# 1. the three generators on the study's training flows (25 min of wall time, side by side)
bash experiments/variations/train_generators.sh 00:00:25:00 runs/variations-gen

# 2. what a variation pool costs (K = 4 variations of every training flow) per family and strength
python benchmarks/variation_throughput.py --strengths 0.25 0.5 1.0 \
    --ckpt diffusion=runs/variations-gen/diffusion/checkpoints/last.ckpt \
    --ckpt transformer=runs/variations-gen/transformer/checkpoints/last.ckpt \
    --ckpt cgan=runs/variations-gen/cgan/checkpoints/last.ckpt

# 3. screen every single-family condition with 2 seeds, then 5 seeds for the conditions that decide the question
tsda campaign run experiments/variations/campaign.yaml --out runs/variations --seeds 0-1 "${RUN[@]}" \
    --conditions no_aug_batch_b,wrap,order_oneof,diffusion_s25,diffusion_s50,diffusion_rand,transformer_s25,transformer_s50,transformer_rand,cgan_s25,cgan_s50,cgan_rand
tsda campaign run experiments/variations/campaign.yaml --out runs/variations --seeds 0-4 "${RUN[@]}" \
    --conditions no_aug_batch_b,wrap,transformer_then_wrap,transformer_or_wrap,transformer_s50,order_oneof,transformer_rand
tsda campaign report runs/variations --control wrap --complete --into confirm5 \
    --conditions no_aug_batch_b,wrap,order_oneof,transformer_s50,transformer_rand,transformer_then_wrap,transformer_or_wrap
# 4. the one condition ahead of Wrap after 5 seeds, 5 seeds more
tsda campaign run experiments/variations/campaign.yaml --out runs/variations --seeds 5-9 "${RUN[@]}" \
    --conditions wrap,transformer_then_wrap
tsda campaign report runs/variations --control wrap --conditions wrap,transformer_then_wrap --seeds 0-9 \
    --complete --into ten
tsda campaign report runs/variations
python experiments/variations/summarize.py runs/variations --seeds 0-4
