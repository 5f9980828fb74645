#!/usr/bin/env bash
# experiments/joint: every step of the study, from the repository root, in order.
# Each step resumes when run again (finished runs are kept). fp32, as experiments/autoaugment,
# whose control and Wrap runs these reproduce to the digit.
set -euo pipefail
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUN=(--executor local --workers 2 --data.train_fraction 0.1 --trainer.max_epochs 300 --latent_plot false)

# 1. screen every joint route with 2 seeds, against the same-steps control and Wrap
tsda campaign run experiments/joint/campaign.yaml --out runs/joint --seeds 0-1 "${RUN[@]}" \
    --conditions no_aug_batch_b,wrap,joint_cgan,joint_cgan_band,joint_cgan_vary,joint_diffusion_vary,joint_diffusion_pool
# 2. the cost lever (the generator on every 4th step), screened the same way
tsda campaign run experiments/joint/campaign.yaml --out runs/joint --seeds 0-1 "${RUN[@]}" \
    --conditions joint_diffusion_vary_g4,joint_cgan_vary_g4
# 3. the best new route, 5 seeds, with the control and Wrap
tsda campaign run experiments/joint/campaign.yaml --out runs/joint --seeds 2-4 "${RUN[@]}" \
    --conditions no_aug_batch_b,wrap,joint_diffusion_vary
tsda campaign report runs/joint --control no_aug_batch_b --conditions no_aug_batch_b,wrap,joint_diffusion_vary \
    --seeds 0-4 --complete --into confirm5
tsda campaign report runs/joint --control wrap --conditions no_aug_batch_b,wrap,joint_diffusion_vary \
    --seeds 0-4 --complete --into confirm5_vs_wrap
tsda campaign report runs/joint --control no_aug_batch_b --seeds 0-1 --complete --into screen
# 4. what the classifier saw in every joint run; what a joint epoch costs against Wrap's
python experiments/joint/summarize.py runs/joint --out experiments/joint/results/signals.md
python benchmarks/joint_epoch_cost.py --epochs 3 \
    --conditions wrap,joint_cgan,joint_cgan_vary,joint_cgan_vary_g4,joint_diffusion_vary,joint_diffusion_vary_g4,joint_diffusion_pool
